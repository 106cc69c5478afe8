"""Thin Prefect tasks over the pure functions in tasks/. They take and return small values
(paths, ids, records as dicts), never tensors, so any executor (worker processes, threads,
Dask) can run them; what is per-run state (which variant compares outputs) comes in as an
argument, decided by the flow."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.workers import cancel_on_stop
from tasks.engine.errors import TrimworksError
from tasks.engine.runtime.redact import redact, register_secret
from tasks.pipeline.production.build import build_and_publish, failed_record
from tasks.pipeline.production.checks import vouched_failure
from tasks.pipeline.report.catalog import plot_coverage
from tasks.pipeline.corpus.counts_cache import ensure_counts, ensure_heldout, expected_train_lines, read_heldout
from tasks.pipeline.manifest import HubTarget, LoadedManifest, Variant, load_manifest
from tasks.engine.checkpoint.model_folder import TOKENIZER_JSON
from tasks.pipeline.publish.targets import Publisher, manifest_owner, publisher_for
from tasks.pipeline.production.base_models import materialize_base


def open_manifest(path: str) -> LoadedManifest:
    """The manifest as this process last parsed it; parsed again only when the file changes.

    Every task gets the manifest by path (a small value); parsing and expanding a large
    manifest in each of thousands of tasks was a quarter of a tiny variant's build time."""
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError:
        return load_manifest(Path(path), check_files=False)  # raises the located ManifestError
    return _parsed_manifest(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _parsed_manifest(path: str, mtime_ns: int, size: int) -> LoadedManifest:
    return load_manifest(Path(path), check_files=False)


def resolve_hub_token(spec: HubTarget) -> str | None:
    """HF_TOKEN from the environment, else a Prefect Secret block named in the manifest."""
    token = os.environ.get("HF_TOKEN")
    if token:
        register_secret(token)
        return token
    if spec.token_secret_block:
        from prefect.blocks.system import Secret

        token = Secret.load(spec.token_secret_block).get()
        register_secret(token)
        return token
    return None


def make_publisher(m: LoadedManifest) -> Publisher:
    """The manifest's publish target, with the Hub token from the environment or a Prefect Secret."""
    hub = m.spec.publish.hub if m.spec.publish.target == "hub" else None
    return publisher_for(m.spec.publish, m.output_dir, resolve_hub_token(hub) if hub is not None else None,
                         owner=manifest_owner(m.path, m.work_dir))


def work_folder_errors(fn):
    """A full, size-limited or read-only work folder is one line naming it (counts, held-out
    text and converted bases are written there), not a bare errno."""

    @functools.wraps(fn)
    def wrapper(manifest: str, *args, **kwargs):
        try:
            return fn(manifest, *args, **kwargs)
        except OSError as exc:
            from tasks.pipeline.production.preflight import DISK_ERRNOS, output_error_message

            if exc.errno not in DISK_ERRNOS:
                raise
            where = Path(exc.filename).parent if isinstance(exc.filename, str) else open_manifest(manifest).work_dir
            raise TrimworksError(output_error_message(exc, where, "work folder")) from None

    return wrapper


@task(name="materialize-base", cache_policy=NO_CACHE)
@cancel_on_stop
@work_folder_errors
def materialize_base_task(manifest: str, base_id: str) -> str:
    m = open_manifest(manifest)
    try:
        folder = materialize_base(m, m.base(base_id))
    except Exception as exc:  # noqa: BLE001 - the task's failed state and logs carry a redacted text
        raise TrimworksError(redact(f"{type(exc).__name__}: {exc}" if not isinstance(exc, TrimworksError) else exc)) from None
    get_run_logger().info("base %s ready at %s", base_id, folder)
    return str(folder)


@task(name="count-tokens", cache_policy=NO_CACHE, task_run_name="count-{language}")
@cancel_on_stop
@work_folder_errors
def count_task(manifest: str, tokenizer_json: str, language: str) -> str:
    m = open_manifest(manifest)
    expected = expected_train_lines(m, language)
    artifact, shown = None, [0]

    def progress(lines: int) -> None:  # a progress artifact in 1 % steps, when the size is known
        nonlocal artifact
        if not expected:
            return
        pct = min(100, int(100 * lines / expected))
        if artifact is None:
            artifact = create_progress_artifact(0.0, description=f"counting {language}: lines read of ~{expected:,}")
        if pct > shown[0]:
            shown[0] = pct
            update_progress_artifact(artifact, float(pct))

    path = ensure_counts(m, Path(tokenizer_json), language, on_progress=progress)
    if artifact is not None and shown[0] < 100:
        update_progress_artifact(artifact, 100.0)  # LID may have dropped lines: counting is done
    return str(path)  # tasks/pipeline/corpus/counts_cache.py logs the count itself


@task(name="heldout-text", cache_policy=NO_CACHE, task_run_name="heldout-{language}")
@cancel_on_stop
@work_folder_errors
def heldout_task(manifest: str, language: str) -> str:
    return str(ensure_heldout(open_manifest(manifest), language))


@task(name="coverage-plot", cache_policy=NO_CACHE, task_run_name="plot-{base_id}")
def plot_task(manifest: str, base_id: str, base_dir: str, counts: dict[str, str], heldout: dict[str, str]) -> str:
    m = open_manifest(manifest)
    tok_json = Path(base_dir) / TOKENIZER_JSON
    out = m.output_dir / "plots" / f"{base_id}-coverage.png"
    plot_coverage(base_id, tok_json, None, {k: Path(v) for k, v in counts.items()},
                  {k: read_heldout(Path(v)) for k, v in heldout.items()}, out)
    return str(out)


@task(name="build-variants", cache_policy=NO_CACHE, task_run_name="build-{group}")
@cancel_on_stop
def build_task(manifest: str, group: str, variants: list[dict], base_dir: str, counts: dict[str, str],
               heldout: dict[str, str], plot: str | None, force: bool = False, carrier: str | None = None) -> list[dict]:
    """The variants of one base model x language subset (its vocab multiples), one by one.

    They share counts, held-out text and plot; one task per group instead of per variant
    keeps Prefect's fixed per-task cost off each variant. A failing variant is a failed
    record, never a failed task, so its siblings still publish.

    `carrier` is the variant the flow chose to carry the base's output comparison; when it is
    in this group and does not publish, the next variant of the group takes it over."""
    m = open_manifest(manifest)
    publisher = make_publisher(m)
    logger = get_run_logger()
    count_paths, heldout_paths = {k: Path(p) for k, p in counts.items()}, {k: Path(p) for k, p in heldout.items()}
    records = []
    hand_over, vouched = False, None
    for variant in variants:
        v = Variant.model_validate(variant)
        if vouched:  # the base's output comparison failed: no sibling publishes on the proof alone
            records.append(failed_record(v, vouched).model_dump(mode="json"))
            continue
        if hand_over:
            carrier, hand_over = v.id, False
        record = build_and_publish(m, v, Path(base_dir), count_paths, heldout_paths, publisher,
                                   Path(plot) if plot else None, force=force, carrier=carrier)
        vouched = vouched_failure(record)
        hand_over = carrier == v.id and record.status != "published"
        if record.status == "skipped":  # built and failed variants are logged once, by build_and_publish
            logger.info("%s: up to date (another run published it)", v.id)
        records.append(record.model_dump(mode="json"))
    return records
