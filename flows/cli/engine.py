"""`trimworks count | trim | prove | verify | convert`: the engine on one model folder, no Prefect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, fail as _fail
from tasks.engine.errors import TrimworksError


@app.command()
def count(
    model_dir: Annotated[Path, typer.Argument(help="model folder holding tokenizer.json")],
    out: Annotated[Path, typer.Option("-o", "--out", help="counts table to write (.parquet)")],
    text: Annotated[Optional[list[Path]], typer.Option("--text", help="UTF-8 text file(s), one line per example")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="a Hugging Face dataset instead: a Hub name, a data file or a "
                                                        "save_to_disk folder")] = None,
    config: Annotated[Optional[str], typer.Option(help="--dataset: its configuration")] = None,
    split: Annotated[str, typer.Option(help="--dataset: the split to count")] = "train",
    field: Annotated[str, typer.Option(help="--dataset: the text column")] = "text",
    corpus: Annotated[Optional[str], typer.Option(help="corpus description stored in the table")] = None,
    method: Annotated[str, typer.Option(help="chunks: from distinct-chunk counts where proven exact (falls back "
                                             "to direct by itself); direct: encode every line")] = "chunks",
) -> None:
    """Count token frequencies of text files (or a dataset's text column) with the model's own tokenizer."""
    from tasks.engine.counting.chunks import count_tokens_fast
    from tasks.engine.counting.tokens import count_tokens, iter_text_file, write_counts
    from tasks.engine.checkpoint.model_folder import inspect_model_folder

    if method not in ("chunks", "direct"):
        _fail(TrimworksError(f"--method {method!r}: use chunks or direct"))
    if bool(text) == bool(dataset):
        _fail(TrimworksError("give the text to count: --text FILE (repeatable) or --dataset NAME, not both"))
    try:
        base = inspect_model_folder(model_dir)
        if dataset:
            from tasks.pipeline.corpus.sources import CorpusPlace, DatasetsCorpus

            source = DatasetsCorpus(datasets=dataset, config=config, split=split, column=field)
            label = corpus or f"datasets {dataset}" + (f" ({config})" if config else "") + f" split {split}, column {field}"

            def lines():
                return source.lines(CorpusPlace(language="", base_dir=Path.cwd()))
        else:
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
    layout: Annotated[str, typer.Option(
        help="weight files: mirror (the base's own files), single (one model.safetensors), or shared "
             "(body shard(s) + the variant's vocab shard, as the pipeline publishes)")] = "mirror",
    push_to_hub: Annotated[Optional[str], typer.Option(
        "--push-to-hub", help="then upload the output folder to this Hub repo (ORG/NAME; token from HF_TOKEN, "
                              "endpoint from HF_ENDPOINT)")] = None,
    private: Annotated[bool, typer.Option(help="--push-to-hub: create the repo private")] = False,
) -> None:
    """Trim a model to the tokens its counts show are used."""
    from tasks.engine.checkpoint.architectures import load_rules
    from tasks.engine.selection.keep_texts import read_keep_text_files
    from tasks.engine.selection.policy import SelectionPolicy
    from tasks.engine.trim import trim_model

    try:
        policy = SelectionPolicy(min_count=min_count, coverage=coverage, top_k=top_k, keep=tuple(keep or ()))
        rules = load_rules(architectures or ())
        texts = read_keep_text_files(keep_text or ())
        result = trim_model(model_dir, counts, policy, multiple, out, overwrite=overwrite, rules=rules, keep_texts=texts,
                             languages=tuple(language or ()), layout=layout)
    except (TrimworksError, ValueError) as exc:
        _fail(exc)
    except OSError as exc:  # a full disk, `ulimit -f`, a read-only folder: one line naming it
        from tasks.pipeline.production.preflight import DISK_ERRNOS, output_error_message

        if exc.errno not in DISK_ERRNOS:
            raise
        _fail(TrimworksError(output_error_message(exc, out)))
    s = result.summary()
    typer.echo(
        f"{out}: vocab {s['vocab_before']} -> {s['vocab_after']}, params {s['params_before']:,} -> {s['params_after']:,} "
        f"({s['size_reduction_pct']:.1f}% smaller)"
    )
    for note in result.selection.notes + result.surgery.warnings:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    if push_to_hub:
        try:
            url = push_folder(Path(out), push_to_hub, private)
        except Exception as exc:  # noqa: BLE001 - the Hub's errors, redacted and in one line
            _fail(exc)
        typer.echo(f"pushed {out} to {url}")


def push_folder(folder: Path, repo_id: str, private: bool) -> str:
    """One commit of the folder to `repo_id` (created if missing), with the pipeline's retries;
    files the repo holds and the folder does not are deleted in the same commit."""
    import os

    from huggingface_hub import HfApi

    from tasks.pipeline.publish.targets import with_retries

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise TrimworksError(f"--push-to-hub {repo_id!r}: give the repo as ORG/NAME")
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)
    with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True), f"create {repo_id}", max_retries=3)
    commit = with_retries(lambda: api.upload_folder(folder_path=str(folder), repo_id=repo_id, delete_patterns="*",
                                                    commit_message=f"trimworks: trimmed from {folder.name}"),
                          f"upload {repo_id}", max_retries=3)
    return str(getattr(commit, "commit_url", None) or f"{api.endpoint}/{repo_id}")


@app.command()
def verify(
    model_dir: Annotated[Path, typer.Argument(help="base model folder")],
    trimmed_dir: Annotated[Path, typer.Argument(help="trimmed model folder")],
    text: Annotated[list[Path], typer.Option("--text", help="held-out text file(s) of the target languages")],
    sample: Annotated[int, typer.Option(help="lines whose model outputs are compared")] = 16,
) -> None:
    """Check exactness on held-out text; exits 1 if any covered line or output differs."""
    from tasks.engine.counting.tokens import iter_text_file
    from tasks.engine.verify.outputs import verify_exactness

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


@app.command()
def prove(
    model_dir: Annotated[Path, typer.Argument(help="base model folder")],
    trimmed_dir: Annotated[Path, typer.Argument(help="trimmed model folder")],
    text: Annotated[Optional[list[Path]], typer.Option("--text", help="held-out text file(s) for tokenization identity")] = None,
) -> None:
    """The streamed structural proof (no model loaded, constant memory); exits 1 if any check fails."""
    from tasks.engine.counting.tokens import iter_text_file
    from tasks.engine.verify.proof import prove_variant

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
    from tasks.engine.checkpoint.model_folder import convert_pickle_checkpoint

    try:
        convert_pickle_checkpoint(model_dir, out)
    except TrimworksError as exc:
        _fail(exc)
    typer.echo(f"{out}: converted")
