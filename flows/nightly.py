"""The nightly deployment, one definition (prefect.yaml) run two ways.

* `deploy` (`make deploy`): registered on a Prefect server as `publish-all/nightly`, run by a
  process worker of the work pool prefect.yaml names (created if missing); its code is this
  checkout (a local source: the worker runs in this directory).
* `serve` (`make serve`): served from this process as `publish-all/nightly-served` (another
  name, so the two never overwrite each other).

Both take the cron and its timezone from prefect.yaml. `nightly_now` triggers one run of
whichever is registered (the deployed one first), waits for it and reports how it ended.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from flows import runtime  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"
DEPLOYMENT = "nightly"
SERVED_SUFFIX = "-served"
FLOW_NAME = "publish-all"


class ScheduleError(RuntimeError):
    """Deploying or triggering cannot go on; the message says what to do."""


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


def _common(spec: dict[str, Any], parameters: dict[str, Any] | None) -> dict[str, Any]:
    return {"schedules": schedules(spec), "parameters": {**spec.get("parameters", {}), **(parameters or {})},
            "description": spec.get("description"), "tags": spec.get("tags"),
            "concurrency_limit": spec.get("concurrency_limit")}


def to_deployment(spec: dict[str, Any] | None = None, parameters: dict[str, Any] | None = None):
    """The RunnerDeployment `make serve` serves (built without touching the clock or a server)."""
    from flows.publish_all import publish_all

    spec = spec or deployment_spec()
    return publish_all.to_deployment(name=spec["name"] + SERVED_SUFFIX, **_common(spec, parameters))


def serve() -> None:
    from prefect import serve as prefect_serve

    prefect_serve(to_deployment())


def _require_server(what: str) -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise ScheduleError(
            f"{what} needs a Prefect server: start one (`.venv/bin/prefect server start`) and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`; a deployment on the temporary "
            "server a run starts would vanish with it (or use `make serve`, which needs none)")
    return url


def deploy(parameters: dict[str, Any] | None = None) -> str:
    """Register the nightly deployment on the server, creating its work pool if missing.
    Returns the deployment's name; a worker (`prefect worker start --pool POOL`) runs it."""
    _require_server("make deploy")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from flows.publish_all import publish_all

    spec = deployment_spec()
    pool = spec["work_pool"]["name"]
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    flow = publish_all.from_source(source=str(REPO), entrypoint=spec["entrypoint"])
    flow.deploy(name=spec["name"], work_pool_name=pool, print_next_steps=False, **_common(spec, parameters))
    return f"{FLOW_NAME}/{spec['name']}"


def registered_deployment() -> str:
    """The nightly deployment on the server: the deployed one, else the served one."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    name = deployment_spec()["name"]
    with get_client(sync_client=True) as client:
        for candidate in (name, name + SERVED_SUFFIX):
            try:
                client.read_deployment_by_name(f"{FLOW_NAME}/{candidate}")
                return f"{FLOW_NAME}/{candidate}"
            except ObjectNotFound:
                continue
    raise ScheduleError(f"no nightly deployment on {os.environ.get('PREFECT_API_URL')}: run `make deploy` "
                        "(and a worker) or `make serve` first")


def nightly_now() -> dict | None:
    """With a Prefect server (PREFECT_API_URL): trigger the registered deployment, wait for the
    run and return its outcome; without one, run the same flow here with its parameters."""
    spec = deployment_spec()
    if not os.environ.get("PREFECT_API_URL"):
        from flows.publish_all import run_publish_all

        return run_publish_all(**spec.get("parameters", {}))
    from prefect.deployments import run_deployment

    name = registered_deployment()
    print(f"triggered {name}; waiting for the run to end (a worker or `make serve` must be running)", flush=True)
    run = run_deployment(name, timeout=None)
    return run_outcome(run, spec)


def run_outcome(run, spec: dict[str, Any]) -> dict:
    """The triggered run's state and, when it completed, its variants from the registry's
    last-run.json (the flow's return value is not persisted on the server)."""
    import json

    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.report.registry import LAST_RUN_JSON

    outcome: dict[str, Any] = {"flow_run_id": str(run.id), "state": run.state.name if run.state else "unknown",
                               "published": [], "skipped": [], "failed": {}}
    if run.state is None or not run.state.is_completed():
        outcome["failed"]["(the run)"] = f"ended {outcome['state']}: {run.state.message if run.state else ''}"
        return outcome
    manifest = run.parameters.get("manifest") or spec.get("parameters", {}).get("manifest")
    last = load_manifest(REPO / manifest if not Path(manifest).is_absolute() else Path(manifest)).output_dir / LAST_RUN_JSON
    try:
        variants = json.loads(last.read_text())["variants"]
    except (OSError, ValueError, KeyError):
        return outcome
    for v in variants:
        if v.get("status") == "failed":
            outcome["failed"][v["variant_id"]] = v.get("error")
        elif v.get("status") in ("published", "skipped"):
            outcome[v["status"]].append(v["variant_id"])
    return outcome
