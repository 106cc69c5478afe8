"""`trimworks list | plan | publish-all | build`: a manifest's variants, planned and produced."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, fail as _fail
from tasks.engine.errors import TrimworksError


class Executor(str, enum.Enum):
    """Where a run's tasks run locally (flows/workers.py)."""

    processes = "processes"
    threads = "threads"


ExecutorOption = Annotated[Executor, typer.Option(
    envvar="TRIMWORKS_EXECUTOR", case_sensitive=False,
    help="run the builds in worker processes (variants per hour grow with cores) or threads (no start-up cost)")]
WorkersOption = Annotated[int, typer.Option(min=1, help="local worker processes (or threads)")]


@app.command("list")
def list_cmd(
    manifest: Annotated[Path, typer.Argument(help="manifest YAML")] = Path("manifests/default.yaml"),
) -> None:
    """Validate a manifest and list its variant ids and repo names."""
    from tasks.pipeline.manifest import expand, load_manifest

    try:
        variants = expand(load_manifest(manifest))
    except TrimworksError as exc:
        _fail(exc)
    for v in variants:
        typer.echo(f"{v.id}\t{v.repo_id}")


@app.command("plan")
def plan_cmd(
    manifest: Annotated[Path, typer.Argument(help="manifest YAML")] = Path("manifests/default.yaml"),
    show_all: Annotated[bool, typer.Option("--all", help="list up-to-date variants too")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
) -> None:
    """What a run would do: each variant up to date / stale (which fingerprint fields changed) /
    missing / failed last time, and what it would count and build. Starts no Prefect, builds nothing."""
    import os

    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.report.plan_report import plan_report
    from tasks.pipeline.publish.targets import publisher_for

    try:
        m = load_manifest(manifest)
        report = plan_report(m, str(manifest), publisher_for(m.spec.publish, m.output_dir, os.environ.get("HF_TOKEN")))
    except TrimworksError as exc:
        _fail(exc)
    typer.echo(json.dumps(report.as_json(), indent=2) if as_json else report.render(show_all))


@app.command("publish-all")
def publish_all_cmd(
    manifest: Annotated[Path, typer.Argument(help="manifest YAML")] = Path("manifests/default.yaml"),
    force: Annotated[bool, typer.Option(help="rebuild variants even if already published")] = False,
    only: Annotated[Optional[list[str]], typer.Option(help="build only these variant ids")] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="run builds on a Dask cluster, e.g. tcp://host:8786")] = None,
    workers: WorkersOption = 2,
    executor: ExecutorOption = Executor.processes,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what the run would do (`trimworks plan`) and exit")] = False,
) -> None:
    """Build, verify and publish every variant of a manifest; exits 1 if any failed."""
    if dry_run:
        plan_cmd(manifest, show_all=False, as_json=False)
        return
    _run_flow(manifest, force, only, dask_address, workers, executor.value)


@app.command()
def build(
    variant_id: Annotated[str, typer.Argument(help="variant id (see `trimworks list`)")],
    manifest: Annotated[Path, typer.Option(help="manifest YAML")] = Path("manifests/default.yaml"),
    dask_address: Annotated[Optional[str], typer.Option(help="Dask scheduler address")] = None,
    executor: ExecutorOption = Executor.processes,
) -> None:
    """Regenerate exactly one model from its manifest entry (ignores what is published)."""
    _run_flow(manifest, True, [variant_id], dask_address, 2, executor.value)


def _all_up_to_date(m, manifest: Path, only: list[str] | None) -> str | None:
    """The line to print when every (selected) variant is published and up to date and the
    catalog is there, from the plan alone (tasks/pipeline/report/plan_report.py); else None."""
    import os

    from tasks.pipeline.publish.targets import publisher_for
    from tasks.pipeline.report.plan_report import UP_TO_DATE, plan_report
    from tasks.pipeline.report.catalog import CATALOG_MARKDOWN

    catalog = m.output_dir / CATALOG_MARKDOWN
    if not catalog.exists():
        return None
    try:
        report = plan_report(m, str(manifest), publisher_for(m.spec.publish, m.output_dir, os.environ.get("HF_TOKEN")))
    except TrimworksError:
        return None  # the run reports it, located
    statuses = [s for s in report.statuses if not only or s.variant.id in only]
    if report.bases_to_materialize or not statuses or any(s.status != UP_TO_DATE for s in statuses):
        return None
    return (f"nothing to do: {len(statuses)} variant(s) published and up to date ({manifest}); "
            f"catalog: {catalog}. --force rebuilds them.")


def _prefect_home_problem() -> str | None:
    """One line when Prefect could not keep its database (a read-only HOME or PREFECT_HOME);
    Prefect itself would retry for minutes and print thousands of lines."""
    import os
    import tempfile

    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".trimworks-probe-"):
            pass
    except OSError as exc:
        return (f"Prefect's home {home} is not writable ({exc.strerror or exc}); Prefect keeps its database there. "
                "Set PREFECT_HOME to a writable folder (e.g. export PREFECT_HOME=/tmp/prefect) and rerun")
    return None


def _run_flow(manifest: Path, force: bool, only: list[str] | None, dask_address: str | None, workers: int,
              executor: str) -> None:
    from tasks.engine.runtime.redact import redact
    from tasks.pipeline.manifest import expand, load_manifest
    from tasks.pipeline.production.variant_ids import check_variant_ids

    try:
        m = load_manifest(manifest)  # fail fast, before Prefect starts, with a located message
        if only:  # typos too: before Prefect starts and before any base is materialised
            check_variant_ids(only, [v.id for v in expand(m)], str(manifest))
    except TrimworksError as exc:
        _fail(exc)
    if dask_address:  # a wrong address or an unreachable API: one line, before Prefect starts
        from flows.dask_cluster import DaskClusterError, check_cluster

        try:
            check_cluster(dask_address)
        except DaskClusterError as exc:
            _fail(exc)
    if (problem := _prefect_home_problem()) is not None:
        _fail(TrimworksError(problem))
    if not force and (done := _all_up_to_date(m, manifest, only)):
        typer.echo(done)  # no Prefect server to start for a run that would build nothing
        raise typer.Exit(code=0)
    from flows.console import use_prefect_console

    use_prefect_console()
    from flows.publish_all import run_publish_all
    from flows.stopping import RunStopped, run_stoppable

    try:
        summary = run_stoppable(lambda: run_publish_all(str(manifest), force=force, only=only, dask_address=dask_address,
                                                        workers=workers, executor=executor))
    except RunStopped as stop:
        again = " ".join(["trimworks", *sys.argv[1:]])
        typer.secho(f"stopped ({stop}): the flow run is marked Cancelled and nothing partial was published. "
                    f"To resume, run the same command again — published variants are skipped:\n  {again}",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=128 + stop.signum) from None
    typer.echo(f"published {len(summary['published'])}, up to date {len(summary['skipped'])}, failed {len(summary['failed'])}")
    typer.echo(f"catalog: {summary['summary'] or 'not written (see the errors above)'} "
               f"(web: {summary.get('html')}; this run: {summary.get('last_run')})")
    by_error: dict[str, list[str]] = {}
    for vid, err in summary["failed"].items():
        by_error.setdefault(redact(err), []).append(vid)
    for err, vids in by_error.items():  # one message for a cause shared by many variants
        typer.secho(f"FAILED {vids[0]}: {err}", fg=typer.colors.RED, err=True)
        for vid in vids[1:]:
            typer.secho(f"FAILED {vid}: (same error as {vids[0]})", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1 if summary["failed"] else 0)
