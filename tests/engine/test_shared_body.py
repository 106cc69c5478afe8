"""The shared layout: one body per base, byte-identical in every variant, proved once.

Each subject is a tiny random model of the architecture table (a tied and an untied decoder,
an encoder, an encoder-decoder), trimmed twice into the shared layout over one body store:
every variant loads with its own class and computes the base's outputs on covered text, its
body files are the store's (hard links), and the sharing is safe — a damaged vocabulary shard
fails only its variant, a rebuilt variant leaves its sibling's bytes alone, and a damaged body
is caught by every variant's proof and rebuilt from the base.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T
from safetensors import safe_open

from tasks.engine.checkpoint.body import (BODY_PREFIX, VOCAB_SHARD, Body, body_intact, body_tensors, ensure_body,
                                          shard_plan)
from tasks.engine.checkpoint.safetensors_io import INDEX_NAME, LazyCheckpoint
from tasks.engine.counting.tokens import load_plain_tokenizer
from tasks.engine.selection.policy import SelectionPolicy
from tasks.engine.trim import apply_selection, select_for_model
from tasks.engine.verify.outputs import load_kept_ids, verify_exactness
from tasks.engine.verify.proof import prove_variant
from tests.engine.test_architectures import BY_NAME, build_subject, corpus, tokenizer_folders  # noqa: F401 (fixtures)

SUBJECTS = {"GPT-2": "tied decoder", "OLMo 2": "untied decoder", "BERT": "encoder", "BART": "encoder-decoder"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _variants(base: Path, counts: Path, store: Path, root: Path, multiples=(8, 64)) -> tuple[Body, dict[int, Path]]:
    body = ensure_body(base, store, body_tensors(base), identity="test-base")
    out = {}
    for multiple in multiples:
        selection = select_for_model(base, [counts], SelectionPolicy(min_count=2), multiple)
        out[multiple] = apply_selection(base, selection, root / f"v{multiple}", layout="shared", body=body,
                                        remember_base_digests=True).out_dir
    return body, out


@pytest.fixture
def subject(tokenizer_folders, corpus, tmp_path, request):  # noqa: F811
    def make(name: str):
        arch = BY_NAME[name]
        tok_dir, ids, counts = tokenizer_folders(arch.tokenizer, request)
        return build_subject(arch, tmp_path / f"base-{name.replace(' ', '_')}", tok_dir, ids), counts
    return make


@pytest.mark.parametrize("name", list(SUBJECTS))
def test_variants_share_one_proved_body_and_stay_exact(name, subject, corpus, tmp_path):  # noqa: F811
    base, counts = subject(name)
    body, variants = _variants(base, counts, tmp_path / "bodies", tmp_path)
    assert body.files and all(f.startswith(BODY_PREFIX) for f in body.files)
    for multiple, folder in variants.items():
        index = json.loads((folder / INDEX_NAME).read_text())
        assert set(index["weight_map"].values()) == {*body.files, VOCAB_SHARD}
        for f in body.files:  # the store's file itself: one inode, however many variants
            assert (folder / f).stat().st_ino == body.path(f).stat().st_ino
            assert _sha(folder / f) == _sha(body.path(f))
        # Loads with safetensors' own reader and with the model's own class.
        for shard in {*body.files, VOCAB_SHARD}:
            with safe_open(str(folder / shard), framework="pt") as fh:
                assert all(fh.get_tensor(k) is not None for k in fh.keys())
        config = json.loads((folder / "config.json").read_text())
        cls = getattr(T, config["architectures"][0])
        cls.from_pretrained(str(folder), dtype=torch.float64)
        report = verify_exactness(base, folder, {"en": corpus["heldout"]}, sample_lines=3, max_length=24)
        assert report.exact and report.output_max_abs_diff is not None and report.output_max_abs_diff <= 1e-9
        assert report.languages[0].covered_lines > 0
        with_body = prove_variant(base, folder, {"en": corpus["heldout"][:20]}, body=body)
        assert with_body.passed, with_body.failures()
        assert with_body.body_digest == body.digest and body.digest in with_body.checks[2].detail
        streamed = prove_variant(base, folder, {"en": corpus["heldout"][:20]})  # no body given: every tensor read
        assert streamed.passed and with_body.bytes_read < streamed.bytes_read
    a, b = (LazyCheckpoint(v) for v in variants.values())
    assert {n: t.file.name for n, t in a.tensors.items()} == {n: t.file.name for n, t in b.tensors.items()}


def _load_logits(folder: Path, line: str) -> torch.Tensor:
    config = json.loads((folder / "config.json").read_text())
    model = getattr(T, config["architectures"][0]).from_pretrained(str(folder), dtype=torch.float64).eval()
    ids = torch.tensor([load_plain_tokenizer(folder / "tokenizer.json").encode(line).ids[:16]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def test_untied_decoder_logits_equal_the_base_on_kept_ids(subject, corpus, tmp_path):
    base, counts = subject("OLMo 2")
    _, variants = _variants(base, counts, tmp_path / "bodies", tmp_path, multiples=(8,))
    folder = variants[8]
    kept = torch.tensor(load_kept_ids(folder))
    base_tok, kept_set = load_plain_tokenizer(base / "tokenizer.json"), set(kept.tolist())
    line = next(x for x in corpus["heldout"] if set(base_tok.encode(x).ids) <= kept_set)
    assert torch.equal(_load_logits(folder, line), _load_logits(base, line)[:, kept])


def test_damaged_vocab_shard_fails_only_its_variant(subject, tmp_path):
    base, counts = subject("GPT-2")
    body, v = _variants(base, counts, tmp_path / "bodies", tmp_path)
    shard = v[8] / VOCAB_SHARD
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert not prove_variant(base, v[8], body=body).passed
    assert prove_variant(base, v[64], body=body).passed


def test_rebuilding_a_variant_leaves_its_sibling_untouched(subject, tmp_path):
    base, counts = subject("BERT")
    body, v = _variants(base, counts, tmp_path / "bodies", tmp_path)
    before = {p.name: (_sha(p), p.stat().st_ino) for p in v[64].iterdir()}
    selection = select_for_model(base, [counts], SelectionPolicy(min_count=2), 8)
    apply_selection(base, selection, v[8], overwrite=True, layout="shared", body=body)  # a --force rebuild
    assert {p.name: (_sha(p), p.stat().st_ino) for p in v[64].iterdir()} == before
    assert prove_variant(base, v[8], body=body).passed and prove_variant(base, v[64], body=body).passed


def test_damaged_body_is_caught_by_every_proof_and_rebuilt_from_the_base(subject, tmp_path, caplog):
    base, counts = subject("GPT-2")
    store = tmp_path / "bodies"
    body, v = _variants(base, counts, store, tmp_path)
    victim = body.path(body.files[0])
    old_inode = victim.stat().st_ino
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor: a stored value, in place (every link sees it)
    victim.write_bytes(bytes(data))
    assert body_intact(body)
    for folder in v.values():
        report = prove_variant(base, folder, body=body)
        assert not report.passed and "not the proved body file" in " ".join(report.failures())
    rebuilt = ensure_body(base, store, body_tensors(base), identity="test-base")  # rebuilt, with a warning
    assert "damaged" in caplog.text and not body_intact(rebuilt) and rebuilt.digest == body.digest
    assert rebuilt.path(rebuilt.files[0]).stat().st_ino != old_inode  # a new file: the old one is never rewritten
    _, again = _variants(base, counts, store, tmp_path / "again")
    assert all(prove_variant(base, f, body=rebuilt).passed for f in again.values())


def test_body_is_written_once_and_reused(subject, tmp_path):
    base, counts = subject("GPT-2")
    store = tmp_path / "bodies"
    first = ensure_body(base, store, body_tensors(base), identity="test-base")
    stamp = first.path(first.files[0]).stat()
    second = ensure_body(base, store, body_tensors(base), identity="test-base")
    assert second == first and second.path(second.files[0]).stat().st_mtime_ns == stamp.st_mtime_ns
    other = ensure_body(base, store, body_tensors(base), identity="another revision")  # a new base: a new body
    assert other.folder != first.folder and body_intact(first) == []


def test_large_bodies_split_into_shards_under_the_limit(subject, tmp_path):
    base, counts = subject("GPT-2")
    tensors = body_tensors(base)
    limit = max(t.nbytes for t in tensors) * 2
    plan = shard_plan(tensors, limit)
    assert len(plan) > 1 and [t.name for s in plan for t in s] == [t.name for t in tensors]
    assert all(sum(t.nbytes for t in s) <= limit or len(s) == 1 for s in plan)
    body = ensure_body(base, tmp_path / "bodies", tensors, identity="x", max_shard_bytes=limit)
    assert len(body.files) == len(plan)
    selection = select_for_model(base, [counts], SelectionPolicy(min_count=2), 8)
    out = apply_selection(base, selection, tmp_path / "v", layout="shared", body=body).out_dir
    assert prove_variant(base, out, body=body).passed
    assert np.array_equal(load_kept_ids(out), selection.kept_ids)


def test_copied_body_is_proved_by_its_digest(subject, tmp_path):
    base, counts = subject("GPT-2")
    body = ensure_body(base, tmp_path / "bodies", body_tensors(base), identity="test-base")
    selection = select_for_model(base, [counts], SelectionPolicy(min_count=2), 8)
    out = apply_selection(base, selection, tmp_path / "v", layout="shared", body=body, body_mode="copy")
    assert out.surgery.body_placed == "copy"
    f = out.out_dir / body.files[0]
    assert f.stat().st_ino != body.path(body.files[0]).stat().st_ino and _sha(f) == _sha(body.path(body.files[0]))
    report = prove_variant(base, out.out_dir, body=body)
    assert report.passed and report.bytes_read >= f.stat().st_size  # a copy is read once, against the recorded digest


def test_single_layout_is_one_file(subject, tmp_path):
    base, counts = subject("GPT-2")
    selection = select_for_model(base, [counts], SelectionPolicy(min_count=2), 8)
    out = apply_selection(base, selection, tmp_path / "v", layout="single").out_dir
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not (out / INDEX_NAME).exists() and prove_variant(base, out).passed
