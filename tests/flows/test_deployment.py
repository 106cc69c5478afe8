"""The nightly deployment, checked without waiting for the clock or starting a server."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

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


def test_deployment_schedule_fires_at_two_local(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    assert local_timezone() == "Europe/Paris"
    deployment = to_deployment()
    assert deployment.name == "nightly"
    assert deployment.parameters == {"manifest": "manifests/default.yaml", "force": False}
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "Europe/Paris"
    start = datetime(2026, 11, 24, 15, 30, tzinfo=ZoneInfo("Europe/Paris"))
    nxt = next(CronSim(schedule.schedule.cron, start))
    assert (nxt.year, nxt.month, nxt.day, nxt.hour, nxt.minute) == (2026, 11, 25, 2, 0)
