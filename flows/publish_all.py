"""The product: a manifest becomes published, verified, catalogued trimmed variants.

    expand manifest -> materialize bases -> count (once per tokenizer x language) ->
    coverage plots -> build variants (one mapped task per base x subset) -> catalog + artifacts
"""

from __future__ import annotations

import difflib
import time
from pathlib import Path

from flows import runtime  # noqa: F401
from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.steps import build_task, count_task, heldout_task, make_publisher, materialize_base_task, plot_task
from tasks.pipeline.build import failed_record, skipped_record
from tasks.pipeline.catalog import catalog_rows, markdown_table
from tasks.pipeline.registry import update_registry_catalog
from tasks.engine.errors import ManifestError
from tasks.engine.progress import progress_line
from tasks.pipeline.record import VariantRecord
from tasks.pipeline.manifest import Variant, expand, load_manifest
from tasks.engine.model_folder import tokenizer_fingerprint
from tasks.pipeline.sources import base_identity

DEFAULT_MANIFEST = "manifests/default.yaml"
# Progress is reported at most this often: one API call per finished variant cost a tiny
# variant 10 % of its build time (the flow thread holds the GIL the builds need).
PROGRESS_EVERY_S = 2.0


class ProgressThrottle:
    """True at most once per `every` seconds, and always for the final report."""

    def __init__(self, every: float):
        self.every, self.last = every, float("-inf")

    def due(self, final: bool = False) -> bool:
        now = time.monotonic()
        if final or now - self.last >= self.every:
            self.last = now
            return True
        return False


def select_variants(variants: list[Variant], only: list[str] | None, manifest: str) -> list[Variant]:
    if not only:
        return variants
    ids = {v.id for v in variants}
    unknown = [o for o in only if o not in ids]
    if unknown:
        hints = {u: difflib.get_close_matches(u, ids, n=3) for u in unknown}
        raise ManifestError(f"{manifest}: no variant(s) {unknown}; close matches: {hints}. `trimworks list` shows all ids")
    return [v for v in variants if v.id in set(only)]


@flow(name="publish-all", task_runner=ThreadPoolTaskRunner(max_workers=2))
def publish_all(manifest: str = DEFAULT_MANIFEST, force: bool = False, only: list[str] | None = None) -> dict:
    """Build and publish every variant of the manifest (or `only` these ids)."""
    logger = get_run_logger()
    m = load_manifest(Path(manifest))
    logger.info("manifest %s: %d base models, %d subsets, multiples %s", manifest, len(m.spec.base_models),
                len(m.spec.subsets), m.spec.multiples)

    # 1. Base models as local safetensors folders (GGUF converted / hub downloaded once).
    base_futures = {b.id: materialize_base_task.submit(manifest, b.id) for b in m.spec.base_models}
    base_dirs, base_errors, identities, tok_of, fp_of = {}, {}, {}, {}, {}
    for base_id, fut in base_futures.items():
        try:
            folder = Path(fut.result())
            identities[base_id] = base_identity(folder)
            fp_of[base_id] = tokenizer_fingerprint(folder / "tokenizer.json")
            tok_of[base_id] = str(folder / "tokenizer.json")
            base_dirs[base_id] = str(folder)
        except Exception as exc:  # noqa: BLE001 - a broken base fails its variants, not the run
            base_errors[base_id] = f"base model {base_id}: {exc}"
            logger.error("%s", base_errors[base_id])
    variants = select_variants(expand(m, identities), only, manifest)

    publisher, location = make_publisher(m)
    records: dict[str, VariantRecord] = {}
    todo: list[Variant] = []
    for v in variants:
        if v.base in base_errors:
            records[v.id] = failed_record(v, base_errors[v.base])
        elif not force and publisher.published_fingerprint(v) == v.fingerprint:
            records[v.id] = skipped_record(publisher, v, location(v))
        else:
            todo.append(v)
    logger.info("%d variants: %d to build, %d up to date, %d failed early", len(variants), len(todo),
                sum(r.status == "skipped" for r in records.values()), sum(r.status == "failed" for r in records.values()))

    # 2. Counts once per (tokenizer, language); held-out text once per language.
    count_keys = {(fp_of[v.base], lang): tok_of[v.base] for v in todo for lang in v.languages}
    count_futures = {key: count_task.submit(manifest, tok, key[1]) for key, tok in count_keys.items()}
    heldout_futures = {lang: heldout_task.submit(manifest, lang) for lang in {l for v in todo for l in v.languages}}

    def outcome(fut):
        try:
            return fut.result(), None
        except Exception as exc:  # noqa: BLE001
            return None, str(exc)

    counts = {key: outcome(f) for key, f in count_futures.items()}
    heldout = {lang: outcome(f) for lang, f in heldout_futures.items()}

    # 3. One coverage plot per base model.
    plots: dict[str, str] = {}
    for base_id in {v.base for v in todo}:
        langs = sorted({l for v in todo if v.base == base_id for l in v.languages})
        c = {l: counts[(fp_of[base_id], l)][0] for l in langs if counts[(fp_of[base_id], l)][0]}
        h = {l: heldout[l][0] for l in langs if heldout[l][0]}
        if c and h:
            try:
                plots[base_id] = plot_task(manifest, base_id, base_dirs[base_id], c, h)
            except Exception as exc:  # noqa: BLE001 - a plot is never worth failing a run
                logger.warning("coverage plot for %s failed: %s", base_id, exc)

    # 4. Fan out one build task per base model x language subset (task mapping): its vocab
    #    multiples share inputs, and Prefect's per-task cost is paid once per group.
    groups: dict[tuple[str, tuple[str, ...]], list[Variant]] = {}
    for v in todo:
        errors = [counts[(fp_of[v.base], l)][1] for l in v.languages] + [heldout[l][1] for l in v.languages]
        errors = [e for e in errors if e]
        if errors:
            records[v.id] = failed_record(v, "; ".join(dict.fromkeys(errors)))
        else:
            groups.setdefault((v.base, v.languages), []).append(v)
    if groups:
        keys = list(groups)
        n_build = sum(len(g) for g in groups.values())
        progress = create_progress_artifact(0.0, description=f"variants built of {n_build}")
        futures = build_task.map(
            unmapped(manifest), [f"{base}-{'-'.join(langs)}" for base, langs in keys],
            [[v.model_dump() for v in groups[k]] for k in keys], [base_dirs[base] for base, _ in keys],
            [{l: counts[(fp_of[base], l)][0] for l in langs} for base, langs in keys],
            [{l: heldout[l][0] for l in langs} for _, langs in keys], [plots.get(base) for base, _ in keys],
            unmapped(force))
        by_future = {id(f): groups[k] for f, k in zip(futures, keys)}
        report, done, build_start = ProgressThrottle(PROGRESS_EVERY_S), 0, time.monotonic()
        for fut in as_completed(futures):
            group = by_future[id(fut)]
            try:
                for rec in fut.result():
                    record = VariantRecord.model_validate(rec)
                    records[record.variant_id] = record
            except Exception as exc:  # noqa: BLE001 - a crashed task fails its own variants only
                for v in group:
                    records.setdefault(v.id, failed_record(v, f"{type(exc).__name__}: {exc}"))
            done += len(group)
            if report.due(final=done == n_build):
                update_progress_artifact(progress, 100.0 * done / n_build)
                logger.info("%s", progress_line("building", done, n_build, time.monotonic() - build_start, "variants"))

    # 5. Catalog of every variant of the manifest, in manifest order.
    ordered = [records[v.id] for v in variants]
    catalog = update_registry_catalog(m.output_dir, ordered, manifest)  # the registry's, not just this run's
    parquet, md = catalog.parquet, catalog.markdown
    rows = catalog_rows(ordered)
    create_table_artifact(key="trimworks-catalog", table=[{k: v for k, v in r.items() if k != "fidelity_json"} for r in rows],
                          description=f"catalog of {manifest}")
    create_markdown_artifact(key="trimworks-summary", markdown=catalog.last_run.read_text())
    failed = [r for r in ordered if r.status == "failed"]
    for r in failed:
        logger.error("FAILED %s: %s", r.variant_id, r.error)
    summary = {
        "manifest": manifest,
        "published": [r.variant_id for r in ordered if r.status == "published"],
        "skipped": [r.variant_id for r in ordered if r.status == "skipped"],
        "failed": {r.variant_id: r.error for r in failed},
        "catalog": str(parquet),
        "summary": str(md),
        "html": str(catalog.html),
        "last_run": str(catalog.last_run),
    }
    logger.info("done: %d published, %d up to date, %d failed; catalog %s", len(summary["published"]),
                len(summary["skipped"]), len(failed), md)
    return summary


@flow(name="build-variant", task_runner=ThreadPoolTaskRunner(max_workers=2))
def build_variant(manifest: str, variant_id: str) -> dict:
    """Regenerate exactly one model from its manifest entry, whatever is already published."""
    return publish_all.fn(manifest=manifest, force=True, only=[variant_id])


def task_runner(dask_address: str | None = None, workers: int = 2):
    """Local threads by default; an existing Dask cluster with --dask-address."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=workers)


def run_publish_all(manifest: str = DEFAULT_MANIFEST, force: bool = False, only: list[str] | None = None,
                    dask_address: str | None = None, workers: int = 2) -> dict:
    from flows.stopping import mark_cancelled_if_stopped  # a run stopped by Ctrl-C/SIGTERM ends Cancelled

    return publish_all.with_options(task_runner=task_runner(dask_address, workers), on_crashed=[mark_cancelled_if_stopped])(
        manifest=manifest, force=force, only=only)


def list_variants(manifest: str) -> list[Variant]:
    return expand(load_manifest(Path(manifest)))


__all__ = ["publish_all", "build_variant", "run_publish_all", "list_variants", "markdown_table"]
