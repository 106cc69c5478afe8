"""Durable publishing (issue 12). A power loss cannot be simulated here, so the order of the
calls that make a publish durable is checked: every file of a variant is fsynced before the
rename that moves its folder into the registry, and the registry folder after it; counts
tables and the catalog get file fsync -> rename -> parent fsync. Before, the weights were
never fsynced before the folder rename."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.engine.counting.tokens import count_tokens, write_counts
from tasks.engine.selection.policy import SelectionPolicy
from tasks.engine.trim import trim_model
from tasks.pipeline.manifest import Variant
from tasks.pipeline.publish.targets import LocalRegistry


@pytest.fixture
def trace(monkeypatch):
    calls: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        calls.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def index_of(calls, entry) -> int:
    return next(i for i, c in enumerate(calls) if c == entry)


def test_variant_files_are_fsynced_before_the_rename_and_the_parent_after(tmp_path, toy_model, toy_lines, trace):
    counts = write_counts(count_tokens(toy_model / "tokenizer.json", toy_lines[:300], "en"), toy_model / "tokenizer.json",
                          tmp_path / "en.parquet")
    staging = tmp_path / "builds" / "v"
    trim_model(toy_model, [counts], SelectionPolicy(), 8, staging)
    (staging / "README.md").write_text("card")  # written later by the pipeline, like the card
    registry = LocalRegistry(tmp_path / "published")
    variant = Variant(id="v", base="toy", languages=("en",), multiple=8, repo_id="org/v", fingerprint="f")
    trace.clear()
    target = Path(registry.publish(staging, variant))
    rename = index_of(trace, ("replace", str(staging.resolve()), str(target.resolve())))
    synced_before = {c[1] for c in trace[:rename] if c[0] == "fsync"}
    files = [p for p in target.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)
    for p in files:
        assert str((staging / p.relative_to(target)).resolve()) in synced_before, f"{p.name} not fsynced before the rename"
    assert str(staging.resolve()) in synced_before  # the folder's own entries too
    assert ("fsync", str(target.parent.resolve())) in trace[rename + 1:]  # the rename itself made durable


def test_trimmed_folder_and_small_files_are_durable(tmp_path, toy_model, toy_lines, trace):
    from tasks.pipeline.report.catalog import write_catalog

    out = tmp_path / "out"
    counts = write_counts(count_tokens(toy_model / "tokenizer.json", toy_lines[:300], "en"), toy_model / "tokenizer.json",
                          tmp_path / "en.parquet")
    rename = index_of(trace, next(c for c in trace if c[0] == "replace" and c[2] == str(counts.resolve())))
    assert trace[rename - 1][0] == "fsync" and trace[rename + 1] == ("fsync", str(tmp_path.resolve()))
    trace.clear()
    trim_model(toy_model, [counts], SelectionPolicy(), 8, out)
    rename = index_of(trace, next(c for c in trace if c[0] == "replace" and c[2] == str(out.resolve())))
    tmp = Path(trace[rename][1])
    synced = {c[1] for c in trace[:rename] if c[0] == "fsync"}
    assert str(tmp / "model.safetensors") in synced and str(tmp / "tokenizer.json") in synced
    assert ("fsync", str(tmp_path.resolve())) in trace[rename + 1:]
    trace.clear()
    write_catalog([], tmp_path / "published", {})
    for name in ("catalog.parquet", "catalog.md"):
        i = index_of(trace, next(c for c in trace if c[0] == "replace" and c[2].endswith(name)))
        assert trace[i - 1] == ("fsync", trace[i][1]) and trace[i + 1] == ("fsync", str((tmp_path / "published").resolve()))


def test_the_pipeline_publishes_durably_with_staging_flushed_behind_the_proof(tmp_path, bases, trace):
    """build_and_publish writes staging without waiting for the disk (its fsyncs run on a
    helper thread behind the proof); what reaches the registry is still fsynced file by file
    before the publishing rename, and the registry folder after it."""
    from tasks.pipeline.production.build import build_and_publish
    from tasks.pipeline.production.checks import start_run
    from tasks.pipeline.corpus.counts_cache import ensure_counts, ensure_heldout
    from tasks.pipeline.manifest import expand, load_manifest
    from tasks.pipeline.production.base_models import materialize_base
    from tests import subjects

    m = load_manifest(subjects.make_manifest(tmp_path, bases, subsets=[["en"]], multiples=[8], verify={"outputs": "never"}))
    start_run()
    (v,) = [v for v in expand(m) if v.base == "toy-a"]
    base_dir = materialize_base(m, m.base(v.base))
    counts = {"en": ensure_counts(m, base_dir / "tokenizer.json", "en")}
    registry = LocalRegistry(m.output_dir)
    trace.clear()
    rec = build_and_publish(m, v, base_dir, counts, {"en": ensure_heldout(m, "en")}, registry)
    assert rec.status == "published", rec.error
    target = Path(rec.location).resolve()
    rename = index_of(trace, next(c for c in trace if c[0] == "replace" and c[2] == str(target)))
    staging = Path(trace[rename][1])
    synced_before = {c[1] for c in trace[:rename] if c[0] == "fsync"}
    for p in (p for p in target.rglob("*") if p.is_file()):
        assert str(staging / p.relative_to(target)) in synced_before, f"{p.name} not fsynced before the rename"
    assert ("fsync", str(target.parent)) in trace[rename + 1:]


def test_a_staging_folder_is_written_whole_without_fsync_and_a_vanished_one_flushes_quietly(tmp_path, trace):
    from tasks.engine.runtime.atomic import atomic_folder, flush_in_background

    out = tmp_path / "staging" / "v"
    with atomic_folder(out, durable=False) as tmp:
        (tmp / "model.safetensors").write_bytes(b"x" * 1000)
    assert (out / "model.safetensors").read_bytes() == b"x" * 1000
    assert not [c for c in trace if c[0] == "fsync"]  # nothing waited for the disk
    assert flush_in_background(out).result() is None
    assert ("fsync", str((out / "model.safetensors").resolve())) in trace
    assert flush_in_background(tmp_path / "gone").result() is None  # removed meanwhile: nothing raised
