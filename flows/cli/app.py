"""The `trimworks` Typer app and the one way a command fails: a red line, exit 2."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Exact vocabulary trimming of transformer models.")


def fail(exc: Exception) -> None:
    from tasks.engine.runtime.redact import redact

    typer.secho(f"error: {redact(exc)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
