"""The `trimworks` Typer app and the one way a command fails: a red line, exit 2."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

# Shell completion as typer gives it (`trimworks --install-completion`, `--show-completion`).
app = typer.Typer(no_args_is_help=True, help="Exact vocabulary trimming of transformer models.")


def _print_version(value: bool) -> None:
    if value:
        from tasks import __version__

        typer.echo(f"trimworks {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_print_version, is_eager=True,
                                                    help="print the version and exit")] = None,
) -> None:
    """Exact vocabulary trimming of transformer models."""


def fail(exc: Exception) -> None:
    from tasks.engine.runtime.redact import redact

    typer.secho(f"error: {redact(exc)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
