"""`trimworks count | trim | prove | verify | convert`: the engine on one model folder, no Prefect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, fail as _fail
from tasks.engine.errors import TrimworksError
from tasks.engine.verify.fitness import DEFAULT_MAX_LINES_GAINING_UNKNOWN, DEFAULT_MIN_TOKEN_COVERAGE


@app.command()
def count(
    model: Annotated[str, typer.Argument(help="model folder holding tokenizer.json, or a Hub id ORG/NAME")],
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
    revision: Annotated[Optional[str], typer.Option(help=REVISION_HELP)] = None,
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
        model_dir, fetched = local_or_hub(model, revision)
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
        if fetched:
            counts.provenance["model"] = fetched
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
    model: Annotated[str, typer.Argument(help="base model folder (safetensors + tokenizer.json), or a Hub id ORG/NAME")],
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
    revision: Annotated[Optional[str], typer.Option(help=REVISION_HELP)] = None,
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
        model_dir, fetched = local_or_hub(model, revision)
        provenance = {"base_model": f"{fetched['hub']}@{fetched['commit']}", "hub": fetched} if fetched else None
        result = trim_model(model_dir, counts, policy, multiple, out, overwrite=overwrite, rules=rules, keep_texts=texts,
                             languages=tuple(language or ()), layout=layout, provenance=provenance)
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


REVISION_HELP = ("a Hub id's branch, tag or commit (default main); resolved to a commit, which is printed and "
                 "recorded in the output")


def local_or_hub(model: str, revision: str | None) -> tuple[Path, dict]:
    """A local folder as is; a Hub id downloaded at the commit `revision` names now (once per
    commit, into trimworks' cache; LFS files checked). Returns the folder and, for a Hub id,
    what was fetched."""
    import os
    import re

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from tasks.engine.checkpoint.shape_template import cache_root
    from tasks.pipeline.production.base_models import fetch_hub_model

    hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", model) is not None
    if Path(model).exists() or not hub_id:  # a folder (a missing one is named by the model-folder check)
        if revision:
            raise TrimworksError(f"--revision {revision}: {model} is not a Hub id (ORG/NAME); --revision is for one")
        return Path(model), {}
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)
    rev = revision or "main"
    try:
        folder, source = fetch_hub_model(api, model, rev, cache_root() / "hub")
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        hint = ("check the id and --revision, and HF_TOKEN for a private or gated repo" if status in (401, 403, 404)
                else "the Hub did not answer; try again later")
        raise TrimworksError(f"{model}@{rev}: {type(exc).__name__} (HTTP {status}); {hint}") from exc
    typer.secho(f"{model}@{rev}: commit {source['commit']} ({folder})", err=True)
    return folder, source


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
    min_token_coverage: Annotated[float, typer.Option(
        help="fitness: each text must keep at least this share of the base's tokens (0 relaxes it)")] = DEFAULT_MIN_TOKEN_COVERAGE,
    max_lines_gaining_unknown: Annotated[int, typer.Option(
        help="fitness: at most this many lines of each text may gain an unknown token")] = DEFAULT_MAX_LINES_GAINING_UNKNOWN,
    exact_only: Annotated[bool, typer.Option(
        "--exact-only", help="judge exactness alone (fitness is still reported)")] = False,
    loss_sample: Annotated[int, typer.Option(
        help="covered and uncovered lines per text on which the loss is measured (0: not measured)")] = 8,
    architectures: Annotated[Optional[list[Path]], typer.Option(
        "--architectures", help="the JSON/YAML rule file(s) the variant was trimmed with (repeatable)")] = None,
) -> None:
    """Two verdicts on held-out text: exact (covered lines and outputs identical) and fit for the
    text (enough of its tokens kept, no line gaining an unknown token). Exits 1 unless both hold."""
    from tasks.engine.checkpoint.architectures import load_rules
    from tasks.engine.counting.tokens import iter_text_file
    from tasks.engine.verify.fitness import FitnessThresholds, fitness
    from tasks.engine.verify.outputs import verify_exactness

    try:
        thresholds = FitnessThresholds(min_token_coverage=min_token_coverage, max_lines_gaining_unknown=max_lines_gaining_unknown)
        rules = load_rules(architectures or ())
        heldout = {p.stem: list(iter_text_file(p)) for p in text}
        report = verify_exactness(model_dir, trimmed_dir, heldout, sample_lines=sample, rules=rules)
    except (TrimworksError, ValueError) as exc:
        _fail(exc)
    fit = fitness({lang.language: lang for lang in report.languages}, thresholds)
    loss = {}
    if loss_sample > 0:
        from tasks.engine.verify.loss import texts_loss

        try:
            loss = texts_loss(model_dir, trimmed_dir, heldout, loss_sample)
        except (TrimworksError, ValueError) as exc:
            _fail(exc)
    typer.echo(json.dumps({**report.model_dump(), "verdict": {"exact": report.exact, "fit": fit.fit,
                                                              "fitness_failures": fit.failures,
                                                              "thresholds": thresholds.model_dump()},
                           "loss": {name: tl.model_dump() for name, tl in loss.items()}}, indent=2))
    for name, tl in loss.items():
        typer.secho(f"loss on {name}: {loss_line(tl)}", err=True)
    if report.compute_note:
        typer.secho(f"note: {report.compute_note} (tolerance {report.tolerance:g})", fg=typer.colors.YELLOW, err=True)
    vacuous = report.vacuous_reason(outputs_expected=sample > 0)
    if vacuous:
        typer.secho(f"error: verification proves nothing: {vacuous}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    typer.secho(f"exact: {'yes' if report.exact else 'NO'} (covered lines and outputs identical to the base)",
                fg=None if report.exact else typer.colors.RED, err=True)
    judged = "" if not exact_only else " (not judged: --exact-only)"
    typer.secho(f"fit for this text: {'yes' if fit.fit else 'NO'}{judged} (token coverage >= {min_token_coverage:g}, "
                f"at most {max_lines_gaining_unknown} lines gaining an unknown token per text)"
                + "".join(f"\n  {f}" for f in fit.failures), fg=None if fit.fit or exact_only else typer.colors.RED, err=True)
    raise typer.Exit(code=0 if report.exact and (fit.fit or exact_only) else 1)


def loss_line(tl) -> str:
    """One line of a text's loss: covered and uncovered lines side by side."""
    def part(label: str, sp) -> str:
        if not sp.lines:
            return f"{label}: no lines"
        if sp.nll_ratio is not None:
            return (f"{label} ({sp.lines} lines) NLL/char {sp.nll_per_char_before:.3f} -> {sp.nll_per_char_after:.3f} "
                    f"(x{sp.nll_ratio:.3f})")
        if sp.cosine_mean is not None:
            return f"{label} ({sp.lines} lines) embedding cosine mean {sp.cosine_mean:.4f}, min {sp.cosine_min:.4f}"
        if sp.top1_agreement is not None:
            return f"{label} ({sp.lines} lines) masked-word top-1 agreement {sp.top1_agreement:.1%}"
        return f"{label} ({sp.lines} lines) not measured"
    if tl.kind.startswith("not measured"):
        return tl.kind
    return f"{part('covered', tl.covered)}; {part('uncovered', tl.uncovered)}"


@app.command()
def prove(
    model_dir: Annotated[Path, typer.Argument(help="base model folder")],
    trimmed_dir: Annotated[Path, typer.Argument(help="trimmed model folder")],
    text: Annotated[Optional[list[Path]], typer.Option("--text", help="held-out text file(s) for tokenization identity")] = None,
    architectures: Annotated[Optional[list[Path]], typer.Option(
        "--architectures", help="the JSON/YAML rule file(s) the variant was trimmed with (repeatable)")] = None,
) -> None:
    """The streamed structural proof (no model loaded, constant memory); exits 1 if any check fails."""
    from tasks.engine.checkpoint.architectures import load_rules
    from tasks.engine.counting.tokens import iter_text_file
    from tasks.engine.verify.proof import prove_variant

    try:
        rules = load_rules(architectures or ())
        report = prove_variant(model_dir, trimmed_dir, {p.stem: list(iter_text_file(p)) for p in text or []}, rules=rules)
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
