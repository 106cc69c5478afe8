"""Chat templates exact (chat.py), keep_texts, on real tokenizers with their real templates:
Qwen2 (ChatML, default system prompt) and SmolLM2-135M-Instruct (default system prompt
"You are a helpful AI assistant named SmolLM, trained by Hugging Face"), paired with tiny random weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T

from tasks.engine.tokenizer.chat import chat_fidelity, chat_markup_texts
from tasks.engine.counting.tokens import count_tokens, write_counts
from tasks.engine.selection.policy import SelectionPolicy
from tasks.engine.trim import apply_selection, select_for_model, trim_model
from tasks.engine.verify.outputs import load_kept_ids, verify_exactness
from tests import subjects

LANGS = ("ja", "ko")  # the case: ja+ko drops `assistant` and `system` without the chat rule


def _tiny_lm(folder: Path, config_class, model_class) -> Path:
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    cfg = config_class(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    model_class(cfg).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def qwen2_chat(shared, gguf_tokenizers, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat") / "qwen2"
    shutil.copytree(gguf_tokenizers("qwen2"), folder)
    return _tiny_lm(folder, T.Qwen2Config, T.Qwen2ForCausalLM)


@pytest.fixture(scope="module")
def smollm2_chat(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat") / "smollm2"
    shutil.copytree(subjects.cached_gguf_tokenizer(subjects.smollm2_gguf()), folder)
    return _tiny_lm(folder, T.LlamaConfig, T.LlamaForCausalLM)


def _counts(base: Path, tmp: Path, langs=LANGS) -> list[Path]:
    return [write_counts(count_tokens(base / "tokenizer.json", subjects.gettext_lines(lang, "train", 3000), lang),
                         base / "tokenizer.json", tmp / f"{lang}.parquet") for lang in langs]


def _heldout(langs=LANGS) -> dict[str, list[str]]:
    return {lang: subjects.gettext_lines(lang, "heldout", 300) for lang in langs}


@pytest.mark.parametrize("subject", ["qwen2_chat", "smollm2_chat"])
def test_chat_prompts_tokenize_identically(subject, request, tmp_path, shared):
    base = request.getfixturevalue(subject)
    counts = _counts(base, tmp_path)
    markup = chat_markup_texts(base)
    assert any("<|im_start|>assistant" in t for t in markup), markup[:5]
    out = tmp_path / "trimmed"
    trim_model(base, counts, SelectionPolicy(min_count=2), 8, out)
    report = verify_exactness(base, out, _heldout(), sample_lines=2, max_length=24)
    assert report.chat_prompts and report.chat_prompts >= 20
    assert report.chat_identical == report.chat_prompts, report.chat_mismatches
    assert report.exact
    # The generation prompt ends in `<|im_start|>assistant\n` with `assistant` one token, as in the base.
    tok_b, tok_t = (T.AutoTokenizer.from_pretrained(str(f)) for f in (base, out))
    msgs = [{"role": "user", "content": _heldout()["ja"][0]}]
    ids_b = tok_b.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    ids_t = tok_t.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert tok_t.convert_ids_to_tokens(ids_t) == tok_b.convert_ids_to_tokens(ids_b)
    if subject == "qwen2_chat":  # the case: the prompt ended `<|im_start|> ass ist ant`
        assert tok_t.convert_ids_to_tokens(ids_t[-3:]) == ["<|im_start|>", "assistant", "Ċ"]
    assert load_kept_ids(out)[ids_t].tolist() == ids_b  # default system prompt included: same length, same tokens

    # Without the chat rule the same selection breaks chat prompts: the rule is what makes them exact.
    bare = select_for_model(base, counts, SelectionPolicy(min_count=2), 8, chat_template=False)
    apply_selection(base, bare, tmp_path / "bare")
    broken = chat_fidelity(base, tmp_path / "bare", load_kept_ids(tmp_path / "bare"), _heldout()["ja"][:10])
    assert broken.identical < broken.prompts


def test_keep_texts_encode_exactly(qwen2_chat, tmp_path):
    base = qwen2_chat
    counts = _counts(base, tmp_path, ("ja",))
    texts = ["Quantenchromodynamik für Anfänger", "Зелёный чай — 250 ₽", "label: positive | negative | neutral"]
    kt = tmp_path / "keep.txt"
    kt.write_text("\n".join(texts[1:]) + "\n")
    from tasks.engine.selection.keep_texts import read_keep_text_files
    from tasks.engine.selection.policy import KeepTextFile

    policy = SelectionPolicy(min_count=2, keep_texts=(texts[0], KeepTextFile(file=str(kt))))
    out = tmp_path / "kept"
    trim_model(base, counts, policy, 8, out, keep_texts=read_keep_text_files([kt]))
    control = select_for_model(base, counts, SelectionPolicy(min_count=2), 8)
    from tokenizers import Tokenizer

    tb, tt = Tokenizer.from_file(str(base / "tokenizer.json")), Tokenizer.from_file(str(out / "tokenizer.json"))
    kept = load_kept_ids(out)
    for text in texts:
        want = tb.encode(text, add_special_tokens=False).ids
        assert kept[tt.encode(text, add_special_tokens=False).ids].tolist() == want
        assert not np.isin(want, control.kept_ids).all(), f"{text!r} would be covered anyway: the test proves nothing"


def test_cli_keep_text_and_architectures(toy_model, tmp_path, toy_lines):
    """`trimworks trim --keep-text FILE --architectures FILE`: an extra head described by a user file."""
    from safetensors.torch import load_file, save_file

    cfg = json.loads((toy_model / "config.json").read_text())
    w = load_file(str(toy_model / "model.safetensors"))
    w["my_head.weight"] = torch.randn(cfg["vocab_size"], 16)
    save_file(w, str(toy_model / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "en.txt").write_text("\n".join(toy_lines[:500]) + "\n")
    from typer.testing import CliRunner

    from flows.cli import app

    def cli(args: list[str]) -> tuple[int, str]:  # in-process: exit status and stderr, no fresh interpreter per call
        r = CliRunner().invoke(app, args)
        return r.exit_code, r.stderr

    counts = tmp_path / "en.parquet"
    assert cli(["count", str(toy_model), "--text", str(tmp_path / "en.txt"), "-o", str(counts)])[0] == 0
    rc, err = cli(["trim", str(toy_model), "--counts", str(counts), "-o", str(tmp_path / "a")])
    assert rc == 2 and "'my_head.weight'" in err and "--architectures" in err
    rules = tmp_path / "rules.yaml"
    rules.write_text("vocab_tensors:\n  - {pattern: '^my_head\\.weight$', axis: 0, role: 'probe head'}\n")
    keep = tmp_path / "keep.txt"
    keep.write_text("Zyxwv qjkx\n")
    rc, err = cli(["trim", str(toy_model), "--counts", str(counts), "-o", str(tmp_path / "b"),
                   "--architectures", str(rules), "--keep-text", str(keep)])
    assert rc == 0, err
    kept = load_kept_ids(tmp_path / "b")
    assert tuple(load_file(str(tmp_path / "b" / "model.safetensors"))["my_head.weight"].shape) == (kept.size, 16)
    from tokenizers import Tokenizer

    tb, tt = (Tokenizer.from_file(str(f / "tokenizer.json")) for f in (toy_model, tmp_path / "b"))
    for text in ("Zyxwv qjkx\n", "Zyxwv qjkx"):
        assert kept[tt.encode(text).ids].tolist() == tb.encode(text).ids


def test_card_and_record_show_the_chat_check():
    from tasks.pipeline.report.card import render_card
    from tasks.pipeline.report.record import VariantRecord

    def card(**kw):
        rec = VariantRecord(variant_id="v", base="b", languages=["ja"], multiple=8, repo_id="o/v", fingerprint="f",
                            status="published", **kw)
        return str(render_card(rec, base_name="b", base_link="x", license="mit", model_type="qwen2", is_causal=True,
                               policy="{}", corpora=["c"], plot_file=None, model_class="AutoModelForCausalLM"))

    assert "**140 of 140** chat prompts (100%)" in card(chat_prompts=140, chat_identical=140)
    assert "Chat template" not in card()  # a base without a chat template
