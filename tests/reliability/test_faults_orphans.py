"""No orphans (issue 12). Before: after the CLI was SIGKILLed, its temporary Prefect server
lived on (~227 MB, still listening 100 s later) and its flow runs stayed RUNNING forever.
Now the server dies with its parent (PR_SET_PDEATHSIG), and the next start marks the killed
run's flow runs crashed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.engine.runtime.failpoints import ENV
from tests import subjects

pytestmark = pytest.mark.slow


def servers_of(home: Path) -> list[int]:
    """Temporary Prefect servers started with this PREFECT_HOME (read from /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in cmd and f"PREFECT_HOME={home}".encode() in env.split(b"\0"):
            pids.append(int(proc.name))
    shared = subjects.CLI_SERVER.proc  # the session's server for other CLI tests runs on the same home
    if shared is not None and shared.pid in pids:
        pids.remove(shared.pid)
    return pids


def flow_run_state(home: Path, run_id: str) -> str:
    with sqlite3.connect(home / "prefect.db") as db:
        row = db.execute("select state_type from flow_run where id = ?", (run_id,)).fetchone()
    return row[0] if row else "missing"


def test_killed_cli_leaves_no_server_and_its_runs_are_marked_crashed(tmp_path, bases):
    # Its own temporary servers, on the session's Prefect home when there is one (a fresh
    # database costs ~25 s of migrations); the database is read directly.
    home = Path(os.environ.get("TRIMWORKS_TEST_PREFECT_HOME", tmp_path / "prefect-home"))
    a, _ = bases
    manifest = subjects.make_manifest(tmp_path, bases, subsets=[["en"]], multiples=[8],
                                      base_models=[{"id": "toy-a", "source": {"local": str(a)}, "license": "mit"}])
    env = {**os.environ, "PREFECT_HOME": str(home), ENV: "counting"}
    env.pop("PREFECT_API_URL", None)
    exe = Path(sys.executable).parent / "trimworks"
    with (tmp_path / "killed.err").open("w") as err:
        proc = subprocess.Popen([str(exe), "publish-all", str(manifest)], env=env, stdout=err, stderr=err,
                                start_new_session=True)
        try:
            assert proc.wait(timeout=600) == -signal.SIGKILL  # the fail point killed it mid-count
            deadline = time.monotonic() + 30
            while servers_of(home) and time.monotonic() < deadline:
                time.sleep(0.5)
            left = servers_of(home)
            assert not left, f"the temporary server outlived its killed parent: {left}"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    leases = list((tmp_path / "work" / "runs").glob("*.json"))
    assert len(leases) == 1
    run_id = json.loads(leases[0].read_text())["flow_run_id"]
    assert flow_run_state(home, run_id) == "RUNNING"  # what a killed run leaves in the database

    rc, out, err = subjects.run_cli(["publish-all", str(manifest)], tmp_path, env={"PREFECT_HOME": str(home)})
    assert rc == 0, err[-3000:]
    assert "Starting temporary server" in err and "how-to-guides" not in err  # the fact, not Prefect's advice
    assert flow_run_state(home, run_id) == "CRASHED"
    assert not list((tmp_path / "work" / "runs").glob("*.json"))  # the rerun's own lease is released too


@pytest.mark.parametrize("api_url", ["", "http://127.0.0.1:9/api"], ids=["temporary-server", "own-server"])
def test_the_guard_loads_the_server_modules_only_for_a_temporary_server(api_url, tmp_path):
    """With PREFECT_API_URL set there is no temporary server to guard: the guard does not
    import Prefect's server (~4 s a run on 2 cores)."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    code = ("import sys; from flows.orphans import guard_temporary_server; "
            "print(guard_temporary_server(), 'prefect.server.api.server' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=subjects.REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == (["False", "False"] if api_url else ["True", "True"])
