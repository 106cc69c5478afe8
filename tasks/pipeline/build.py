"""One variant, start to finish: select -> rebuild tokenizer -> surgery -> verify -> card -> publish.

Pure Python (no Prefect): the flow maps this over variants. Any failure becomes a failed
VariantRecord with a located error, so one bad variant never stops the batch.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock

from tasks.engine.atomic import write_text_atomic
from tasks.engine.architectures import auto_class_name
from tasks.pipeline.card import render_card
from tasks.pipeline.variant_plot import plot_variant
from tasks.pipeline.counts_cache import read_heldout
from tasks.engine.errors import ExactnessError, TrimworksError
from tasks.engine.stopping import StopRequested, check_stop
from tasks.pipeline.record import VariantRecord, variant_metrics
from tasks.pipeline.manifest import GGUFSource, HubSource, LoadedManifest, LocalSource, Variant
from tasks.pipeline.publish import RECORD_NAME, LocalRegistry, Publisher
from tasks.engine.trim import apply_selection, select_for_model
from tasks.engine.verify import verify_exactness

log = logging.getLogger("trimworks.build")


def _base_link(m: LoadedManifest, base_id: str) -> tuple[str, str]:
    spec = m.base(base_id)
    src = spec.source
    if isinstance(src, HubSource):
        return src.hub, f"https://huggingface.co/{src.hub}/tree/{src.revision}"
    name = spec.display_name or base_id
    if "/" in name:  # a display name like org/model names its Hub page
        return name, f"https://huggingface.co/{name}"
    return name, src.local if isinstance(src, LocalSource) else src.gguf if isinstance(src, GGUFSource) else ""


def _corpora_lines(m: LoadedManifest, languages: tuple[str, ...]) -> list[str]:
    out = []
    for lang in languages:
        for c in m.spec.languages[lang].corpora:
            out.append(f"`{lang}`: {json.dumps(c.model_dump(exclude_none=True), sort_keys=True)}")
    lid = m.spec.lid
    out.append(f"fastText language-ID filter: {'on' if lid.enabled else 'off'} (min probability {lid.min_prob})")
    return out


def failed_record(variant: Variant, error: str, seconds: float | None = None) -> VariantRecord:
    return VariantRecord(variant_id=variant.id, base=variant.base, languages=list(variant.languages),
                         multiple=variant.multiple, repo_id=variant.repo_id, fingerprint=variant.fingerprint,
                         status="failed", error=error, seconds=seconds)


def skipped_record(publisher: Publisher, variant: Variant, location: str) -> VariantRecord:
    """A variant already published with this fingerprint: reuse its stored record."""
    if isinstance(publisher, LocalRegistry):
        try:
            data = json.loads((publisher.target(variant) / RECORD_NAME).read_text())
            return VariantRecord.model_validate({**data, "status": "skipped"})
        except (OSError, ValueError):
            pass
    return VariantRecord(variant_id=variant.id, base=variant.base, languages=list(variant.languages),
                         multiple=variant.multiple, repo_id=variant.repo_id, fingerprint=variant.fingerprint,
                         status="skipped", location=location)


def _remove_stale(builds: Path, variant_id: str) -> None:
    """Temp folders a killed run left for this variant (we hold its lock, so none is live)."""
    for suffix in ("tmp", "old", "replaced"):  # atomic_folder's and LocalRegistry.publish's temp names
        for p in builds.glob(f".{variant_id}.{suffix}-*"):
            shutil.rmtree(p, ignore_errors=True)


def build_and_publish(
    m: LoadedManifest,
    variant: Variant,
    base_dir: Path,
    counts: Mapping[str, Path],
    heldout: Mapping[str, Path],
    publisher: Publisher,
    location: str,
    plot_png: Path | None = None,
    force: bool = False,
) -> VariantRecord:
    """Build and publish under a per-variant lock: concurrent runs publish each variant once."""
    lock_path = m.work_dir / "locks" / f"{variant.id}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        if not force and publisher.published_fingerprint(variant) == variant.fingerprint:
            return skipped_record(publisher, variant, location)  # another run got here first
        _remove_stale(m.work_dir / "builds", variant.id)
        return _build_and_publish(m, variant, base_dir, counts, heldout, publisher, location, plot_png)


def _build_and_publish(
    m: LoadedManifest,
    variant: Variant,
    base_dir: Path,
    counts: Mapping[str, Path],
    heldout: Mapping[str, Path],
    publisher: Publisher,
    location: str,
    plot_png: Path | None,
) -> VariantRecord:
    start = time.perf_counter()
    staging = m.work_dir / "builds" / variant.id
    try:
        check_stop()
        selection = select_for_model(base_dir, [counts[lang] for lang in variant.languages], m.spec.selection, variant.multiple)
        trim = apply_selection(base_dir, selection, staging, overwrite=True,
                               provenance={"base_model": variant.base, "variant": variant.id, "fingerprint": variant.fingerprint})
        check_stop()
        report = verify_exactness(base_dir, staging, {lang: read_heldout(heldout[lang]) for lang in variant.languages},
                                  sample_lines=m.spec.verify_sample_lines)
        if not report.exact:
            bad = [(lang.language, lang.mismatches[:2]) for lang in report.languages if lang.mismatches]
            raise ExactnessError(f"{variant.id}: trimmed model is not exact (mismatching lines {bad}, "
                                 f"max abs diff {report.output_max_abs_diff})")
        record = VariantRecord(
            variant_id=variant.id, base=variant.base, languages=list(variant.languages), multiple=variant.multiple,
            repo_id=variant.repo_id, fingerprint=variant.fingerprint, status="published", location=location,
            **variant_metrics(trim, report),
        )
        plot_name = None
        if plot_png is not None and Path(plot_png).exists():
            if not plot_variant(Path(plot_png), record, staging / "coverage.png"):  # marks this variant
                shutil.copy2(plot_png, staging / "coverage.png")
            plot_name = "coverage.png"
        config = json.loads((base_dir / "config.json").read_text())
        base_name, base_link = _base_link(m, variant.base)
        card = render_card(
            record, base_name=base_name, base_link=base_link, license=m.base(variant.base).license,
            model_type=config.get("model_type", ""), is_causal=auto_class_name(config) == "AutoModelForCausalLM",
            policy=m.spec.selection.model_dump_json(exclude_defaults=True) or "{}",
            corpora=_corpora_lines(m, variant.languages), plot_file=plot_name,
            model_class=auto_class_name(config),
            sentence_transformers=(base_dir / "modules.json").is_file(),
            location=location if isinstance(publisher, LocalRegistry) else variant.repo_id,
        )
        write_text_atomic(staging / "README.md", str(card))
        record.seconds = round(time.perf_counter() - start, 2)
        write_text_atomic(staging / RECORD_NAME, record.model_dump_json(indent=2))
        check_stop()  # the last safe point: after it the variant is published whole
        record.location = publisher.publish(staging, variant)
        log.info("published %s: vocab %s -> %s, %.1f%% smaller, min coverage %s, in %.1f s -> %s", variant.id,
                 f"{record.vocab_before:,}", f"{record.vocab_after:,}", record.size_reduction_pct or 0,
                 f"{min(f.coverage for f in record.fidelity.values()):.1%}" if record.fidelity else "–",
                 time.perf_counter() - start, record.location)
        return record
    except StopRequested:
        shutil.rmtree(staging, ignore_errors=True)  # a stop is not a failure: no record, nothing left
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, the batch goes on
        shutil.rmtree(staging, ignore_errors=True)
        detail = str(exc) if isinstance(exc, TrimworksError) else f"{type(exc).__name__}: {exc}"
        log.error("variant %s failed: %s", variant.id, detail)
        log.debug("%s", traceback.format_exc())
        return failed_record(variant, detail, round(time.perf_counter() - start, 2))
