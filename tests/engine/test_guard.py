"""The guards (guard.py) and the architecture data (architectures.py): a folder that would not
load is never produced, and the rules are extended from data, never by editing code."""

from __future__ import annotations

import json
import shutil

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


def test_a_table_indexed_by_token_id_with_its_own_size_is_refused():
    """Gemma 3n: ids below vocab_size_per_layer_input read a per-layer row, the rest row 0;
    renumbered ids would cross that line, which no embedding-row check can see."""
    from tasks.engine.checkpoint.guard import check_id_tables

    config = {"vocab_size": 32064, "text_config": {"vocab_size": 32064, "vocab_size_per_layer_input": 32000}}
    shapes = {"model.embed_tokens.weight": (32064, 16), "model.embed_tokens_per_layer.weight": (32000, 64),
              "model.norm.weight": (16,)}
    with pytest.raises(ModelFolderError, match=r"text_config.vocab_size_per_layer_input = 32000 sizes "
                                               r"'model.embed_tokens_per_layer.weight' \[32000, 64\].*does not trim"):
        check_id_tables(config, shapes, ["model.embed_tokens.weight"], default_rules(), "m")
    # The same size as the vocabulary is the vocabulary (sliced by the table's rules), and a
    # table explained in not_vocab is the user's call.
    check_id_tables({"vocab_size": 32064, "vocab_size_per_layer_input": 32064}, shapes, [], default_rules(), "m")
    explained = default_rules().extended(ArchitectureData(not_vocab=[{"pattern": "per_layer", "reason": "r"}]))
    check_id_tables(config, shapes, ["model.embed_tokens.weight"], explained, "m")
    # BERT's segment table is indexed by token *type* ids, which trimming leaves alone.
    bert = {"embeddings.word_embeddings.weight": (30522, 16), "embeddings.token_type_embeddings.weight": (2, 16)}
    check_id_tables({"vocab_size": 30522, "type_vocab_size": 2}, bert, ["embeddings.word_embeddings.weight"],
                    default_rules(), "m")


def test_trimming_a_gemma3n_shaped_model_is_refused_before_anything_is_written(toy_model, toy_lines, tmp_path):
    """A real Gemma3nForCausalLM whose per-layer table (1,100) is smaller than its vocabulary
    (1,200), as the released Gemma 3n (262,144 < 262,400): `trimworks trim` refuses it."""
    import transformers as T
    from typer.testing import CliRunner

    from flows.cli import app
    from tests import subjects

    folder = tmp_path / "gemma3n"
    cfg = T.Gemma3nTextConfig(
        vocab_size=1200, vocab_size_per_layer_input=1100, hidden_size=16, hidden_size_per_layer_input=4,
        intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        laurel_rank=4, altup_num_inputs=2, num_kv_shared_layers=0, activation_sparsity_pattern=[0.0, 0.0],
        layer_types=["sliding_attention", "full_attention"], architectures=["Gemma3nForCausalLM"])
    subjects.save_model(T.Gemma3nForCausalLM(cfg), folder)
    subjects.copy_tokenizer_files(toy_model, folder)
    text = tmp_path / "en.txt"
    text.write_text("\n".join(toy_lines[:200]))
    runner = CliRunner()
    r = runner.invoke(app, ["count", str(folder), "--text", str(text), "-o", str(tmp_path / "en.parquet")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["trim", str(folder), "--counts", str(tmp_path / "en.parquet"), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "vocab_size_per_layer_input = 1100 sizes 'model.embed_tokens_per_layer.weight' [1100, 8]" in r.output
    assert not (tmp_path / "out").exists()


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
