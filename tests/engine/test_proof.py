"""The streamed structural proof: it passes on a real trim, and catches each way a trimmed
folder can be wrong without changing its shapes (a flipped byte, swapped rows, a stale
config id, a relabelled dtype, a changed tokenizer)."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
import torch
import transformers as T

from tasks.engine.counting.tokens import count_tokens, write_counts
from tasks.engine.checkpoint import digests
from tasks.engine.verify import proof
from tasks.engine.verify.proof import prove_variant
from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint, read_header
from tasks.engine.selection.policy import SelectionPolicy
from tasks.engine.trim import apply_selection, select_for_model, trim_model
from tasks.engine.verify.outputs import verify_exactness
from tests import subjects


@pytest.fixture(scope="module")
def bf16_pair(tmp_path_factory, toy_model_session, toy_lines):
    """A tiny untied Llama in bf16 (2 shards, generation config, a high pad id) and its trim."""
    root = tmp_path_factory.mktemp("proof")
    base = root / "base"
    base.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(toy_model_session / name, base / name)
    vocab = json.loads((base / "tokenizer.json").read_text())
    n = len(vocab["model"]["vocab"]) + len(vocab.get("added_tokens", []))
    cfg = T.LlamaConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=n - 7)
    torch.manual_seed(0)
    model = T.LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config = T.GenerationConfig(bos_token_id=0, eos_token_id=[0, n - 7], pad_token_id=n - 7)
    model.save_pretrained(str(base), max_shard_size="60KB")
    counts = write_counts(count_tokens(base / "tokenizer.json", toy_lines[:300], "toy"), base / "tokenizer.json", root / "c.parquet")
    out = root / "trimmed"
    trim_model(base, [counts], SelectionPolicy(), 8, out)
    return base, out, {"en": toy_lines[2000:2300]}


def _copy(pair, tmp_path):
    base, trimmed, texts = pair
    dst = tmp_path / "trimmed"
    shutil.copytree(trimmed, dst)
    return base, dst, texts


def _failed(report) -> dict[str, list[str]]:
    return {c.name: c.failures for c in report.checks if not c.passed}


def test_proof_passes_and_bf16_stays_bf16(bf16_pair):
    base, trimmed, texts = bf16_pair
    ckpt = LazyCheckpoint(trimmed)
    assert len(ckpt.shards) >= 2
    assert {t.dtype for t in ckpt.tensors.values()} == {"BF16"}  # surgery keeps the base's dtype
    report = prove_variant(base, trimmed, texts)
    assert report.passed, report.failures()
    names = {c.name for c in report.checks}
    assert {"tensor_set", "dtypes", "non_vocab_tensors_identical", "kept_rows_identical", "config",
            "generation_config", "tokenization:en"} <= names
    rows = next(c for c in report.checks if c.name == "kept_rows_identical")
    kept = json.loads((trimmed / "trimworks.json").read_text())["kept_ids"]
    assert rows.items == 2 * len(kept)  # embed_tokens and the untied lm_head
    assert report.languages[0].covered_lines > 0
    # The verification path reads bf16 and compares in float64: exact.
    exact = verify_exactness(base, trimmed, texts, sample_lines=2)
    assert exact.exact and exact.output_max_abs_diff == 0.0
    # float32 (the memory-budget fallback) leaves rounding below its 1e-3 tolerance.
    f32 = verify_exactness(base, trimmed, texts, sample_lines=2, compute_dtype="float32", tolerance=1e-3)
    assert f32.exact and f32.compute_dtype == "float32" and f32.output_max_abs_diff <= 1e-3


def test_base_digests_are_read_once_per_process(bf16_pair):
    base, trimmed, texts = bf16_pair
    digests.forget()
    first = prove_variant(base, trimmed)
    second = prove_variant(base, trimmed)
    assert first.passed and second.passed
    copied = sum(t.nbytes for t in LazyCheckpoint(base).tensors.values() if "embed" not in t.name and "lm_head" not in t.name)
    assert first.bytes_read - second.bytes_read == copied  # the base's copied tensors, read once


def test_surgery_remembers_base_digests_for_the_proof(bf16_pair, tmp_path):
    """With a proof to follow, surgery digests each copied base tensor while it is in the page
    cache: the proof then reads only the variant, and still catches a changed byte."""
    base, trimmed, texts = bf16_pair
    sel = select_for_model(base, [trimmed.parent / "c.parquet"], SelectionPolicy(), 8)
    digests.forget()
    out = tmp_path / "again"
    apply_selection(base, sel, out, remember_base_digests=True)
    warm = prove_variant(base, out, texts)
    digests.forget()
    cold = prove_variant(base, out, texts)
    copied = sum(t.nbytes for t in LazyCheckpoint(base).tensors.values() if "embed" not in t.name and "lm_head" not in t.name)
    assert warm.passed and cold.passed
    assert cold.bytes_read - warm.bytes_read == copied  # the proof after surgery did not read the base's copies
    info = LazyCheckpoint(out).tensors["model.layers.0.mlp.up_proj.weight"]
    with info.file.open("r+b") as fh:
        fh.seek(info.start)
        b = fh.read(1)
        fh.seek(info.start)
        fh.write(bytes([b[0] ^ 0x80]))
    assert list(_failed(prove_variant(base, out, texts))) == ["non_vocab_tensors_identical"]


def test_a_failed_background_digest_is_read_by_the_proof(bf16_pair, tmp_path, monkeypatch):
    """Surgery's digesting thread fails (an I/O error there): the proof reads the base itself."""
    import threading

    base, trimmed, texts = bf16_pair
    sel = select_for_model(base, [trimmed.parent / "c.parquet"], SelectionPolicy(), 8)
    digests.forget()
    real = digests._read_digest

    def flaky(info, buf):
        if threading.current_thread().name.startswith("base-digest"):
            raise OSError("EIO in the background")
        return real(info, buf)

    monkeypatch.setattr(digests, "_read_digest", flaky)
    apply_selection(base, sel, tmp_path / "out", remember_base_digests=True)
    report = prove_variant(base, tmp_path / "out", texts)
    copied = sum(t.nbytes for t in LazyCheckpoint(base).tensors.values() if "embed" not in t.name and "lm_head" not in t.name)
    out_bytes = sum(t.nbytes for t in LazyCheckpoint(tmp_path / "out").tensors.values())
    assert report.passed and report.bytes_read >= copied + out_bytes - 1  # the base's copies were read here


def test_a_base_too_big_to_cache_is_dropped_from_the_cache_and_still_proved(bf16_pair, tmp_path, monkeypatch):
    base, trimmed, texts = bf16_pair
    monkeypatch.setattr("tasks.engine.checkpoint.surgery.too_big_to_cache", lambda nbytes: True)
    sel = select_for_model(base, [trimmed.parent / "c.parquet"], SelectionPolicy(), 8)
    digests.forget()
    apply_selection(base, sel, tmp_path / "out", remember_base_digests=True)
    warm = prove_variant(base, tmp_path / "out", texts)
    out_bytes = sum(t.nbytes for t in LazyCheckpoint(tmp_path / "out").tensors.values())
    assert warm.passed and warm.bytes_read < 2 * out_bytes  # digests remembered: the base's copies not read again
    assert not digests.too_big_to_cache(1 << 20) and digests.too_big_to_cache(1 << 60)


def _tensor(folder, name):
    return LazyCheckpoint(folder).tensors[name]


def test_one_changed_byte_in_a_non_vocab_tensor(bf16_pair, tmp_path):
    base, trimmed, texts = _copy(bf16_pair, tmp_path)
    info = _tensor(trimmed, "model.layers.1.mlp.down_proj.weight")
    with info.file.open("r+b") as fh:
        fh.seek(info.start + info.nbytes // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0x01]))
    failed = _failed(prove_variant(base, trimmed, texts))
    assert list(failed) == ["non_vocab_tensors_identical"]
    assert "model.layers.1.mlp.down_proj.weight" in failed["non_vocab_tensors_identical"][0]


@pytest.mark.parametrize("name", ["model.embed_tokens.weight", "lm_head.weight"])
def test_two_swapped_kept_rows(bf16_pair, tmp_path, name):
    base, trimmed, texts = _copy(bf16_pair, tmp_path)
    info = _tensor(trimmed, name)
    row = info.nbytes // info.shape[0]
    with info.file.open("r+b") as fh:
        fh.seek(info.start + 5 * row)
        a = fh.read(row)
        b = fh.read(row)
        assert a != b
        fh.seek(info.start + 5 * row)
        fh.write(b + a)
    failed = _failed(prove_variant(base, trimmed, texts))
    assert list(failed) == ["kept_rows_identical"]
    assert f"{name}: row 5 differs" in failed["kept_rows_identical"][0]
    if name == "lm_head.weight":  # every kept logit is compared: even float32's tolerance catches it
        f32 = verify_exactness(base, trimmed, texts, sample_lines=2, compute_dtype="float32", tolerance=1e-3)
        assert not f32.exact and f32.output_max_abs_diff > 1e-3


def test_stale_config_fields(bf16_pair, tmp_path):
    base, trimmed, texts = _copy(bf16_pair, tmp_path)
    base_cfg = json.loads((base / "config.json").read_text())
    cfg = json.loads((trimmed / "config.json").read_text())
    assert cfg["pad_token_id"] != base_cfg["pad_token_id"]  # the subject really remaps an id
    cfg["pad_token_id"] = base_cfg["pad_token_id"]  # stale: the base's id
    (trimmed / "config.json").write_text(json.dumps(cfg))
    gen = json.loads((trimmed / "generation_config.json").read_text())
    gen["eos_token_id"] = json.loads((base / "generation_config.json").read_text())["eos_token_id"]
    (trimmed / "generation_config.json").write_text(json.dumps(gen))
    failed = _failed(prove_variant(base, trimmed, texts))
    assert set(failed) == {"config", "generation_config"}
    assert failed["config"][0].startswith("pad_token_id=")
    assert failed["generation_config"][0].startswith("eos_token_id=")


def test_stale_vocab_size_and_an_unrelated_change(bf16_pair, tmp_path):
    base, trimmed, texts = _copy(bf16_pair, tmp_path)
    cfg = json.loads((trimmed / "config.json").read_text())
    base_cfg = json.loads((base / "config.json").read_text())
    cfg["vocab_size"] = base_cfg["vocab_size"]
    cfg["rms_norm_eps"] = 1e-3
    (trimmed / "config.json").write_text(json.dumps(cfg))
    failed = _failed(prove_variant(base, trimmed, texts))
    assert list(failed) == ["config"]
    assert any(f.startswith("vocab_size=") for f in failed["config"])
    assert any(f.startswith("rms_norm_eps") for f in failed["config"])


def _relabel_dtype(path, name: str, new: str) -> None:
    """Rewrite one tensor's dtype in a shard header, keeping the header length (bytes unchanged)."""
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + hlen])
    header[name]["dtype"] = new
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= hlen
    path.write_bytes(raw[:8] + text + b" " * (hlen - len(text)) + raw[8 + hlen :])


def test_wrong_dtype(bf16_pair, tmp_path):
    base, trimmed, texts = _copy(bf16_pair, tmp_path)
    info = _tensor(trimmed, "model.norm.weight")
    _relabel_dtype(info.file, "model.norm.weight", "F16")  # same size, other meaning
    assert {t.dtype for t in read_header(info.file)[0] if t.name == "model.norm.weight"} == {"F16"}
    failed = _failed(prove_variant(base, trimmed, texts))
    assert list(failed) == ["dtypes"]
    assert "model.norm.weight: dtype F16, base BF16" in failed["dtypes"][0]


def test_changed_tokenizer(bf16_pair, tmp_path):
    base, trimmed, texts = _copy(bf16_pair, tmp_path)
    tok = json.loads((trimmed / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    # swap the ids of two frequent kept tokens: shapes and weights untouched
    a, b = "Ġthe", "Ġof"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (trimmed / "tokenizer.json").write_text(json.dumps(tok))
    report = prove_variant(base, trimmed, texts)
    failed = _failed(report)
    assert list(failed) == ["tokenization:en"]
    assert report.languages[0].identical_covered_lines < report.languages[0].covered_lines


def test_kept_ids_must_match_the_rows(bf16_pair):
    """The proof reads kept ids from trimworks.json; proving against other ids fails (b)."""
    base, trimmed, texts = bf16_pair
    kept = np.asarray(json.loads((trimmed / "trimworks.json").read_text())["kept_ids"])
    shifted = kept.copy()
    shifted[-1] = kept[-1] - 1 if kept[-1] - 1 not in set(kept.tolist()) else kept[-1] + 1
    failed = _failed(prove_variant(base, trimmed, None, kept_ids=np.sort(shifted)))
    assert "kept_rows_identical" in failed


def test_prove_command(bf16_pair, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    base, trimmed, texts = _copy(bf16_pair, tmp_path)
    held = tmp_path / "en.txt"
    held.write_text("\n".join(texts["en"]) + "\n")
    ok = CliRunner().invoke(app, ["prove", str(base), str(trimmed), "--text", str(held)])
    assert ok.exit_code == 0, ok.output
    assert "ok   kept_rows_identical" in ok.output and "ok   tokenization:en" in ok.output
    cfg = json.loads((trimmed / "config.json").read_text())
    cfg["vocab_size"] += 1
    (trimmed / "config.json").write_text(json.dumps(cfg))
    bad = CliRunner().invoke(app, ["prove", str(base), str(trimmed)])
    assert bad.exit_code == 1 and "FAIL config" in bad.output and "vocab_size=" in bad.output


def _fidelity_line_by_line(base_tok, trim_tok, kept, lines):
    """The definition, one line at a time: covered = every base id kept; identical = the
    trimmed ids map back to the base's."""
    kept_set, covered, identical = set(kept.tolist()), [], 0
    for line in lines:
        o = base_tok.encode(line).ids
        if all(i in kept_set for i in o):
            covered.append(line)
            identical += [int(kept[i]) for i in trim_tok.encode(line).ids] == o
    tokens = sum(len(base_tok.encode(x, add_special_tokens=False).ids) for x in lines)
    return covered, identical, tokens


def test_fidelity_matches_the_line_by_line_definition_and_encodes_the_base_once(bf16_pair, monkeypatch):
    from tasks.engine.verify import outputs as verify
    from tasks.engine.counting.tokens import load_plain_tokenizer

    base, trimmed, texts = bf16_pair
    lines = texts["en"][:150] + ["", "Ωμέγα ξένο κείμενο", "zzqx 12345 ☃"] + texts["en"][150:]
    base_tok, trim_tok = load_plain_tokenizer(base / "tokenizer.json"), load_plain_tokenizer(trimmed / "tokenizer.json")
    kept = np.asarray(json.loads((trimmed / "trimworks.json").read_text())["kept_ids"])
    calls = []
    real = verify.encode_lines
    monkeypatch.setattr(verify, "encode_lines", lambda tok, ls: calls.append(tok) or real(tok, ls))
    verify._BASE_ENCODINGS.clear()
    fid, covered = verify.tokenization_fidelity(base_tok, trim_tok, kept, "en", lines)
    want_covered, want_identical, want_tokens = _fidelity_line_by_line(base_tok, trim_tok, kept, lines)
    assert covered == want_covered and len(want_covered) < len(lines)  # some lines are not covered
    assert fid.covered_lines == len(want_covered) and fid.identical_covered_lines == want_identical == len(want_covered)
    assert fid.tokens == want_tokens and fid.lines == len(lines)
    again, _ = verify.tokenization_fidelity(base_tok, trim_tok, kept, "en", list(lines))  # a second variant
    assert again == fid
    assert calls.count(base_tok) == 1 and calls.count(trim_tok) == 2  # the base's encoding is remembered
    other, _ = verify.tokenization_fidelity(base_tok, trim_tok, kept, "en", lines[:-1])  # other text: encoded again
    assert calls.count(base_tok) == 2 and other.lines == len(lines) - 1


def test_a_stream_that_fails_on_its_first_line_falls_back_to_the_whole_model(tmp_path, monkeypatch, caplog):
    """The comparison streams weights from the checkpoint; where that fails at the first call
    (code reading a weight the stream left on the meta device), it loads the model whole and
    the outputs are the same, with a warning naming the folder."""
    import contextlib

    from tasks.engine.verify import outputs as verify
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1)
    T.LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(tmp_path))
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(300)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    lines = ["w5 w17 w42 w299 w3", "w250 w7 w8"]
    streamed = list(verify._outputs(tmp_path, tok, lines, 16, "float64"))

    class Broken:
        def __call__(self, **_kw):
            raise NotImplementedError("Cannot copy out of meta tensor; no data!")

    monkeypatch.setattr(verify, "streamed_model", lambda *_a: contextlib.nullcontext(Broken()))
    with caplog.at_level("WARNING", logger="trimworks.verify"):
        whole = list(verify._outputs(tmp_path, tok, lines, 16, "float64"))
    assert f"{tmp_path}: outputs computed with the model loaded whole (NotImplementedError" in caplog.text
    assert len(whole) == len(streamed) == 2
    for (kind, a, loss_a, n_a), (_k, b, loss_b, n_b) in zip(streamed, whole, strict=True):
        assert kind == "logits" and list(a) == list(b) == ["logits"] and (n_a, loss_a) == (n_b, loss_b)
        assert a["logits"].dtype == b["logits"].dtype == torch.float64
        assert float((a["logits"] - b["logits"]).abs().max()) < 1e-12  # whole load: the head widened in blocks too


@pytest.mark.parametrize("arch", ["llama-bf16-untied", "llama-bf16-tied", "bert-f32", "t5-bf16"])
def test_outputs_computed_in_float64_without_a_float64_copy(tmp_path, arch, monkeypatch):
    """verify's output comparison keeps the checkpoint's dtype and widens one module at a
    time: its outputs are bit for bit those of the model loaded in float64; with the head
    widened a block of rows at a time, within float64 rounding of them."""
    from tasks.engine.verify import outputs as verify

    torch.manual_seed(0)
    if arch.startswith("llama"):
        cfg = T.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, tie_word_embeddings=arch.endswith("-tied"))
        model = T.LlamaForCausalLM(cfg).to(torch.bfloat16)
    elif arch.startswith("t5"):  # its feed-forward reads the output layer's dtype: widened per block
        model = T.T5ForConditionalGeneration(T.T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                        num_heads=2, decoder_start_token_id=0)).to(torch.bfloat16)
    else:
        model = T.BertModel(T.BertConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2))
    model.save_pretrained(str(tmp_path))
    ids = torch.tensor([[5, 17, 42, 299, 3, 250, 7]])

    def out(m):
        with torch.no_grad():
            o = m(input_ids=ids, decoder_input_ids=ids) if arch.startswith("t5") else m(input_ids=ids)
        return o.logits if hasattr(o, "logits") else o.last_hidden_state

    cls = type(model)
    reference = out(cls.from_pretrained(str(tmp_path), dtype=torch.float64).eval())
    stored = cls.from_pretrained(str(tmp_path), dtype="auto").eval()
    assert stored.dtype == next(model.parameters()).dtype  # nothing widened at rest
    hooks = verify.compute_in(stored, torch.float64)
    got = out(stored)
    assert got.dtype == torch.float64 and torch.equal(got, reference)
    assert all(p.dtype == model.dtype for p in stored.parameters())  # narrowed again after the call
    for h in hooks:
        h.remove()
    if arch.startswith("llama"):  # the head in blocks of 16 rows (19 blocks for 300 rows)
        monkeypatch.setattr(verify, "WIDEN_BLOCK_BYTES", 16 * 8 * 32)
        hooks = verify.compute_in(stored, torch.float64)
        assert "forward" in stored.lm_head.__dict__
        blocked = out(stored)
        assert blocked.dtype == torch.float64 and float((blocked - reference).abs().max()) < 1e-12
        for h in hooks:
            h.remove()
        assert "forward" not in stored.lm_head.__dict__
    assert out(stored).dtype == model.dtype  # hooks removed: the model computes in its own dtype again

    # Streamed from the checkpoint (what the comparison uses): the same outputs, weights read
    # per call, the embedding reading only the rows of the ids given.
    from tasks.engine.verify import streamed_model as sm

    asked = []
    rows = sm.CheckpointReader.rows
    monkeypatch.setattr(sm.CheckpointReader, "rows", lambda self, key, ids: asked.append(ids.tolist()) or rows(self, key, ids))
    with sm.streamed_model(tmp_path, cls, torch.float64) as streamed:
        got = out(streamed)
        assert got.dtype == torch.float64 and torch.equal(got, reference)
        assert all(p.device.type == "meta" for p in streamed.parameters())
    # the word embedding's rows (BERT reads position and token type rows too): never the table
    assert sorted(set(ids[0].tolist())) in asked and max(map(len, asked)) <= ids.shape[1]
    if arch.startswith("llama"):  # the head read from the file 16 rows at a time
        monkeypatch.setattr(sm, "HEAD_BLOCK_BYTES", 16 * 8 * 32)
        with sm.streamed_model(tmp_path, cls, torch.float64) as streamed:
            assert "forward" in streamed.lm_head.__dict__
            blocked = out(streamed)
        assert blocked.dtype == torch.float64 and float((blocked - reference).abs().max()) < 1e-12


def test_user_rules_reach_trim_prove_and_verify_alike(toy_model_session, toy_lines, tmp_path):
    """MobileBERT's MLM head holds the vocabulary on axis 1 (`cls.predictions.dense.weight`
    [hidden - embedding, vocab]), which no packaged rule names: trimmed with a user rule, the
    proof given the same rules passes; without them it fails and says which rules to give."""
    import yaml
    from typer.testing import CliRunner

    from flows.cli import app

    base = tmp_path / "mobilebert"
    base.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(toy_model_session / name, base / name)
    n = json.loads((toy_model_session / "config.json").read_text())["vocab_size"]
    cfg = T.MobileBertConfig(vocab_size=n, hidden_size=16, embedding_size=8, intra_bottleneck_size=8, true_hidden_size=8,
                             num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, num_feedforward_networks=1,
                             max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    T.MobileBertForMaskedLM(cfg).save_pretrained(str(base))
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"vocab_tensors": [
        {"pattern": r"^cls\.predictions\.dense\.weight$", "axis": 1, "role": "MobileBERT MLM head (vocabulary on axis 1)"}]}))
    counts = write_counts(count_tokens(base / "tokenizer.json", toy_lines[:300], "toy"), base / "tokenizer.json",
                          tmp_path / "c.parquet")
    held = tmp_path / "en.txt"
    held.write_text("\n".join(toy_lines[2000:2100]) + "\n")
    out = tmp_path / "trimmed"
    run = CliRunner().invoke
    refused = run(app, ["trim", str(base), "--counts", str(counts), "--multiple", "8", "-o", str(out)])
    assert refused.exit_code == 2 and "cls.predictions.dense.weight" in refused.output, refused.output
    r = run(app, ["trim", str(base), "--counts", str(counts), "--multiple", "8", "-o", str(out), "--architectures", str(rules)])
    assert r.exit_code == 0, r.output
    kept = json.loads((out / "config.json").read_text())["vocab_size"]
    assert kept < n and LazyCheckpoint(out).tensors["cls.predictions.dense.weight"].shape == (8, kept)

    ok = run(app, ["prove", str(base), str(out), "--text", str(held), "--architectures", str(rules)])
    assert ok.exit_code == 0, ok.output
    assert "ok   kept_rows_identical: 3 vocab-sized tensors" in ok.output and "ok   non_vocab_tensors_identical" in ok.output

    bad = run(app, ["prove", str(base), str(out), "--text", str(held)])
    assert bad.exit_code == 1, bad.output
    assert "FAIL non_vocab_tensors_identical" in bad.output
    assert (f"cls.predictions.dense.weight: shape [8, {kept}], base [8, {n}]: axis 1 is the vocabulary ({n} -> {kept} kept), "
            "sliced by a rule this proof was not given") in bad.output
    assert "trimworks prove --architectures FILE" in bad.output

    v = run(app, ["verify", str(base), str(out), "--text", str(held), "--sample", "2", "--architectures", str(rules)])
    assert v.exit_code == 0, v.output
    report = json.loads(v.stdout)
    assert report["compute_dtype"] == "float64" and report["output_max_abs_diff"] <= 1e-9 and report["sampled_lines"] == 2
