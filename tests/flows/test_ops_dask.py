"""Dask as it runs for real: `dask scheduler` and `dask worker` processes started as a user
starts them (no PREFECT_API_URL), a worker killed mid-run, a wrong address refused at once."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.child import descendant_peaks
from flows.dask_cluster import remote_workers
from tests import subjects

BIN = Path(sys.executable).parent


def test_a_wrong_dask_address_is_one_line_before_prefect_starts(tmp_path, toy_model_session):
    bases = subjects.two_toy_bases(tmp_path / "bases", toy_model_session)
    manifest = subjects.make_manifest(tmp_path, bases)
    start = time.monotonic()
    rc, out, err = subjects.run_cli(["publish-all", str(manifest), "--dask-address", "tcp://127.0.0.1:9"], tmp_path)
    assert rc == 2, err
    assert err.startswith("error: --dask-address tcp://127.0.0.1:9: no Dask scheduler answered within 5 s"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "Flow run" not in err
    assert time.monotonic() - start < 60  # a few seconds of connecting, not a minute of Prefect


def test_workers_on_other_machines_are_told_apart():
    assert remote_workers(["tcp://127.0.0.1:40000", "tcp://[::1]:40001"]) == []
    assert remote_workers(["tcp://127.0.0.1:40000", "tcp://203.0.113.77:40001"]) == ["tcp://203.0.113.77:40001"]


def _weights(registry: Path) -> dict[str, str]:
    return {str(p.relative_to(registry)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(registry.rglob("*")) if p.suffix == ".safetensors" or p.name == "tokenizer.json"}


@pytest.mark.slow
def test_a_real_dask_cluster_survives_a_killed_worker_and_matches_a_local_run(tmp_path, toy_model_session, prefect_harness):
    from flows.publish_all import run_publish_all

    bases = subjects.two_toy_bases(tmp_path / "bases", toy_model_session)
    manifest = subjects.make_manifest(tmp_path, bases)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # as a user starts them
    env["PREFECT_HOME"] = str(tmp_path / "worker-prefect-home")
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--port", "0", "--no-dashboard", "--scheduler-file",
                               str(sched_file)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        for _ in range(600):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                           "--no-dashboard", "--name", f"w{i}"], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)

        # The CLI on its own temporary Prefect server (no PREFECT_API_URL anywhere).
        home = tmp_path / "cli-prefect-home"
        full_env = {**env, "PREFECT_HOME": str(home)}
        cli = subprocess.Popen([str(BIN / "trimworks"), "publish-all", str(manifest), "--dask-address", address],
                               env=full_env, stdout=open(tmp_path / "cli.out", "w"), stderr=open(tmp_path / "cli.err", "w"),
                               start_new_session=True)
        builds = tmp_path / "work" / "builds"
        killed = None
        for _ in range(3000):  # a worker dies as soon as the builds are under way
            if cli.poll() is not None:
                break
            if builds.exists() and any(builds.iterdir()):
                killed = procs[1]
                os.killpg(killed.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        rc = cli.wait(timeout=600)
        err = (tmp_path / "cli.err").read_text()
        assert rc == 0, err[-4000:]
        assert killed is not None, "the builds were never seen under way"
        assert "published 8, up to date 0, failed 0" in (tmp_path / "cli.out").read_text()
        # The surviving worker reported to the flow's server: it never started a server of its own.
        servers = [h["cmd"] for h in descendant_peaks(procs[2].pid) if "prefect.server" in h["cmd"] or "uvicorn" in h["cmd"]]
        assert not servers, servers
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # The same manifest built locally (threads) gives the same bytes.
    local = yaml.safe_load(manifest.read_text())
    local.update(work_dir=str(tmp_path / "local-work"), output_dir=str(tmp_path / "local-published"))
    local_manifest = tmp_path / "local.yaml"
    local_manifest.write_text(yaml.safe_dump(local))
    summary = run_publish_all(str(local_manifest), executor="threads")
    assert len(summary["published"]) == 8
    assert _weights(tmp_path / "published" / "trimworks") == _weights(tmp_path / "local-published" / "trimworks")
