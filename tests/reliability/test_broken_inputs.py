"""A broken input fails its own variants with a located error; the others publish, and the
catalog and exit code say which failed."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from tests import subjects

pytestmark = pytest.mark.slow


def test_broken_inputs_never_stop_the_batch(tmp_path, bases, toy_model_session):
    good, _ = bases
    corrupt = tmp_path / "corrupt-shard"
    shutil.copytree(toy_model_session, corrupt)
    shard = corrupt / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    truncated = tmp_path / "truncated-tokenizer"
    shutil.copytree(toy_model_session, truncated)
    tj = truncated / "tokenizer.json"
    tj.write_text(tj.read_text()[:5000])
    bad_utf8 = tmp_path / "de.txt"
    bad_utf8.write_bytes(b"Guten Morgen, wie geht es dir?\n" * 50 + b"Kaputt \xc3\x28 hier\n")
    empty = tmp_path / "it.txt"
    empty.write_text("\n\n")

    manifest = subjects.make_manifest(
        tmp_path, bases,
        base_models=[
            {"id": "good", "source": {"local": str(good)}, "license": "mit"},
            {"id": "corrupt", "source": {"local": str(corrupt)}, "license": "mit"},
            {"id": "truncated", "source": {"local": str(truncated)}, "license": "mit"},
        ],
        languages={
            "en": {"corpora": [{"wordfreq": {"lines": 300, "words": 600}}]},
            "de": {"corpora": [{"text": [str(bad_utf8)]}]},
            "it": {"corpora": [{"text": [str(empty)]}]},
        },
        subsets=[["en"], ["de"], ["it"]], multiples=[8], lid={"enabled": False},
    )
    rc, out, err = subjects.run_cli(["publish-all", str(manifest)], tmp_path)
    assert rc == 1, err[-3000:]
    catalog = {r["variant_id"]: r for r in pq.read_table(tmp_path / "published" / "catalog.parquet").to_pylist()}
    assert len(catalog) == 9
    assert catalog["good-en-v8"]["status"] == "published"
    failed = {k: v["error"] for k, v in catalog.items() if v["status"] == "failed"}
    assert set(failed) == set(catalog) - {"good-en-v8"}, failed
    # Each error names what is broken and where.
    assert "corrupt-shard/model.safetensors" in failed["corrupt-en-v8"] and "truncated or corrupt" in failed["corrupt-en-v8"]
    assert "truncated-tokenizer/tokenizer.json" in failed["truncated-en-v8"]
    assert "de.txt:51: invalid UTF-8" in failed["good-de-v8"]
    assert "languages.it" in failed["good-it-v8"] and "no text left to count" in failed["good-it-v8"]
    for vid in failed:
        assert f"FAILED {vid}" in err
    assert (tmp_path / "published" / "trimworks" / "good-trimmed-en-v8" / "model-vocab.safetensors").exists()
    assert [p.name for p in (tmp_path / "published" / "trimworks").iterdir()] == ["good-trimmed-en-v8"]
