"""The guards (guard.py) and the architecture data (architectures.py): a folder that would not
load is never produced, and the rules are extended from data, never by editing code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tasks.engine.checkpoint.architectures import ArchitectureData, default_rules, load_rules, read_architecture_file
from tasks.engine.errors import ManifestError, ModelFolderError
from tasks.engine.checkpoint.guard import check_folder_loads, check_vocab_dims


def test_packaged_table_is_data_and_extendable(tmp_path):
    rules = default_rules()
    assert rules.vocab_rule_for("distilbert.embeddings.word_embeddings.weight").axis == 0
    assert rules.vocab_rule_for("final_logits_bias").axis == 1
    assert rules.vocab_rule_for("my_head.weight") is None
    assert "decoder_vocab_size" in rules.vocab_size_keys
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"vocab_tensors": [{"pattern": r"^my_head\.weight$", "axis": 0, "role": "probe"}],
                                 "not_vocab": [{"pattern": "^buckets$", "reason": "bucket count"}]}))
    ext = load_rules([f])
    assert ext.vocab_rule_for("my_head.weight").role == "probe"
    assert ext.not_vocab_reason("buckets") == "bucket count"
    assert ext.vocab_rule_for("lm_head.weight") is not None  # the packaged rules stay


@pytest.mark.parametrize("content,match", [
    ('{"vocab_tensors": [{"pattern": "(", "axis": 0}]}', "invalid architecture file"),
    ('{"vocab_tensor": []}', "vocab_tensor"),
    ('{"vocab_tensors": [{"pattern": "x", "axis": -1}]}', "axis"),
])
def test_bad_architecture_file_is_located(tmp_path, content, match):
    f = tmp_path / "rules.json"
    f.write_text(content)
    with pytest.raises(ModelFolderError, match=match):
        read_architecture_file(f)


def test_unsliced_vocab_dim_is_refused_unless_explained():
    shapes = {"emb.weight": (1000, 16), "probe.weight": (16, 1000), "other.weight": (16, 16)}
    with pytest.raises(ModelFolderError, match=r"'probe.weight' \[16, 1000\].*--architectures"):
        check_vocab_dims(shapes, ["emb.weight"], (1000,), default_rules(), "m")
    explained = default_rules().extended(ArchitectureData(not_vocab=[{"pattern": "^probe", "reason": "r"}]))
    check_vocab_dims(shapes, ["emb.weight"], (1000,), explained, "m")


def test_a_folder_that_would_not_load_is_refused(toy_model, tmp_path):
    assert check_folder_loads(toy_model) > 0
    broken = tmp_path / "broken"
    shutil.copytree(toy_model, broken)
    cfg = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] - 8}))
    with pytest.raises(ModelFolderError, match=r"would not load: 'transformer.wte.weight'"):
        check_folder_loads(broken)


def test_manifest_architectures_section_is_validated(tmp_path):
    from tasks.pipeline.manifest import load_manifest
    from tests.subjects import MINIMAL_MANIFEST

    (tmp_path / "model").mkdir()
    (tmp_path / "fr.txt").write_text("bonjour\n")
    good = {**MINIMAL_MANIFEST, "architectures": {"vocab_tensors": [{"pattern": "^x$", "axis": 0}]}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(good))
    assert load_manifest(tmp_path / "m.yaml").spec.architectures.vocab_tensors[0].pattern == "^x$"
    bad = {**MINIMAL_MANIFEST, "architectures": {"vocab_tensors": [{"pattern": "^x$", "axes": 0}]}}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ManifestError, match=r"architectures.vocab_tensors\[0\]"):
        load_manifest(tmp_path / "b.yaml")


def test_a_table_indexed_by_token_id_the_data_does_not_describe_is_refused():
    """An id table no `id_thresholds` entry describes (an unknown key, or Gemma 3n's key nested in
    a multimodal `text_config`): renumbered ids would cross its line, which no row check sees."""
    from tasks.engine.checkpoint.guard import check_id_tables

    shapes = {"model.embed_tokens.weight": (32064, 16), "model.embed_tokens_per_layer.weight": (32000, 64),
              "model.norm.weight": (16,)}
    nested = {"vocab_size": 32064, "text_config": {"vocab_size": 32064, "vocab_size_per_layer_input": 32000}}
    with pytest.raises(ModelFolderError, match=r"text_config.vocab_size_per_layer_input = 32000 sizes "
                                               r"'model.embed_tokens_per_layer.weight' \[32000, 64\].*does not trim"):
        check_id_tables(nested, shapes, ["model.embed_tokens.weight"], default_rules(), "m")
    unknown = {"vocab_size": 32064, "vocab_size_bigram": 32000}
    with pytest.raises(ModelFolderError, match=r"vocab_size_bigram = 32000 sizes 'model.embed_tokens_per_layer.weight'"):
        check_id_tables(unknown, shapes, ["model.embed_tokens.weight"], default_rules(), "m")
    # Described by the packaged data at the top level: surgery slices it by the threshold.
    check_id_tables({"vocab_size": 32064, "vocab_size_per_layer_input": 32000}, shapes, ["model.embed_tokens.weight"],
                    default_rules(), "m")
    # The same size as the vocabulary is the vocabulary, and a table explained in not_vocab is the user's call.
    check_id_tables({"vocab_size": 32064, "vocab_size_bigram": 32064}, shapes, [], default_rules(), "m")
    explained = default_rules().extended(ArchitectureData(not_vocab=[{"pattern": "per_layer", "reason": "r"}]))
    check_id_tables(unknown, shapes, ["model.embed_tokens.weight"], explained, "m")
    # BERT's segment table is indexed by token *type* ids, which trimming leaves alone.
    bert = {"embeddings.word_embeddings.weight": (30522, 16), "embeddings.token_type_embeddings.weight": (2, 16)}
    check_id_tables({"vocab_size": 30522, "type_vocab_size": 2}, bert, ["embeddings.word_embeddings.weight"],
                    default_rules(), "m")


def test_an_id_threshold_needs_its_fallback_row_kept():
    """Ids at or above Gemma 3n's threshold read row 0: without old id 0 as new id 0 they would
    read another token's row, so surgery refuses (the selection keeps it: `threshold_required_ids`)."""
    import numpy as np

    from tasks.engine.checkpoint.guard import check_id_thresholds

    config = {"vocab_size": 1200, "vocab_size_per_layer_input": 700}
    shapes = {"model.embed_tokens.weight": (1200, 16), "model.embed_tokens_per_layer.weight": (700, 8)}
    rows = check_id_thresholds(config, shapes, np.array([0, 5, 699, 700, 1100]), default_rules(), "m")
    assert rows["model.embed_tokens_per_layer.weight"].tolist() == [0, 5, 699]
    assert default_rules().threshold_required_ids(config) == [0]
    from types import SimpleNamespace

    from tasks.engine.trim import model_required_ids

    no_specials = SimpleNamespace(config={**config, "pad_token_id": 5}, path=Path("/nonexistent"))
    assert 0 in model_required_ids(no_specials, default_rules())  # the selection keeps the fallback row
    with pytest.raises(ModelFolderError, match=r"read row 0 .*token ids 0..0 must be kept"):
        check_id_thresholds(config, shapes, np.array([5, 699, 700]), default_rules(), "m")
    check_id_thresholds(config, shapes, np.array([5, 699]), default_rules(), "m")  # none above: no fallback read
    with pytest.raises(ModelFolderError, match=r"should have vocab_size_per_layer_input = 700 rows"):
        check_id_thresholds(config, {**shapes, "model.embed_tokens_per_layer.weight": (640, 8)},
                            np.array([0, 5]), default_rules(), "m")


def _gemma3n_base(folder, toy_model, per_layer: int):
    """A real Gemma3nForCausalLM on the toy tokenizer (1,200 ids) whose per-layer table (`per_layer`
    rows) is smaller than its vocabulary, as the released Gemma 3n (262,144 < 262,400), with
    trained-like weights: every zero-initialised parameter (AltUp's `correct_output_scale`, ...)
    and the per-layer table and projections random, so the per-layer path shapes the outputs."""
    import torch
    import transformers as T

    from tests import subjects

    cfg = T.Gemma3nTextConfig(
        vocab_size=1200, vocab_size_per_layer_input=per_layer, hidden_size=16, hidden_size_per_layer_input=4,
        intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        laurel_rank=4, altup_num_inputs=2, num_kv_shared_layers=0, activation_sparsity_pattern=[0.0, 0.0],
        layer_types=["sliding_attention", "full_attention"], architectures=["Gemma3nForCausalLM"])
    torch.manual_seed(0)
    model = T.Gemma3nForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.any() or "per_layer" in name:
                p.normal_(0.0, 0.5)
    subjects.save_model(model, folder)
    subjects.copy_tokenizer_files(toy_model, folder)
    return folder


def _logits(folder, ids):
    import torch
    import transformers as T

    model = T.Gemma3nForCausalLM.from_pretrained(str(folder), dtype=torch.float64).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_a_gemma3n_model_is_trimmed_exactly_across_its_per_layer_threshold(toy_model, toy_lines, tmp_path):
    """Kept ids on both sides of `vocab_size_per_layer_input`: the threshold becomes the count of
    kept ids below it and the per-layer table keeps their rows, so every kept id reads the rows it
    read in the base. Outputs equal the base's in float64 on covered text, `trimworks prove` passes,
    and variants broken on the threshold (the naive trim, misaligned rows) fail the proof."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.engine.counting.tokens import load_plain_tokenizer
    from tasks.engine.verify.outputs import load_kept_ids, tokenization_fidelity, verify_exactness

    P = 900
    base = _gemma3n_base(tmp_path / "gemma3n", toy_model, P)
    lines = toy_lines[:200]
    text = tmp_path / "en.txt"
    text.write_text("\n".join(lines))
    runner = CliRunner()
    r = runner.invoke(app, ["count", str(base), "--text", str(text), "-o", str(tmp_path / "en.parquet")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    r = runner.invoke(app, ["trim", str(base), "--counts", str(tmp_path / "en.parquet"), "-o", str(out),
                            "--min-count", "3", "--multiple", "8"])
    assert r.exit_code == 0, r.output
    kept = load_kept_ids(out)
    k1 = int((kept < P).sum())
    # Kept ids on both sides, ids dropped below P (so kept ids move across it), row 0 in place.
    assert kept[0] == 0 and 0 < k1 < P and k1 < kept.size, (k1, kept.size)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size_per_layer_input"] == k1 and cfg["vocab_size"] == kept.size
    table = load_file(str(out / "model.safetensors"))["model.embed_tokens_per_layer.weight"]
    assert table.shape[0] == k1

    # Outputs: the base's logits at the kept ids on covered lines, float64, two ways.
    report = verify_exactness(base, out, {"en": lines}, sample_lines=8, max_length=48)
    assert report.languages[0].covered_lines >= 8
    assert report.output_max_abs_diff is not None and report.output_max_abs_diff <= 1e-9, report.output_max_abs_diff
    base_tok = load_plain_tokenizer(base / "tokenizer.json")
    _, covered = tokenization_fidelity(base_tok, load_plain_tokenizer(out / "tokenizer.json"), kept, "en", lines)
    new_id = {int(o): i for i, o in enumerate(kept)}
    old_ids = [i for line in covered[:20] for i in base_tok.encode(line).ids][:160]
    # The compared text holds ids that move: above P to below it, and below P to another row.
    assert any(i >= P > new_id[i] for i in old_ids) and any(P > i != new_id[i] for i in old_ids)
    want = _logits(base, old_ids)[:, kept]
    got = _logits(out, [new_id[i] for i in old_ids])
    diff = float((want - got).abs().max())
    assert diff <= 1e-9, diff
    r = runner.invoke(app, ["prove", str(base), str(out), "--text", str(text)])
    assert r.exit_code == 0, r.output
    assert "ok   id_threshold_tables" in r.output and f"{k1:,} rows" in r.output
    # The shared layout: the per-layer table is the variant's own (vocab shard), not the shared body.
    r = runner.invoke(app, ["trim", str(base), "--counts", str(tmp_path / "en.parquet"), "-o", str(tmp_path / "shared"),
                            "--min-count", "3", "--multiple", "8", "--layout", "shared"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["prove", str(base), str(tmp_path / "shared"), "--text", str(text)])
    assert r.exit_code == 0 and "ok   id_threshold_tables" in r.output, r.output

    # The per-layer path matters: the naive trim (table and threshold left as the base's) loads
    # but gives other outputs, and the proof refuses it.
    naive = tmp_path / "naive"
    shutil.copytree(out, naive)
    weights = load_file(str(out / "model.safetensors"))
    weights["model.embed_tokens_per_layer.weight"] = load_file(str(base / "model.safetensors"))[
        "model.embed_tokens_per_layer.weight"]
    save_file(weights, str(naive / "model.safetensors"), metadata={"format": "pt"})
    (naive / "config.json").write_text(json.dumps({**cfg, "vocab_size_per_layer_input": P}))
    assert float((want - _logits(naive, [new_id[i] for i in old_ids])).abs().max()) > 1e-3
    r = runner.invoke(app, ["prove", str(base), str(naive)])
    assert r.exit_code == 1, r.output
    assert "FAIL id_threshold_tables" in r.output and f"vocab_size_per_layer_input={P}, expected {k1}" in r.output

    # Threshold right, rows misaligned by one: the proof names the first wrong row.
    shifted = tmp_path / "shifted"
    shutil.copytree(out, shifted)
    weights = load_file(str(out / "model.safetensors"))
    weights["model.embed_tokens_per_layer.weight"] = np.roll(weights["model.embed_tokens_per_layer.weight"], 1, axis=0)
    save_file(weights, str(shifted / "model.safetensors"), metadata={"format": "pt"})
    r = runner.invoke(app, ["prove", str(base), str(shifted)])
    assert r.exit_code == 1, r.output
    assert "model.embed_tokens_per_layer.weight: row 0 differs from base row 0" in r.output

    # Threshold one too high (a kept id above it would read a row it did not read): refused.
    high = tmp_path / "high"
    shutil.copytree(out, high)
    (high / "config.json").write_text(json.dumps({**cfg, "vocab_size_per_layer_input": k1 + 1}))
    r = runner.invoke(app, ["prove", str(base), str(high)])
    assert r.exit_code == 1 and f"expected {k1}" in r.output, r.output


def test_two_vocabularies_are_refused_with_the_true_reason(tmp_path):
    """FSMT has a source and a target vocabulary (src_vocab_size, tgt_vocab_size): the refusal
    says so and names a model family trimworks does trim, not "nested configs"."""
    import torch
    import transformers as T

    from tasks.engine.checkpoint.model_folder import inspect_model_folder

    torch.manual_seed(0)
    cfg = T.FSMTConfig(src_vocab_size=40, tgt_vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_position_embeddings=32, langs=["en", "de"])
    T.FSMTForConditionalGeneration(cfg).save_pretrained(str(tmp_path))
    with pytest.raises(ModelFolderError) as err:
        inspect_model_folder(tmp_path)
    msg = str(err.value)
    assert "2 vocabularies (src_vocab_size = 40, tgt_vocab_size = 50)" in msg and "source and target" in msg
    assert "Marian" in msg and "nested" not in msg


def test_ctc_head_is_refused_with_the_true_reason(tmp_path):
    """Wav2Vec2ForCTC scores characters with a CTC tokenizer that has no tokenizer.json form:
    refused as such, not told to save a tokenizer.json it cannot have."""
    import torch
    import transformers as T

    from tasks.engine.checkpoint.model_folder import inspect_model_folder

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate("ETAONIHSRDLUMWCFGYPBVKJXQZ'")}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    T.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json")).save_pretrained(str(tmp_path))
    torch.manual_seed(0)
    cfg = T.Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    T.Wav2Vec2ForCTC(cfg).save_pretrained(str(tmp_path))
    assert not (tmp_path / "tokenizer.json").exists()
    with pytest.raises(ModelFolderError) as err:
        inspect_model_folder(tmp_path)
    msg = str(err.value)
    assert "Wav2Vec2ForCTC has a CTC head over a character-level vocabulary (32 symbols" in msg
    assert "nothing to trim" in msg and "Use the model as it is" in msg and "AutoTokenizer" not in msg
