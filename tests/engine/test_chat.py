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


# Templates exercising what transformers' renderer adds to jinja2: trim/lstrip blocks, loop controls,
# `{% generation %}`, tojson, namespace, raise_exception, special tokens, tools, named templates.
TEMPLATES = {
    "bos_tokens": "{{ bos_token }}{% for m in messages %}  {{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n{% endfor %}"
                  "{% if add_generation_prompt %}assistant:{% endif %}",
    "no_system": "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
                 "[{{ m['role'] | upper }}]\n    {{ m['content'] | trim }}\n{% endfor %}",
    "tools_json": "{%- if tools is not none %}<tools>{{ tools | tojson(indent=2) }}</tools>\n{%- endif %}"
                  "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                  "{% if loop.index > 3 %}{% break %}{% endif %}<{{ ns.n }}|{{ m.role }}>{{ m.content }}\n"
                  "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% generation %}{% endgeneration %}{% endif %}",
    "broken": "{% for m in messages %}{{ m.content }",
    "multiline": """{% for m in messages %}
    {% if m['role'] == 'user' %}
    <user>{{ m['content'] }}
    {% else %}
    <{{ m['role'] }}>{{ m['content'] }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
    <assistant>
{% endif %}""",
}


def _with_template(src: Path, dst: Path, template: str | None = None, config: dict | None = None,
                   extra: dict[str, str] | None = None) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "chat_template.jinja"))
    if template is not None:
        (dst / "chat_template.jinja").write_text(template)
    for name, text in (extra or {}).items():
        (dst / "additional_chat_templates").mkdir(exist_ok=True)
        (dst / "additional_chat_templates" / f"{name}.jinja").write_text(text)
    if config is not None:
        cfg = json.loads((dst / "tokenizer_config.json").read_text())
        (dst / "tokenizer_config.json").write_text(json.dumps({**cfg, **config}))
    return dst


def _transformers_markup(folder: Path) -> list[str]:
    """chat_markup_texts as it was: rendered by transformers' apply_chat_template."""
    from tasks.engine.tokenizer import chat

    tok = T.AutoTokenizer.from_pretrained(str(folder))
    if not getattr(tok, "chat_template", None):
        return []
    return chat._markup(lambda messages, gen, tools: chat._render(tok, messages, gen, tools))


def _assert_renders_as_transformers(folder: Path) -> None:
    from tasks.engine.tokenizer.chat import SENTINEL, _conversations, read_chat_template, render_chat

    source = read_chat_template(folder)
    tok = T.AutoTokenizer.from_pretrained(str(folder))
    rendered = 0
    for messages, gen, tools in _conversations([SENTINEL.format(i) for i in range(4)] + ["  Grüß Gott!\n  "]):
        try:
            want = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False,
                                           **({"tools": chat_tools()} if tools else {}))
        except Exception as exc:  # noqa: BLE001
            with pytest.raises(type(exc)):
                render_chat(source, messages, gen, tools)
            continue
        assert render_chat(source, messages, gen, tools) == want
        rendered += 1
    assert rendered, "no conversation rendered: the comparison proves nothing"


def chat_tools():
    from tasks.engine.tokenizer.chat import TOOLS

    return TOOLS


@pytest.mark.parametrize("subject", ["qwen2_chat", "smollm2_chat"])
def test_real_templates_render_as_transformers(subject, request, tmp_path):
    base = request.getfixturevalue(subject)
    _assert_renders_as_transformers(base)
    assert chat_markup_texts(base) == _transformers_markup(base)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_templates_render_as_transformers(name, smollm2_chat, tmp_path):
    folder = _with_template(smollm2_chat, tmp_path / name, TEMPLATES[name])
    if name != "broken":
        _assert_renders_as_transformers(folder)
    assert chat_markup_texts(folder) == _transformers_markup(folder)
    assert (chat_markup_texts(folder) == []) == (name == "broken")


def test_template_sources_as_transformers_reads_them(smollm2_chat, tmp_path):
    """A template in tokenizer_config.json, named templates (tool_use picked with tools), a named
    special token, a template file overriding the config's entry, no template at all."""
    from tasks.engine.tokenizer.chat import read_chat_template

    cases = {
        "in_config": dict(config={"chat_template": TEMPLATES["bos_tokens"]}),
        "named_in_config": dict(config={"chat_template": [{"name": "default", "template": TEMPLATES["bos_tokens"]},
                                                          {"name": "tool_use", "template": TEMPLATES["tools_json"]}]}),
        "named_files": dict(template=TEMPLATES["no_system"], extra={"tool_use": TEMPLATES["tools_json"]}),
        "file_wins": dict(template=TEMPLATES["no_system"], config={"chat_template": TEMPLATES["bos_tokens"]}),
        "no_default": dict(extra={"tool_use": TEMPLATES["tools_json"]}),
        "model_token": dict(template="{{ image_token }}{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}",
                            config={"image_token": {"content": "<img>", "__type": "AddedToken"},
                                    "bos_token": {"content": "<|im_start|>", "__type": "AddedToken"}}),
        "none": dict(),
    }
    for name, kw in cases.items():
        folder = _with_template(smollm2_chat, tmp_path / name, **kw)
        assert chat_markup_texts(folder) == _transformers_markup(folder), name
        if name not in ("none", "no_default"):
            _assert_renders_as_transformers(folder)
    assert read_chat_template(tmp_path / "none") is None
    assert "<img><|im_start|>" in chat_markup_texts(tmp_path / "model_token")


def test_unsettled_special_token_falls_back_to_transformers(smollm2_chat, tmp_path, monkeypatch):
    """A `*_token` the files do not give (a tokenizer class may default it): transformers renders."""
    from tasks.engine.tokenizer import chat

    folder = _with_template(smollm2_chat, tmp_path / "sep", "{{ sep_token }}|{% for m in messages %}{{ m.content }}{% endfor %}")
    with pytest.raises(chat.NeedsTransformers):
        chat.render_chat(chat.read_chat_template(folder), [{"role": "user", "content": "x"}], True, False)
    loads = []
    monkeypatch.setattr(chat, "load_chat_tokenizer", lambda f: loads.append(f) or T.AutoTokenizer.from_pretrained(str(f)))
    assert chat_markup_texts(folder) == _transformers_markup(folder) and loads == [folder]


def test_selection_imports_neither_transformers_nor_torch(smollm2_chat, tmp_path):
    """`trimworks trim`'s selection (counts, chat-template tokens, keep-texts) in a fresh process:
    importing transformers to render the template cost ~10 s of a 1-2 s trim."""
    import subprocess
    import sys

    lines = tmp_path / "de.txt"
    lines.write_text("Guten Morgen, wie geht es dir?\nDas Wetter ist heute schön.\n")
    code = f"""
import sys
from pathlib import Path
from tasks.engine.counting.tokens import count_tokens, iter_text_file
from tasks.engine.selection.policy import SelectionPolicy
from tasks.engine.trim import select_for_model
base = Path({str(smollm2_chat)!r})
counts = count_tokens(base / "tokenizer.json", iter_text_file(Path({str(lines)!r})), "de")
sel = select_for_model(base, [counts], SelectionPolicy(min_count=1), 8, keep_texts=["Grüß Gott"])
print(sel.size, sorted(m for m in ("transformers", "torch") if m in sys.modules))
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    size, loaded = out.stdout.split(" ", 1)
    assert int(size) > 0 and loaded.strip() == "[]", out.stdout


def test_a_chat_template_that_renders_nothing_is_a_failed_check_not_100_percent():
    """Every prompt shape raised: 0 of 0 prompts is no evidence, and says so."""
    from tasks.engine.verify.outputs import ExactnessReport, LanguageFidelity

    lang = LanguageFidelity(language="en", lines=10, covered_lines=8, identical_covered_lines=8,
                            tokens_per_char_before=0.3, tokens_per_char_after=0.3)
    report = ExactnessReport(languages=[lang], chat_prompts=0, chat_identical=0)
    assert "rendered none of the chat prompts" in report.vacuous_reason(outputs_expected=False)
    assert ExactnessReport(languages=[lang], chat_prompts=None).vacuous_reason(outputs_expected=False) is None
    assert ExactnessReport(languages=[lang], chat_prompts=4, chat_identical=4).vacuous_reason(outputs_expected=False) is None
