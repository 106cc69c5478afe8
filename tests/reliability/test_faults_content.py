"""Content identity (issue 12): fingerprints and counts follow what files hold.

Before: a base with 64 flipped bytes in its data region kept its fingerprint (only headers
were hashed), so after a repair the rerun said "up to date"; a corpus truncated while it was
counted gave a silently partial table, reused after the file was restored (counts were
keyed on path strings)."""

from __future__ import annotations

import os
import shutil

import pytest

from tasks.engine.checkpoint import content_id
from tasks.engine.errors import CorpusError
from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint
from tests import subjects


def test_digests_are_cached_by_stat_and_follow_content(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 5000)
    calls = []
    real = content_id.sha256_file
    monkeypatch.setattr(content_id, "sha256_file", lambda p: calls.append(p) or real(p))
    cache = tmp_path / "digests.json"
    d1 = content_id.file_digest(f, cache)
    assert content_id.file_digest(f, cache) == d1 and len(calls) == 1  # unchanged: not rehashed
    with open(f, "r+b") as fh:  # same size, new bytes
        fh.seek(100)
        fh.write(b"b" * 64)
    d2 = content_id.file_digest(f, cache)
    assert d2 != d1 and len(calls) == 2


def flip_data_bytes(folder, tensor="transformer.h.0.mlp.c_fc.weight"):
    info = LazyCheckpoint(folder).tensors[tensor]
    with open(info.file, "r+b") as fh:
        fh.seek(info.start + 8)
        orig = fh.read(64)
        fh.seek(info.start + 8)
        fh.write(bytes(b ^ 0x01 for b in orig))  # still finite floats: only the content changes
    return info.file, info.start + 8, orig


@pytest.mark.slow
def test_a_changed_then_repaired_base_rebuilds_its_variants(tmp_path, toy_model, prefect_harness):
    from flows.publish_all import publish_all

    base2 = tmp_path / "toy-b"
    shutil.copytree(toy_model, base2)
    manifest = subjects.make_manifest(tmp_path, (toy_model, base2), subsets=[["en"]], multiples=[8],
                                      base_models=[{"id": "toy", "source": {"local": str(toy_model)}, "license": "mit"}])
    first = publish_all(manifest=str(manifest))
    assert first["published"] == ["toy-en-v8"]
    fp = lambda: __import__("json").loads((tmp_path / "published/trimworks/toy-trimmed-en-v8/evaluation.json").read_text())["fingerprint"]
    fp_clean = fp()
    shard, offset, orig = flip_data_bytes(toy_model)
    corrupt = publish_all(manifest=str(manifest))
    assert corrupt["published"] == ["toy-en-v8"], corrupt  # the fingerprint followed the content
    assert fp() != fp_clean
    with open(shard, "r+b") as fh:  # repair
        fh.seek(offset)
        fh.write(orig)
    repaired = publish_all(manifest=str(manifest))
    assert repaired["published"] == ["toy-en-v8"], repaired  # not "up to date" with the corrupt build
    assert fp() == fp_clean
    assert publish_all(manifest=str(manifest))["skipped"] == ["toy-en-v8"]  # and stable afterwards


def fr_manifest(tmp_path, bases, lines):
    fr = tmp_path / "fr-corpus.txt"
    fr.write_text("\n".join(lines) + "\n")
    m = subjects.make_manifest(tmp_path, bases, lid={"enabled": False},
                               languages={"fr": {"corpora": [{"text": [str(fr)]}], "heldout": {"percent": 10}}},
                               subsets=[["fr"]], multiples=[8])
    from tasks.pipeline.manifest import load_manifest

    return load_manifest(m), fr



def test_a_truncated_or_missing_published_file_is_found_and_rebuilt(tmp_path, toy_model, prefect_harness):
    """"Up to date" means whole: a published shard cut short (or a file gone) makes `plan` say so
    and the next run rebuild the variant, byte-identical to before."""
    import hashlib

    from flows.publish_all import publish_all
    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.report.plan_report import plan_report

    manifest = subjects.make_manifest(tmp_path, (toy_model, toy_model), subsets=[["en"]], multiples=[8],
                                      base_models=[{"id": "toy", "source": {"local": str(toy_model)}, "license": "mit"}])
    assert publish_all(manifest=str(manifest))["published"] == ["toy-en-v8"]
    folder = tmp_path / "published" / "trimworks" / "toy-trimmed-en-v8"
    shard = folder / "model-vocab.safetensors"
    whole = hashlib.sha256(shard.read_bytes()).hexdigest()
    for damage in ("truncate", "delete"):
        if damage == "truncate":
            with open(shard, "r+b") as fh:
                fh.truncate(shard.stat().st_size // 2)
        else:
            (folder / "tokenizer.json").unlink()
        (status,) = plan_report(load_manifest(manifest), str(manifest)).statuses
        assert status.status == "missing" and "published files damaged" in (status.detail or ""), status
        assert publish_all(manifest=str(manifest))["published"] == ["toy-en-v8"]  # rebuilt, not "up to date"
        assert hashlib.sha256(shard.read_bytes()).hexdigest() == whole
        assert publish_all(manifest=str(manifest))["skipped"] == ["toy-en-v8"]

def test_counts_follow_corpus_content(tmp_path, bases):
    from tasks.engine.counting.tokens import read_counts
    from tasks.pipeline.corpus.counts_cache import ensure_counts

    lines = subjects.wordfreq_sentences("fr", 3000)
    m, fr = fr_manifest(tmp_path, bases, lines)
    tok = bases[0] / "tokenizer.json"
    full = ensure_counts(m, tok, "fr")
    fr.write_text("\n".join(lines[:500]) + "\n")  # same path, other bytes
    part = ensure_counts(m, tok, "fr")
    assert part != full and read_counts(part).lines < read_counts(full).lines
    fr.write_text("\n".join(lines) + "\n")  # restored: the full table is found again by content
    assert ensure_counts(m, tok, "fr") == full


def test_a_corpus_truncated_while_counted_is_an_error(tmp_path, bases, monkeypatch):
    from tasks.pipeline.corpus import chunk_cache, counts_cache

    lines = subjects.wordfreq_sentences("fr", 20000)
    m, fr = fr_manifest(tmp_path, bases, lines)
    real_stream = chunk_cache.train_stream  # read by chunk counting and direct counting alike

    def truncating_stream(corpora, stats=None):
        for i, line in enumerate(real_stream(corpora, stats)):
            if i == 1000:
                os.truncate(fr, fr.stat().st_size // 7)  # another process truncates the file
            yield line

    monkeypatch.setattr(chunk_cache, "train_stream", truncating_stream)
    with pytest.raises(CorpusError, match="changed while it was being read"):
        counts_cache.ensure_counts(m, bases[0] / "tokenizer.json", "fr")
    assert not list((tmp_path / "work").rglob("*.parquet"))  # no partial counts or chunk table kept
