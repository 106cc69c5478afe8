"""`trimworks serve | nightly-now`: the nightly deployment."""

from __future__ import annotations


import typer

from flows.cli.app import app


@app.command()
def serve() -> None:
    """Serve the nightly deployment from prefect.yaml (cron 02:00 local by default)."""
    from flows.nightly import serve as serve_nightly

    serve_nightly()


@app.command("nightly-now")
def nightly_now() -> None:
    """Trigger one nightly run now (on the server if PREFECT_API_URL is set, else here)."""
    from flows.nightly import nightly_now as trigger

    summary = trigger()
    if summary is not None:
        typer.echo(f"published {len(summary['published'])}, up to date {len(summary['skipped'])}, failed {len(summary['failed'])}")
        raise typer.Exit(code=1 if summary["failed"] else 0)
