"""The product: a manifest becomes published, verified, catalogued trimmed variants.

    expand manifest -> materialize bases -> count (once per tokenizer x language) ->
    coverage plots -> build variants (one task per base x subset; the group carrying a base's output
    comparison first, checks.VouchedSchedule) -> catalog + artifacts

Tasks run in worker processes by default (flows/workers.py), threads or a Dask cluster on request.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from flows import runtime  # noqa: F401
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.steps import build_task, count_task, heldout_task, make_publisher, materialize_base_task, plot_task
from flows.workers import local_task_runner, raise_if_stopped
from tasks.pipeline.production.build import failed_record, skipped_record
from tasks.pipeline.production.checks import CRASHED_STAGE, VouchedSchedule, build_cost, choose_carriers
from tasks.pipeline.report.catalog import catalog_rows, markdown_table
from tasks.pipeline.production.plan import BaseState, Outcome, plan
from tasks.pipeline.report.registry import RegistryOutputs, update_registry_catalog
from tasks.engine.runtime.progress import progress_line
from tasks.pipeline.report.record import VariantRecord
from tasks.pipeline.manifest import load_manifest
from tasks.pipeline.production.base_models import DIGEST_CACHE
from tasks.engine.runtime.redact import redact
from tasks.pipeline.corpus.identity import corpus_content_key
from tasks.pipeline.production.preflight import output_error_message, output_problem, weights_bytes
from tasks.pipeline.publish.targets import LocalRegistry
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


# The runner of a plain call (and of the served deployment): worker processes unless
# TRIMWORKS_EXECUTOR says threads; run_publish_all picks one per run.
@flow(name="publish-all", task_runner=local_task_runner(workers=2))
def publish_all(manifest: str = DEFAULT_MANIFEST, force: bool = False, only: list[str] | None = None) -> dict:
    """Build and publish every variant of the manifest (or `only` these ids).

    The decisions are `tasks.pipeline.production.plan`'s; this body only submits what the plan names
    and collects the results."""
    logger = get_run_logger()
    m = load_manifest(Path(manifest))
    logger.info("manifest %s: %d base models, %d subsets, multiples %s", manifest, len(m.spec.base_models),
                len(m.spec.subsets), m.spec.multiples)
    lease = start_run_housekeeping(m, logger)
    try:
        return _publish_all(m, manifest, force, only, logger)
    finally:
        release_lease(lease)


def runner_workers() -> float:
    """How many builds the flow's local task runner runs at once (threads or worker processes);
    unbounded for a runner that schedules on its own (a Dask cluster)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    workers = getattr(ctx.task_runner if ctx else None, "_max_workers", None)
    return max(1, int(workers)) if workers else float("inf")


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
    bases: list[BaseState] = []
    for base_id, fut in base_futures.items():
        try:
            bases.append(BaseState.ready(base_id, Path(fut.result()), m.work_dir / DIGEST_CACHE))
        except Exception as exc:  # noqa: BLE001 - a broken base fails its variants, not the run
            raise_if_stopped(exc)
            bases.append(BaseState.broken(base_id, redact(f"base model {base_id}: {exc}")))
            logger.error("%s", bases[-1].error)
    corpus_ids = {}
    for lang in m.spec.languages:
        try:
            corpus_ids[lang] = corpus_content_key(m, lang)
        except Exception as exc:  # noqa: BLE001 - counting reports it, located, for the variants
            logger.warning("corpus of %s: %s", lang, redact(exc))

    publisher = make_publisher(m)
    p = plan(m, bases, publisher.published_fingerprint, force=force, only=only, corpus_identity=corpus_ids,
             conflict=publisher.conflict if isinstance(publisher, LocalRegistry) else None)
    records: dict[str, VariantRecord] = {}
    if p.to_build and m.spec.publish.target == "local":  # one clear, early message for an unwritable/full output
        need = max(weights_bytes(p.bases[v.base].folder) for v in p.to_build)
        problem = output_problem(m.output_dir, need)
        if problem:
            logger.error("%s", problem)
            p.fail_builds(problem)
    for d in p.decisions:
        if d.action == "fail":
            records[d.variant.id] = failed_record(d.variant, d.reason)
            if d.conflict:
                logger.error("%s", d.reason)
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
            raise_if_stopped(exc)
            return Outcome(error=redact(exc))

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
        # Output comparison once per base and architecture per run, decided here (workers
        # share no state): the first variant of each base in plan order carries it, and under
        # verify.outputs auto the base's other groups wait for it (a failed comparison fails
        # them: nothing is published on the proof alone while its base's comparison is pending).
        carriers = choose_carriers([(v.id, g.base.folder) for g in groups for v in g.variants])
        schedule = VouchedSchedule(groups, carriers, sequential=m.spec.verify.outputs == "auto")
        # Costliest first, no more in flight than there are workers: the last group to start is
        # a short one, not a base's sampled comparison leaving the other worker idle at the end.
        cost = {id(g): build_cost(m.spec.verify, g.variants, g.base.folder, m.spec.verify_sample_lines, carriers)
                for g in groups}
        in_flight = runner_workers()
        pending: dict[int, tuple] = {}
        queued: list[tuple] = []

        def start_ready() -> None:
            queued.extend(schedule.take_ready())
            queued.sort(key=lambda gc: -cost[id(gc[0])])  # stable: plan order among equals
            while queued and len(pending) < in_flight:
                g, carrier = queued.pop(0)
                fut = build_task.submit(
                    manifest, g.name, [v.model_dump() for v in g.variants], str(g.base.folder),
                    {l: str(c) for l, c in g.counts.items()}, {l: str(h) for l, h in g.heldout.items()},
                    plots.get(g.base.id), force, carrier)
                pending[id(fut)] = (fut, g)

        report, done, build_start = ProgressThrottle(PROGRESS_EVERY_S), 0, time.monotonic()

        def count_done(group) -> None:
            nonlocal done
            done += len(group.variants)
            if report.due(final=done == n_build):
                update_progress_artifact(progress, 100.0 * done / n_build)
                logger.info("%s", progress_line("building", done, n_build, time.monotonic() - build_start, "variants"))

        start_ready()
        while pending:
            fut = next(as_completed([f for f, _ in pending.values()]))
            _, group = pending.pop(id(fut))
            group_records = []
            try:
                for rec in fut.result():
                    record = VariantRecord.model_validate(rec)
                    records[record.variant_id] = record
                    group_records.append(record)
            except Exception as exc:  # noqa: BLE001 - a crashed task fails its own variants only
                raise_if_stopped(exc)
                for v in group.variants:  # a crash may have been the comparison's: it vouches for nothing
                    records.setdefault(v.id, failed_record(v, f"{type(exc).__name__}: {exc}", stage=CRASHED_STAGE))
                group_records = [records[v.id] for v in group.variants]
            count_done(group)
            for failed_group, reason in schedule.finished(group, group_records):
                for v in failed_group.variants:
                    records[v.id] = failed_record(v, reason)
                logger.error("%s: %s", failed_group.name, reason)
                count_done(failed_group)
            start_ready()

    # 5. Catalog of every variant of the manifest, in manifest order.
    ordered = [records[v.id] for v in p.variants]
    catalog = write_catalog_anywhere(ordered, m, manifest, logger)  # the registry's, not just this run's
    parquet, md = (catalog.parquet, catalog.markdown) if catalog else (None, None)
    rows = catalog_rows(ordered)
    create_table_artifact(key="trimworks-catalog", table=[{k: v for k, v in r.items() if k != "fidelity_json"} for r in rows],
                          description=f"catalog of {manifest}")
    create_markdown_artifact(key="trimworks-summary", markdown=catalog.last_run.read_text() if catalog else markdown_table(rows))
    failed = [r for r in ordered if r.status == "failed"]
    for r in failed:
        logger.error("FAILED %s: %s", r.variant_id, r.error)
    stages = stage_totals([r for r in ordered if r.status == "published"])
    if stages:
        n_built = sum(r.status == "published" for r in ordered)
        logger.info("thread time per variant: %s", ", ".join(f"{k} {v / n_built:.2f} s" for k, v in stages.items()))
    summary = {
        "manifest": manifest,
        "published": [r.variant_id for r in ordered if r.status == "published"],
        "skipped": [r.variant_id for r in ordered if r.status == "skipped"],
        "failed": {r.variant_id: r.error for r in failed},
        "catalog": str(parquet) if parquet else None,
        "summary": str(md) if md else None,
        "html": str(catalog.html) if catalog else None,
        "last_run": str(catalog.last_run) if catalog else None,
        "stage_seconds": stages,  # thread time per build stage, summed over this run's published variants
    }
    logger.info("done: %d published, %d up to date, %d failed; catalog %s", len(summary["published"]),
                len(summary["skipped"]), len(failed), md)
    return summary


def stage_totals(records) -> dict[str, float]:
    totals: dict[str, float] = {}
    for r in records:
        for name, seconds in r.stage_seconds.items():
            totals[name] = round(totals.get(name, 0.0) + seconds, 3)
    return totals


def write_catalog_anywhere(records, m, manifest: str, logger) -> RegistryOutputs | None:
    """The catalog is always written: the registry's, into the output folder, else (read-only,
    full) this run's into work_dir, else the run's summary and artifacts still list every variant."""
    for folder in (m.output_dir, m.work_dir / "catalog"):
        try:
            out = update_registry_catalog(folder, records, manifest, registry=m.output_dir)
            if folder != m.output_dir:
                logger.error("the catalog could not be written to %s; it is at %s", m.output_dir, out.markdown)
            return out
        except OSError as exc:
            logger.error("cannot write the catalog to %s: %s", folder, output_error_message(exc, folder))
    return None


@flow(name="build-variant", task_runner=local_task_runner(workers=2))
def build_variant(manifest: str, variant_id: str) -> dict:
    """Regenerate exactly one model from its manifest entry, whatever is already published."""
    return publish_all.fn(manifest=manifest, force=True, only=[variant_id])


def task_runner(dask_address: str | None = None, workers: int = 2, executor: str | None = None):
    """Local worker processes by default (`executor` threads, or TRIMWORKS_EXECUTOR); an
    existing Dask cluster with --dask-address."""
    if dask_address:
        from flows.dask_runner import FlowApiDaskTaskRunner

        return FlowApiDaskTaskRunner(address=dask_address)
    return local_task_runner(executor, workers)


def run_publish_all(manifest: str = DEFAULT_MANIFEST, force: bool = False, only: list[str] | None = None,
                    dask_address: str | None = None, workers: int = 2, executor: str | None = None) -> dict:
    from flows.stopping import mark_cancelled_if_stopped  # a run stopped by Ctrl-C/SIGTERM ends Cancelled

    guard_temporary_server()  # before the first client call starts the temporary server
    runner = task_runner(dask_address, workers, executor)
    return publish_all.with_options(task_runner=runner, on_crashed=[mark_cancelled_if_stopped])(
        manifest=manifest, force=force, only=only)


__all__ = ["publish_all", "build_variant", "run_publish_all", "markdown_table"]
