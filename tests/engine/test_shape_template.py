"""The load guard's expected shapes from an on-disk template (shape_template.py): the same
answer transformers gives at any vocab size, a class that is not linear in it asked every time,
and a warm cache that keeps transformers out of the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers as T

from tasks.engine.checkpoint import shape_template
from tasks.engine.checkpoint.shape_template import config_shapes, derive_template, expected_shapes, meta_shapes

REPO = Path(__file__).resolve().parents[2]
TINY = dict(num_hidden_layers=1, num_attention_heads=2, hidden_size=16, intermediate_size=32)

CONFIGS = {
    "llama-tied": lambda: T.LlamaConfig(vocab_size=1000, num_key_value_heads=1, tie_word_embeddings=True,
                                        architectures=["LlamaForCausalLM"], **TINY),
    "qwen2-untied": lambda: T.Qwen2Config(vocab_size=1000, num_key_value_heads=1, tie_word_embeddings=False,
                                          architectures=["Qwen2ForCausalLM"], **TINY),
    "bert": lambda: T.BertConfig(vocab_size=1000, **TINY),  # no architectures: AutoModel
    "t5": lambda: T.T5Config(vocab_size=1000, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                             architectures=["T5ForConditionalGeneration"]),
    "gpt2": lambda: T.GPT2Config(vocab_size=1000, n_embd=16, n_layer=1, n_head=2, n_positions=64,
                                 architectures=["GPT2LMHeadModel"]),
}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(shape_template.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def folder_with(tmp: Path, name: str, config) -> Path:
    folder = tmp / name
    config.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_a_template_predicts_what_transformers_builds_at_another_vocab_size(family, tmp_path, cache):
    base = folder_with(tmp_path, "base", CONFIGS[family]())
    assert expected_shapes(base) == meta_shapes(base)  # the first call asks transformers and keeps a template
    assert len(list((cache / "expected-shapes").glob("*.json"))) == 1
    cfg = json.loads((base / "config.json").read_text())
    for vocab in (8, 333, 999, 4096):
        trimmed = tmp_path / f"v{vocab}"
        trimmed.mkdir()
        (trimmed / "config.json").write_text(json.dumps({**cfg, "vocab_size": vocab, "pad_token_id": 0}))
        assert expected_shapes(trimmed) == meta_shapes(trimmed), vocab  # from the template
    assert len(list((cache / "expected-shapes").glob("*.json"))) == 1  # one template for all variants


def test_a_dimension_not_linear_in_the_vocab_size_is_never_templated(tmp_path, monkeypatch, cache):
    base = folder_with(tmp_path, "base", CONFIGS["llama-tied"]())
    real = config_shapes

    def padded_to_64(config):  # a class that rounds its vocabulary up: V+1 and V+8 give one size
        shapes, prefix = real(config)
        v = config["vocab_size"]
        return {k: tuple(-(-d // 64) * 64 if d == v else d for d in s) for k, s in shapes.items()}, prefix

    monkeypatch.setattr(shape_template, "config_shapes", padded_to_64)
    assert derive_template(json.loads((base / "config.json").read_text()), meta_shapes(base)) is None
    expected_shapes(base)
    assert not (cache / "expected-shapes").exists()  # nothing kept: asked again on every call


def test_an_unreadable_or_foreign_template_is_derived_again(tmp_path, cache):
    base = folder_with(tmp_path, "base", CONFIGS["bert"]())
    want = meta_shapes(base)
    expected_shapes(base)
    (path,) = (cache / "expected-shapes").glob("*.json")
    for junk in ("{not json", json.dumps({"vocab_path": ["vocab_size"], "dims": 3}), json.dumps([1, 2])):
        path.write_text(junk)
        assert expected_shapes(base) == want
    assert json.loads(path.read_text())["dims"]  # rewritten whole


def test_another_config_or_library_version_is_another_template(tmp_path, monkeypatch, cache):
    a = folder_with(tmp_path, "a", CONFIGS["llama-tied"]())
    b = folder_with(tmp_path, "b", T.LlamaConfig(vocab_size=1000, num_key_value_heads=1, **{**TINY, "hidden_size": 32}))
    cfg_a = json.loads((a / "config.json").read_text())
    key = shape_template.template_key(cfg_a)
    assert key == shape_template.template_key({**cfg_a, "vocab_size": 8, "bos_token_id": 3})  # what variants change
    assert key != shape_template.template_key(json.loads((b / "config.json").read_text()))
    monkeypatch.setattr(shape_template, "_version", lambda dist: "99.0")
    assert key != shape_template.template_key(cfg_a)


def test_a_warm_template_keeps_transformers_out_of_the_guard(toy_model, tmp_path, cache):
    """The CLI's trim pays the transformers import only for a base config it never met."""
    from tasks.engine.checkpoint.guard import check_folder_loads

    check_folder_loads(toy_model)  # warms the cache
    code = ("import sys; from tasks.engine.checkpoint.guard import check_folder_loads; "
            f"n = check_folder_loads({str(toy_model)!r}); "
            "print(n, 'transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, shape_template.CACHE_ENV: str(cache)})
    checked, transformers_loaded, torch_loaded = out.stdout.split()
    assert int(checked) > 0 and transformers_loaded == "False" and torch_loaded == "False", out.stdout


def test_an_id_threshold_shapes_its_table_and_is_never_predicted_from_another_variant(tmp_path, cache):
    """Gemma 3n's per-layer table has `vocab_size_per_layer_input` rows, which a trim rewrites per
    variant (the count of kept ids below it): it stays in the key, so a template from one variant
    never predicts another's table."""
    cfg = T.Gemma3nTextConfig(
        vocab_size=1200, vocab_size_per_layer_input=900, hidden_size=16, hidden_size_per_layer_input=4,
        intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        laurel_rank=4, altup_num_inputs=2, num_kv_shared_layers=0, activation_sparsity_pattern=[0.0],
        layer_types=["full_attention"], architectures=["Gemma3nForCausalLM"])
    base = folder_with(tmp_path, "base", cfg)
    assert expected_shapes(base)[0]["model.embed_tokens_per_layer.weight"][0] == 900
    base_cfg = json.loads((base / "config.json").read_text())
    for vocab, below in ((584, 569), (600, 400)):
        trimmed = tmp_path / f"v{vocab}-{below}"
        trimmed.mkdir()
        (trimmed / "config.json").write_text(json.dumps({**base_cfg, "vocab_size": vocab, "vocab_size_per_layer_input": below}))
        shapes = expected_shapes(trimmed)[0]
        assert shapes == meta_shapes(trimmed)[0]
        assert shapes["model.embed_tokens_per_layer.weight"][0] == below
        assert shapes["model.embed_tokens.weight"][0] == vocab
