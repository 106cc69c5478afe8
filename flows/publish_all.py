"""The product: a manifest becomes published, verified, catalogued trimmed variants.

    expand manifest -> materialize bases -> count (once per tokenizer x language) ->
    coverage plots -> build variants (one mapped task per base x subset) -> catalog + artifacts
"""

from __future__ import annotations

import time
from pathlib import Path

from flows import runtime  # noqa: F401
from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.steps import build_task, count_task, heldout_task, make_publisher, materialize_base_task, plot_task
from tasks.pipeline.build import failed_record, skipped_record
from tasks.pipeline.checks import start_run
from tasks.pipeline.catalog import catalog_rows, markdown_table, write_catalog
from tasks.pipeline.plan import BaseState, Outcome, plan
from tasks.pipeline.record import VariantRecord
from tasks.pipeline.manifest import load_manifest

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


@flow(name="publish-all", task_runner=ThreadPoolTaskRunner(max_workers=2))
def publish_all(manifest: str = DEFAULT_MANIFEST, force: bool = False, only: list[str] | None = None) -> dict:
    """Build and publish every variant of the manifest (or `only` these ids).

    The decisions are `tasks.pipeline.plan`'s; this body only submits what the plan names
    and collects the results."""
    logger = get_run_logger()
    m = load_manifest(Path(manifest))
    start_run()  # output comparison: once per base model and architecture per run
    logger.info("manifest %s: %d base models, %d subsets, multiples %s", manifest, len(m.spec.base_models),
                len(m.spec.subsets), m.spec.multiples)

    # 1. Base models as local safetensors folders (GGUF converted / hub downloaded once).
    base_futures = {b.id: materialize_base_task.submit(manifest, b.id) for b in m.spec.base_models}
    bases: list[BaseState] = []
    for base_id, fut in base_futures.items():
        try:
            bases.append(BaseState.ready(base_id, Path(fut.result())))
        except Exception as exc:  # noqa: BLE001 - a broken base fails its variants, not the run
            bases.append(BaseState.broken(base_id, f"base model {base_id}: {exc}"))
            logger.error("%s", bases[-1].error)

    publisher = make_publisher(m)
    p = plan(m, bases, publisher.published_fingerprint, force=force, only=only)
    records: dict[str, VariantRecord] = {}
    for d in p.decisions:
        if d.action == "fail":
            records[d.variant.id] = failed_record(d.variant, d.reason)
        elif d.action == "skip":
            records[d.variant.id] = skipped_record(publisher, d.variant)
    logger.info("%s", p.summary())

    # 2. Counts once per (tokenizer, language); held-out text once per language.
    count_futures = {key: count_task.submit(manifest, str(tok), key.language) for key, tok in p.count_jobs().items()}
    heldout_futures = {lang: heldout_task.submit(manifest, lang) for lang in p.heldout_languages()}

    def outcome(fut) -> Outcome:
        try:
            return Outcome(path=Path(fut.result()))
        except Exception as exc:  # noqa: BLE001
            return Outcome(error=str(exc))

    counts = {key: outcome(f) for key, f in count_futures.items()}
    heldout = {lang: outcome(f) for lang, f in heldout_futures.items()}

    # 3. One coverage plot per base model.
    plots: dict[str, str] = {}
    for base_id, langs in p.plot_languages().items():
        c = {l: str(counts[p.count_key(base_id, l)].path) for l in langs if counts[p.count_key(base_id, l)].path}
        h = {l: str(heldout[l].path) for l in langs if heldout[l].path}
        if c and h:
            try:
                plots[base_id] = plot_task(manifest, base_id, str(p.bases[base_id].folder), c, h)
            except Exception as exc:  # noqa: BLE001 - a plot is never worth failing a run
                logger.warning("coverage plot for %s failed: %s", base_id, exc)

    # 4. Fan out one build task per base model x language subset (task mapping): its vocab
    #    multiples share inputs, and Prefect's per-task cost is paid once per group.
    groups, failed = p.groups(counts, heldout)
    for v, error in failed.values():
        records[v.id] = failed_record(v, error)
    if groups:
        n_build = sum(len(g.variants) for g in groups)
        progress = create_progress_artifact(0.0, description=f"variants built of {n_build}")
        futures = build_task.map(
            unmapped(manifest), [g.name for g in groups], [[v.model_dump() for v in g.variants] for g in groups],
            [str(g.base.folder) for g in groups], [{l: str(c) for l, c in g.counts.items()} for g in groups],
            [{l: str(h) for l, h in g.heldout.items()} for g in groups], [plots.get(g.base.id) for g in groups],
            unmapped(force))
        by_future = {id(f): g for f, g in zip(futures, groups)}
        report, done = ProgressThrottle(PROGRESS_EVERY_S), 0
        for fut in as_completed(futures):
            group = by_future[id(fut)]
            try:
                for rec in fut.result():
                    record = VariantRecord.model_validate(rec)
                    records[record.variant_id] = record
            except Exception as exc:  # noqa: BLE001 - a crashed task fails its own variants only
                for v in group.variants:
                    records.setdefault(v.id, failed_record(v, f"{type(exc).__name__}: {exc}"))
            done += len(group.variants)
            if report.due(final=done == n_build):
                update_progress_artifact(progress, 100.0 * done / n_build)
                logger.info("progress: %d/%d variants built", done, n_build)

    # 5. Catalog of every variant of the manifest, in manifest order.
    ordered = [records[v.id] for v in p.variants]
    parquet, md = write_catalog(ordered, m.output_dir, {b: Path(p) for b, p in plots.items()})
    rows = catalog_rows(ordered)
    create_table_artifact(key="trimworks-catalog", table=[{k: v for k, v in r.items() if k != "fidelity_json"} for r in rows],
                          description=f"catalog of {manifest}")
    create_markdown_artifact(key="trimworks-summary", markdown=md.read_text())
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
    return publish_all.with_options(task_runner=task_runner(dask_address, workers))(manifest=manifest, force=force, only=only)


__all__ = ["publish_all", "build_variant", "run_publish_all", "markdown_table"]
