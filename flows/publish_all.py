"""The product: a manifest becomes published, verified, catalogued trimmed variants.

    expand manifest -> materialize bases -> count (once per tokenizer x language) ->
    coverage plots -> build variants (one mapped task per base x subset) -> catalog + artifacts
"""

from __future__ import annotations

import contextlib
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
from tasks.pipeline.catalog import catalog_rows, markdown_table, write_catalog
from tasks.engine.errors import ManifestError
from tasks.pipeline.record import VariantRecord
from tasks.pipeline.manifest import Variant, expand, load_manifest
from tasks.engine.model_folder import tokenizer_fingerprint
from tasks.pipeline.sources import DIGEST_CACHE, base_identity
from tasks.engine.redact import redact
from tasks.pipeline.corpus_identity import corpus_content_key
from tasks.pipeline.preflight import output_error_message, output_problem, weights_bytes
from tasks.pipeline.publish import LocalRegistry
from flows.orphans import guard_temporary_server, hold_lease, mark_crashed_runs, release_lease

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
    lease = start_run_housekeeping(m, logger)
    try:
        return _publish_all(m, manifest, force, only, logger)
    finally:
        release_lease(lease)


def start_run_housekeeping(m, logger) -> Path | None:
    """Mark flow runs of killed runs crashed, clear their stale temp folders, hold a lease."""
    from prefect.runtime import flow_run

    with contextlib.suppress(Exception):
        mark_crashed_runs(m.work_dir)
    if m.spec.publish.target == "local":
        with contextlib.suppress(OSError):
            for p in LocalRegistry(m.output_dir).clean_stale(m.work_dir / "locks"):
                logger.info("removed a stale temp folder of an earlier run: %s", p)
    try:
        return hold_lease(m.work_dir, str(flow_run.id)) if flow_run.id else None
    except OSError:
        return None


def _publish_all(m, manifest: str, force: bool, only: list[str] | None, logger) -> dict:

    # 1. Base models as local safetensors folders (GGUF converted / hub downloaded once).
    base_futures = {b.id: materialize_base_task.submit(manifest, b.id) for b in m.spec.base_models}
    base_dirs, base_errors, identities, tok_of, fp_of = {}, {}, {}, {}, {}
    for base_id, fut in base_futures.items():
        try:
            folder = Path(fut.result())
            identities[base_id] = base_identity(folder, m.work_dir / DIGEST_CACHE)
            fp_of[base_id] = tokenizer_fingerprint(folder / "tokenizer.json")
            tok_of[base_id] = str(folder / "tokenizer.json")
            base_dirs[base_id] = str(folder)
        except Exception as exc:  # noqa: BLE001 - a broken base fails its variants, not the run
            base_errors[base_id] = redact(f"base model {base_id}: {exc}")
            logger.error("%s", base_errors[base_id])
    corpus_ids = {}
    for lang in m.spec.languages:
        try:
            corpus_ids[lang] = corpus_content_key(m, lang)
        except Exception as exc:  # noqa: BLE001 - counting reports it, located, for the variants
            logger.warning("corpus of %s: %s", lang, redact(exc))
    variants = select_variants(expand(m, identities, corpus_ids), only, manifest)

    publisher, location = make_publisher(m)
    records: dict[str, VariantRecord] = {}
    todo: list[Variant] = []
    for v in variants:
        if v.base in base_errors:
            records[v.id] = failed_record(v, base_errors[v.base])
            continue
        try:  # per variant: an unreachable Hub fails these variants, not the run
            up_to_date = not force and publisher.published_fingerprint(v) == v.fingerprint
        except Exception as exc:  # noqa: BLE001
            records[v.id] = failed_record(v, f"{v.id}: cannot read the published state ({type(exc).__name__}: {exc})")
            continue
        if up_to_date:
            records[v.id] = skipped_record(publisher, v, location(v))
        else:
            todo.append(v)
    if todo and m.spec.publish.target == "local":  # one clear, early message for an unwritable/full output
        need = max(weights_bytes(Path(base_dirs[v.base])) for v in todo)
        problem = output_problem(m.output_dir, need)
        if problem:
            logger.error("%s", problem)
            for v in todo:
                records[v.id] = failed_record(v, problem)
            todo = []
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
            return None, redact(exc)

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
        report, done = ProgressThrottle(PROGRESS_EVERY_S), 0
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
                logger.info("progress: %d/%d variants built", done, n_build)

    # 5. Catalog of every variant of the manifest, in manifest order.
    ordered = [records[v.id] for v in variants]
    parquet, md = write_catalog_anywhere(ordered, m, {b: Path(p) for b, p in plots.items()}, logger)
    rows = catalog_rows(ordered)
    create_table_artifact(key="trimworks-catalog", table=[{k: v for k, v in r.items() if k != "fidelity_json"} for r in rows],
                          description=f"catalog of {manifest}")
    create_markdown_artifact(key="trimworks-summary", markdown=md.read_text() if md else markdown_table(rows))
    failed = [r for r in ordered if r.status == "failed"]
    for r in failed:
        logger.error("FAILED %s: %s", r.variant_id, r.error)
    summary = {
        "manifest": manifest,
        "published": [r.variant_id for r in ordered if r.status == "published"],
        "skipped": [r.variant_id for r in ordered if r.status == "skipped"],
        "failed": {r.variant_id: r.error for r in failed},
        "catalog": str(parquet) if parquet else None,
        "summary": str(md) if md else None,
    }
    logger.info("done: %d published, %d up to date, %d failed; catalog %s", len(summary["published"]),
                len(summary["skipped"]), len(failed), md)
    return summary


def write_catalog_anywhere(records, m, plots, logger) -> tuple[Path | None, Path | None]:
    """The catalog is always written: into the output folder, else (read-only, full) into
    work_dir, else the run's summary and artifacts still list every variant."""
    for folder in (m.output_dir, m.work_dir / "catalog"):
        try:
            paths = write_catalog(records, folder, plots if folder == m.output_dir else {})
            if folder != m.output_dir:
                logger.error("the catalog could not be written to %s; it is at %s", m.output_dir, paths[1])
            return paths
        except OSError as exc:
            logger.error("cannot write the catalog to %s: %s", folder, output_error_message(exc, folder))
    return None, None


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
    guard_temporary_server()  # before the first client call starts the temporary server
    return publish_all.with_options(task_runner=task_runner(dask_address, workers))(manifest=manifest, force=force, only=only)


def list_variants(manifest: str) -> list[Variant]:
    return expand(load_manifest(Path(manifest)))


__all__ = ["publish_all", "build_variant", "run_publish_all", "list_variants", "markdown_table"]
