"""The nightly deployment: served from prefect.yaml's definition, or triggered once now."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from flows import runtime  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"
DEPLOYMENT = "nightly"


def deployment_spec(path: Path = PREFECT_YAML, name: str = DEPLOYMENT) -> dict[str, Any]:
    spec = yaml.safe_load(path.read_text())
    for d in spec.get("deployments", []):
        if d.get("name") == name:
            return d
    raise KeyError(f"{path}: no deployment named {name!r}")


def local_timezone() -> str:
    """IANA name of this machine's timezone (TZ, /etc/timezone, /etc/localtime), else UTC."""
    if os.environ.get("TZ", "").strip(":"):
        return os.environ["TZ"].strip(":")
    etc = Path("/etc/timezone")
    if etc.exists() and etc.read_text().strip():
        return etc.read_text().strip()
    localtime = Path("/etc/localtime")
    if localtime.is_symlink() and "zoneinfo/" in str(localtime.resolve()):
        return str(localtime.resolve()).split("zoneinfo/", 1)[1]
    return "UTC"


def schedules(spec: dict[str, Any]):
    from prefect.schedules import Cron

    return [Cron(s["cron"], timezone=s.get("timezone") or local_timezone()) for s in spec.get("schedules", [])]


def to_deployment(spec: dict[str, Any] | None = None):
    """The RunnerDeployment `make serve` serves (built without touching the clock or a server)."""
    from flows.publish_all import publish_all

    spec = spec or deployment_spec()
    return publish_all.to_deployment(
        name=spec["name"], schedules=schedules(spec), parameters=spec.get("parameters", {}),
        description=spec.get("description"), tags=spec.get("tags"), concurrency_limit=spec.get("concurrency_limit"),
    )


def serve() -> None:
    from prefect import serve as prefect_serve

    prefect_serve(to_deployment())


def nightly_now() -> dict | None:
    """With a Prefect server (PREFECT_API_URL) the served deployment is triggered; without
    one, the same flow runs here with the deployment's parameters."""
    spec = deployment_spec()
    if os.environ.get("PREFECT_API_URL"):
        from prefect.deployments import run_deployment

        run = run_deployment(f"publish-all/{spec['name']}", timeout=0)
        print(f"triggered flow run {run.id} of publish-all/{spec['name']}")
        return None
    from flows.publish_all import run_publish_all

    return run_publish_all(**spec.get("parameters", {}))
