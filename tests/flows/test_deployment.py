"""The nightly deployment, checked without waiting for the clock or starting a server."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from flows.nightly import deployment_spec, local_timezone, to_deployment


def test_prefect_yaml_declares_nightly_publish_all():
    spec = deployment_spec()
    assert spec["entrypoint"] == "flows/publish_all.py:publish_all"
    assert spec["parameters"]["manifest"] == "manifests/default.yaml"
    assert spec["schedules"][0]["cron"] == "0 2 * * *"
    # The entrypoint resolves to the flow object.
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(spec["entrypoint"])
    assert flow.name == "publish-all"


def test_served_and_deployed_share_the_schedule_and_timezone_but_not_the_name(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")  # the machine's zone does not move an explicit one
    spec = deployment_spec()
    assert spec["schedules"][0]["timezone"] == "UTC"
    deployment = to_deployment()
    assert deployment.name == "nightly-served" != spec["name"]  # `make serve` never overwrites `make deploy`'s
    assert deployment.parameters == {"manifest": "manifests/default.yaml", "force": False}
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
    start = datetime(2026, 11, 24, 15, 30, tzinfo=ZoneInfo("UTC"))
    nxt = next(CronSim(schedule.schedule.cron, start))
    assert (nxt.year, nxt.month, nxt.day, nxt.hour, nxt.minute) == (2026, 11, 25, 2, 0)


def test_a_schedule_without_a_timezone_takes_the_machines(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    assert local_timezone() == "Europe/Paris"
    spec = {**deployment_spec(), "schedules": [{"cron": "0 2 * * *"}]}
    (schedule,) = to_deployment(spec).schedules
    assert schedule.schedule.timezone == "Europe/Paris"


def test_deploy_and_nightly_now_need_a_server_and_say_so(tmp_path, monkeypatch):
    import pytest

    from flows.nightly import ScheduleError, deploy

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ScheduleError, match="needs a Prefect server.*PREFECT_API_URL"):
        deploy()


@pytest.mark.slow
def test_deploy_then_a_process_worker_runs_it_and_nightly_now_waits_for_the_outcome(tmp_path, toy_model_session):
    """make deploy -> prefect worker -> make nightly-now, on a Prefect server of the test's own."""
    import os
    import signal
    import subprocess
    import sys

    from tests import subjects

    bases = subjects.two_toy_bases(tmp_path / "bases", toy_model_session)
    manifest = subjects.make_manifest(tmp_path, bases, subsets=[["en"]], multiples=[8])
    home = Path(os.environ.get("TRIMWORKS_TEST_PREFECT_HOME", tmp_path / "home"))
    api = subjects.CLI_SERVER.start(home)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api}
    bin_dir = Path(sys.executable).parent

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir / "trimworks"), *args], env=env, capture_output=True, text=True, timeout=600)

    deployed = cli("deploy", "--manifest", str(manifest))
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "deployed publish-all/nightly" in deployed.stdout
    worker = subprocess.Popen([str(bin_dir / "prefect"), "worker", "start", "--pool", "trimworks-process"], env=env,
                              stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        now = cli("nightly-now")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:  # Prefect's worker backs off on API errors instead of exiting:
            os.killpg(worker.pid, signal.SIGKILL)  # its stop is not what this test checks
            worker.wait(timeout=60)
    assert now.returncode == 0, (now.stdout, now.stderr[-3000:], (tmp_path / "worker.log").read_text()[-3000:])
    assert "ended Completed" in now.stdout and "published 2, up to date 0, failed 0" in now.stdout, now.stdout
    assert (tmp_path / "published" / "trimworks" / "toy-a-trimmed-en-v8" / "model-vocab.safetensors").exists()
