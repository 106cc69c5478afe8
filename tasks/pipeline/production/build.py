"""One variant, start to finish: select -> rebuild tokenizer -> surgery -> verify -> card -> publish.

Pure Python (no Prefect): the flow maps this over variants. Any failure becomes a failed
VariantRecord with a located error, so one bad variant never stops the batch.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import shutil
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path

from filelock import FileLock

from tasks.engine.runtime.atomic import flush_in_background, write_text_atomic
from tasks.pipeline.evaluation.benchmark_text import udhr_lines
from tasks.pipeline.evaluation.ui_text import ui_lines
from tasks.pipeline.report.card import corpora_lines, variant_card
from tasks.pipeline.corpus.counts_cache import read_heldout
from tasks.engine.errors import ExactnessError, SelectionError, TrimworksError
from tasks.engine.runtime.heap import release_free_memory
from tasks.engine.checkpoint.guard import check_tensor_names
from tasks.engine.runtime.redact import redact
from tasks.pipeline.production.preflight import output_error_message
from tasks.pipeline.evaluation.realtext import benchmark_labels, counting_corpus, measured_on, ui_labels
from tasks.pipeline.report.record import LanguageScore, VariantRecord, variant_metrics
from tasks.pipeline.manifest import LoadedManifest, Variant, fingerprint_fields, fingerprint_parts, resolved_keep_texts, spec_hash
from tasks.engine.checkpoint.architectures import load_rules
from tasks.pipeline.report.variant_plot import plot_variant
from tasks.engine.runtime.stopping import StopRequested, check_stop
from tasks.pipeline.publish.targets import RECORD_NAME, LocalRegistry, Publisher, manifest_owner, published_files
from tasks.pipeline.production.base_models import DIGEST_CACHE, base_identity
from tasks.pipeline.production.bodies import base_body, base_sequences_dir
from tasks.engine.runtime.stages import StageClock
from tasks.engine.verify.fitness import fitness
from tasks.engine.verify.loss import texts_loss
from tasks.pipeline.corpus.identity import corpus_content_key
from tasks.engine.trim import apply_selection, select_for_model
from tasks.engine.verify.proof import prove_variant
from tasks.engine.verify.outputs import ExactnessReport, add_chat_check, verify_exactness
from tasks.pipeline.production.checks import base_weight_fields, loss_skipped_reason, output_check, proof_fields

LOSS_DTYPE = "float32"  # a loss is a measurement, not a proof: float64 would double its cost for nothing

log = logging.getLogger("trimworks.build")


def record_of(variant: Variant, status: str, **fields) -> VariantRecord:
    """A variant's record: its identity from the Variant, the rest from `fields`."""
    return VariantRecord(variant_id=variant.id, base=variant.base, languages=list(variant.languages),
                         multiple=variant.multiple, repo_id=variant.repo_id, fingerprint=variant.fingerprint,
                         status=status, **fields)


def raise_unless_exact(variant: Variant, report: ExactnessReport) -> None:
    if not report.exact:
        bad = [(lang.language, lang.mismatches[:2]) for lang in report.languages if lang.mismatches]
        raise ExactnessError(f"{variant.id}: trimmed model is not exact (mismatching lines {bad}, "
                             f"max abs diff {report.output_max_abs_diff})")


def failed_record(variant: Variant, error: str, seconds: float | None = None, stage: str | None = None) -> VariantRecord:
    return record_of(variant, "failed", error=redact(error), seconds=seconds, failed_stage=stage)


def skipped_record(publisher: Publisher, variant: Variant) -> VariantRecord:
    """A variant already published with this fingerprint: reuse its stored record."""
    if isinstance(publisher, LocalRegistry):
        try:
            data = json.loads((publisher.target(variant) / RECORD_NAME).read_text())
            return VariantRecord.model_validate({**data, "status": "skipped"})
        except (OSError, ValueError):
            pass
    return record_of(variant, "skipped", location=publisher.location(variant))


def _fingerprint_parts(m: LoadedManifest, variant: Variant, base_dir: Path) -> dict[str, str]:
    """The variant's fingerprint field by field (empty if they do not hash to its fingerprint)."""
    corpus_content = {lang: corpus_content_key(m, lang) for lang in variant.languages}
    fields = fingerprint_fields(m, m.base(variant.base), variant.languages, variant.multiple,
                                base_identity(base_dir, m.work_dir / DIGEST_CACHE), corpus_content=corpus_content)
    return fingerprint_parts(fields) if spec_hash(fields) == variant.fingerprint else {}


@contextlib.contextmanager
def staging_folder(m: LoadedManifest, publisher: Publisher, variant: Variant) -> Iterator[Path]:
    """The folder one build of `variant` is staged in (called under the variant's lock): the
    work folder's `builds/<variant>` (a killed run's leftovers removed first), or, when that is
    on another filesystem than the registry, a folder this process claims in the registry's
    `.staging` (LocalRegistry.claim_staging), which no other run clears while this one lives."""
    builds = m.work_dir / "builds"
    if isinstance(publisher, LocalRegistry) and publisher.staging_root(builds) != builds:
        with publisher.claim_staging(variant) as folder:
            yield folder
        return
    _remove_stale(builds, variant.id)
    yield builds / variant.id


def check_trims(selection, variant: Variant) -> None:
    """A multiple that rounds the kept set up to the whole vocabulary would publish an
    untrimmed copy under a trimmed name: an error naming the base."""
    size, base_vocab = selection.size, selection.base_vocab_size
    if size >= base_vocab and (selection.n_rounding > 0 or variant.multiple >= base_vocab):
        raise SelectionError(
            f"{variant.id}: multiple {variant.multiple} rounds the kept vocabulary up to {size:,}, not below base model "
            f"{variant.base!r}'s {base_vocab:,} tokens: it would not trim. Use a multiple well below {base_vocab:,} (e.g. 8 or 64)"
        )


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
    plot_png: Path | None = None,
    force: bool = False,
    carrier: str | None = None,
) -> VariantRecord:
    """Build and publish under a per-variant lock: concurrent runs publish each variant once.

    `carrier`: the variant carrying this base's output comparison in the run (checks.output_check)."""
    lock_path = m.work_dir / "locks" / f"{variant.id}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        conflict = publisher.conflict(variant) if isinstance(publisher, LocalRegistry) else None
        if conflict:  # another manifest's variant, or a user's folder: left as it is
            log.error("variant %s not published: %s", variant.id, conflict)
            return failed_record(variant, conflict)
        if not force and publisher.published_fingerprint(variant) == variant.fingerprint:
            return skipped_record(publisher, variant)  # another run got here first
        try:
            with staging_folder(m, publisher, variant) as staging:
                return _build_and_publish(m, variant, base_dir, counts, heldout, publisher, plot_png, carrier, staging)
        finally:
            release_free_memory()  # a long run creeps less (tasks/engine/runtime/heap.py)


def _build_and_publish(
    m: LoadedManifest,
    variant: Variant,
    base_dir: Path,
    counts: Mapping[str, Path],
    heldout: Mapping[str, Path],
    publisher: Publisher,
    plot_png: Path | None,
    carrier: str | None,
    staging: Path,
) -> VariantRecord:
    start = time.perf_counter()
    clock = StageClock()  # thread time per stage, in the record (runtime/stages.py)
    try:
        check_stop()
        with clock.stage("select"):
            rules = load_rules([m.spec.architectures] if m.spec.architectures else [])
            selection = select_for_model(base_dir, [counts[lang] for lang in variant.languages], m.spec.selection,
                                         variant.multiple, rules=rules, keep_texts=resolved_keep_texts(m),
                                         languages=variant.languages)
            check_trims(selection, variant)
            check_tensor_names(base_dir)  # after the folder checks (pickles, remote code) in select_for_model
        # Staging is never trusted after a crash (rebuilt, see _remove_stale): not fsynced here.
        # Publishing fsyncs it before its rename; the disk writes start now, behind the proof.
        layout = m.spec.output.layout
        with clock.stage("body"):  # written and proved once per base; later variants only look it up
            body = base_body(m.work_dir, publisher, base_dir, rules) if layout == "shared" else None
        trim = apply_selection(base_dir, selection, staging, overwrite=True,
                               provenance={"base_model": variant.base, "variant": variant.id, "fingerprint": variant.fingerprint},
                               rules=rules, remember_base_digests=True,  # the proof below then reads only the variant
                               durable=False, layout=layout, body=body, body_mode=m.spec.publish.body, clock=clock)
        flushing = flush_in_background(staging) if isinstance(publisher, LocalRegistry) else None
        check_stop()
        texts = {lang: read_heldout(heldout[lang]) for lang in variant.languages}
        benchmark_texts = {f"benchmark:{lang}": lines for lang in variant.languages if (lines := udhr_lines(lang))}
        ui_texts = {f"ui:{lang}": lines for lang in variant.languages if (lines := ui_lines(lang))}
        # Every variant, constant memory; kept ids from trimworks.json. Check (d) runs on the
        # held-out split and on the real text of two domains in each language: the UDHR (legal
        # prose) and CLDR (user-interface strings).
        with clock.stage("prove"):
            proof = prove_variant(base_dir, staging, {**texts, **benchmark_texts, **ui_texts}, body=body, rules=rules)
        if not proof.passed:
            raise ExactnessError(f"{variant.id}: the structural proof failed: {proof.failures()[:3]}")
        check = output_check(m.spec.verify, variant, base_dir, m.spec.verify_sample_lines, carrier)
        compare, why = check.compare, check.why
        if compare:
            with clock.stage("compare"):  # outputs against the base: vouches for the base's other variants
                report = verify_exactness(base_dir, staging, texts, sample_lines=m.spec.verify_sample_lines,
                                          tolerance=check.tolerance, compute_dtype=check.dtype, rules=rules)
                if report.compute_note:  # the model's kernels refused float64: the record says what was compared
                    why = f"{why}; {report.compute_note}, tolerance {report.tolerance:g}"
                raise_unless_exact(variant, report)
        loss, loss_note = {}, loss_skipped_reason(m.spec.verify, base_dir)
        if loss_note is None:  # what the trim costs where it does not cover the text, on every variant
            with clock.stage("loss"):
                measured = {**{"udhr:" + k.removeprefix("benchmark:"): v for k, v in benchmark_texts.items()},
                            **{f"heldout:{lang}": v for lang, v in texts.items()}}  # not the CLDR strings: a third of its cost
                # The proof passed: the base's hidden states at the variant's ids are the variant's, shared by its siblings.
                try:
                    loss = texts_loss(base_dir, staging, measured, m.spec.verify.loss_sample, dtype=LOSS_DTYPE,
                                      through_base=True, cache_dir=base_sequences_dir(m.work_dir, base_dir))
                except (StopRequested, OSError):
                    raise  # a stop, or a full disk: not the measurement's fault
                except Exception as exc:  # noqa: BLE001 - a measurement, not a check: an exact variant is still published
                    loss_note = f"the measurement failed ({redact(f'{type(exc).__name__}: {exc}')[:300]})"
                    log.warning("%s: loss %s", variant.id, loss_note)
        with clock.stage("checks"):
            if not compare:  # the proof stands for outputs; the chat check still runs on every variant
                report = ExactnessReport(languages=[f for f in proof.languages if f.language in texts])
                add_chat_check(report, base_dir, staging, texts, proof.covered_lines(list(texts)))
                raise_unless_exact(variant, report)
            vacuous = report.vacuous_reason(outputs_expected=compare and m.spec.verify_sample_lines > 0)
            if vacuous:
                raise ExactnessError(f"{variant.id}: evaluation proves nothing: {vacuous}")
        with clock.stage("card"):  # record, plot, model card
            # The proof measured the real texts already (and failed on any covered line that differs).
            benchmark = measured_on(proof.languages, "benchmark:")
            ui_text = measured_on(proof.languages, "ui:")
            corpus_label, synthetic = counting_corpus(m, variant.languages)
            verdict = fitness(benchmark, m.spec.verify.fitness) if benchmark else None
            record = record_of(variant, "published", location=publisher.location(variant),
                               fingerprint_parts=_fingerprint_parts(m, variant, base_dir), **variant_metrics(trim, report),
                               **proof_fields(proof, compare, why), **base_weight_fields(base_dir),
                               benchmark={lang: LanguageScore.model_validate(f, from_attributes=True) for lang, f in benchmark.items()},
                               benchmark_text=benchmark_labels(variant.languages), counting_corpus=corpus_label,
                               ui_text={lang: LanguageScore.model_validate(f, from_attributes=True) for lang, f in ui_text.items()},
                               ui_text_label=ui_labels(variant.languages),
                               counting_synthetic=synthetic, fit=verdict.fit if verdict else None,
                               fitness_failures=verdict.failures if verdict else [], loss=loss, loss_note=loss_note or "",
                               owner=manifest_owner(m.path, m.work_dir))
            plot_name = None
            if plot_png is not None and Path(plot_png).exists():
                if not plot_variant(Path(plot_png), record, staging / "coverage.png"):  # marks this variant
                    shutil.copy2(plot_png, staging / "coverage.png")
                plot_name = "coverage.png"
            corpora = corpora_lines({lang: m.spec.languages[lang] for lang in variant.languages}, m.spec.lid)
            card = variant_card(record, m.base(variant.base), m.spec.selection, corpora,
                                json.loads((base_dir / "config.json").read_text()), plot_name, base_dir,
                                location=variant.repo_id,  # a registry folder is <registry>/<repo id>
                                registry=publisher.root.resolve().name if isinstance(publisher, LocalRegistry) else None)
            write_text_atomic(staging / "README.md", str(card))
        record.seconds = round(time.perf_counter() - start, 2)
        record.stage_seconds = clock.rounded()
        record.files = published_files(staging)  # a later run or `plan` finds a truncated or missing file
        write_text_atomic(staging / RECORD_NAME, record.model_dump_json(indent=2))
        check_stop()  # the last safe point: after it the variant is published whole
        if flushing is not None:
            flushing.result()
        with clock.stage("publish"):
            record.location = publisher.publish(staging, variant)
        record.stage_seconds = clock.rounded()  # the returned record also counts publishing
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
        detail = redact(str(exc) if isinstance(exc, TrimworksError) else f"{type(exc).__name__}: {exc}")
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG):
            detail = output_error_message(exc, staging)
        log.error("variant %s failed: %s", variant.id, detail)
        log.debug("%s", traceback.format_exc())
        return failed_record(variant, detail, round(time.perf_counter() - start, 2), stage=clock.current)
