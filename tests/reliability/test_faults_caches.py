"""Caches carry their own digest (issue 28). Before: one flipped value in a counts table that
still decoded rebuilt a variant keeping other tokens under the same fingerprint; a flipped
token id gave a bare IndexError; a truncated table was named but never made again; a
converted base (GGUF) whose bytes changed on disk was taken as a new base, and the good
published variant was rebuilt from it and replaced."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.engine.counting.tokens import read_counts
from tasks.engine.errors import CorpusError
from tasks.engine.runtime.sealed import FILE_SEAL_SUFFIX, folder_seal_problem
from tests import subjects
from tests.reliability.test_faults_content import flip_data_bytes, fr_manifest


def rewrite(path: Path, change) -> None:
    """A damaged table that still decodes: same schema and metadata, one value changed."""
    table = pq.read_table(path)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    change(columns)
    pq.write_table(pa.table(columns, schema=table.schema), path)


@pytest.fixture
def counted(tmp_path, bases):
    from tasks.pipeline.corpus.counts_cache import ensure_counts

    m, _ = fr_manifest(tmp_path, bases, subjects.wordfreq_sentences("fr", 3000))
    tok = bases[0] / "tokenizer.json"
    path = ensure_counts(m, tok, "fr")
    return m, tok, path, read_counts(path).counts.copy()


def recounted(m, tok, caplog) -> Path:
    from tasks.pipeline.corpus.counts_cache import ensure_counts

    with caplog.at_level(logging.WARNING, logger="trimworks.counts"):
        return ensure_counts(m, tok, "fr")


def test_a_counts_table_with_a_changed_value_that_decodes_is_made_again(counted, caplog):
    m, tok, path, whole = counted

    def bump(cols):
        cols["count"][0] += 1000  # a bit flip in a count: still a valid table

    rewrite(path, bump)
    assert not np.array_equal(read_counts(path).counts, whole)
    assert recounted(m, tok, caplog) == path
    assert np.array_equal(read_counts(path).counts, whole)  # not another kept set under the same fingerprint
    assert "is damaged" in caplog.text and str(path) in caplog.text


def test_a_flipped_token_id_is_named_not_an_index_error(counted, caplog):
    m, tok, path, whole = counted
    vocab = whole.size

    def flip(cols):
        cols["token_id"][0] = vocab + 5

    rewrite(path, flip)
    with pytest.raises(CorpusError, match=f"token id {vocab + 5} is outside the vocabulary") as exc:
        read_counts(path)
    assert str(path) in str(exc.value)
    assert recounted(m, tok, caplog) == path and np.array_equal(read_counts(path).counts, whole)


def test_a_truncated_counts_table_is_made_again(counted, caplog):
    m, tok, path, whole = counted
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    assert recounted(m, tok, caplog) == path and np.array_equal(read_counts(path).counts, whole)


def test_a_damaged_chunk_table_is_made_again(counted, caplog):
    from tasks.engine.counting.chunks import read_chunk_counts
    from tasks.pipeline.corpus.chunk_cache import chunks_path

    m, tok, path, whole = counted
    chunks = chunks_path(m, "fr")
    before = read_chunk_counts(chunks)

    def bump(cols):
        cols["count"][0] += 7

    rewrite(chunks, bump)
    path.unlink()  # the next count reads the chunk table again
    assert recounted(m, tok, caplog) == path and np.array_equal(read_counts(path).counts, whole)
    assert "chunk table of fr" in caplog.text
    again = read_chunk_counts(chunks)
    assert again.chunks == before.chunks and again.distinct == before.distinct


def test_a_table_of_an_older_trimworks_is_adopted_once_it_decodes(counted, monkeypatch):
    from tasks.pipeline.corpus import counts_cache

    m, tok, path, whole = counted
    Path(str(path) + FILE_SEAL_SUFFIX).unlink()
    monkeypatch.setattr(counts_cache, "count_language", lambda *a, **k: pytest.fail("a whole table was recounted"))
    assert counts_cache.ensure_counts(m, tok, "fr") == path
    assert Path(str(path) + FILE_SEAL_SUFFIX).is_file()  # sealed now: later damage shows


def test_damaged_caches_are_planned_again_and_held_out_text_is_remade(counted, caplog):
    """`plan` counts a damaged table as one to make again (a damaged cache is not "there"); the
    held-out text carries its digest too."""
    from tasks.pipeline.corpus.counts_cache import ensure_heldout
    from tasks.pipeline.report.plan_report import plan_report

    m, tok, path, whole = counted
    heldout = ensure_heldout(m, "fr")
    text = heldout.read_text()
    plan = lambda: plan_report(m, str(m.path))
    before = plan()
    assert not any(lang == "fr" for _, lang in before.to_count) and "fr" not in before.heldout_to_make
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    heldout.write_text(text.replace("\n", " ", 3))  # lines run together: still text
    after = plan()
    assert any(lang == "fr" for _, lang in after.to_count) and "fr" in after.heldout_to_make
    with caplog.at_level(logging.WARNING, logger="trimworks.counts"):
        assert ensure_heldout(m, "fr") == heldout
    assert heldout.read_text() == text and "held-out text of fr" in caplog.text


def fake_gguf(tmp_path: Path, toy_model: Path, calls: list):
    """A stand-in GGUF file and converter (the real one takes minutes): what is tested is
    the conversion cache around it, not the conversion."""
    gguf = tmp_path / "toy.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 8)

    def convert(src, out, dtype="bfloat16"):
        calls.append(out)
        shutil.copytree(toy_model, out)
        info = {"format": "gguf", "file": Path(src).name, "sha256": hashlib.sha256(Path(src).read_bytes()).hexdigest(),
                "quantization": "F32", "tensor_types": {"F32": 1}, "dtype": dtype}
        (out / "trimworks_source.json").write_text(json.dumps(info))
        return out

    return gguf, convert


@pytest.mark.slow
def test_a_damaged_conversion_cache_is_converted_again_not_a_new_base(tmp_path, toy_model, prefect_harness, monkeypatch):
    from flows.publish_all import publish_all
    from tasks.pipeline.production import base_models

    calls: list = []
    gguf, convert = fake_gguf(tmp_path, toy_model, calls)
    monkeypatch.setattr(base_models, "convert_gguf", convert)
    manifest = subjects.make_manifest(tmp_path, (toy_model, toy_model), subsets=[["en"]], multiples=[8],
                                      base_models=[{"id": "conv", "source": {"gguf": str(gguf), "dtype": "float32"},
                                                    "license": "mit"}])
    assert publish_all(manifest=str(manifest))["published"] == ["conv-en-v8"]
    (converted,) = calls
    assert folder_seal_problem(converted) is None
    published = tmp_path / "published" / "trimworks" / "conv-trimmed-en-v8"
    before = {p.name: p.read_bytes() for p in published.iterdir() if p.is_file()}

    flip_data_bytes(converted)  # the cache's bytes change; the GGUF file does not
    assert "digest mismatch" in (folder_seal_problem(converted) or "")
    summary = publish_all(manifest=str(manifest))
    assert summary["skipped"] == ["conv-en-v8"] and not summary["published"], summary  # no rebuild from the damage
    assert len(calls) == 2 and folder_seal_problem(converted) is None  # converted again, sealed again
    assert {p.name: p.read_bytes() for p in published.iterdir() if p.is_file()} == before
