"""`trimworks deploy | serve | nightly-now`: the nightly deployment (flows/nightly.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, fail


@app.command()
def deploy(
    manifest: Annotated[Optional[Path], typer.Option(help="manifest the nightly run builds (default: prefect.yaml's)")] = None,
) -> None:
    """Register the nightly deployment on the Prefect server (PREFECT_API_URL), creating its
    work pool if missing; a process worker of that pool then runs it (cron and timezone from prefect.yaml)."""
    from flows.nightly import ScheduleError, deploy as deploy_nightly, deployment_spec

    try:
        name = deploy_nightly({"manifest": str(manifest.resolve())} if manifest else None)
    except ScheduleError as exc:
        fail(exc)
    spec = deployment_spec()
    typer.echo(f"deployed {name} (cron {spec['schedules'][0]['cron']} {spec['schedules'][0].get('timezone', 'local time')}); "
               f"start a worker: .venv/bin/prefect worker start --pool {spec['work_pool']['name']}")


@app.command()
def serve() -> None:
    """Serve the nightly deployment from this process as publish-all/nightly-served (cron and timezone from prefect.yaml)."""
    from flows.nightly import serve as serve_nightly

    serve_nightly()


@app.command("nightly-now")
def nightly_now() -> None:
    """Run the nightly job now and wait for it: the registered deployment when PREFECT_API_URL
    is set (exits 1 if the run or any variant failed), else the same flow here."""
    from flows.nightly import ScheduleError, nightly_now as trigger

    try:
        summary = trigger()
    except ScheduleError as exc:
        fail(exc)
    if "state" in summary:
        typer.echo(f"flow run {summary['flow_run_id']} ended {summary['state']}")
    typer.echo(f"published {len(summary['published'])}, up to date {len(summary['skipped'])}, failed {len(summary['failed'])}")
    for vid, err in summary["failed"].items():
        typer.secho(f"FAILED {vid}: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1 if summary["failed"] else 0)
