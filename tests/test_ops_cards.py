"""Cards: sentence-transformers bases get its library name and usage; usage loads from where
the model really is; the loss note says why it drops; the card's plot marks the variant."""

from __future__ import annotations

import json

import yaml

from tasks.pipeline.card import render_card
from tasks.pipeline.record import LanguageScore, VariantRecord
from tasks.pipeline.variant_plot import plot_variant


def rec(**over) -> VariantRecord:
    base = dict(variant_id="m-fr-v64", base="m", languages=["fr"], multiple=64, repo_id="trimworks/m-trimmed-fr-v64",
                fingerprint="f" * 64, status="published", vocab_before=30522, vocab_after=6656,
                fidelity={"fr": LanguageScore(lines=100, coverage=0.9, identity=1.0, tokens_per_char_before=0.3,
                                              tokens_per_char_after=0.3)}, output_max_abs_diff=0.0)
    return VariantRecord(**{**base, **over})


def card(r: VariantRecord, **kw) -> tuple[dict, str]:
    text = str(render_card(r, base_name="org/base", base_link="https://huggingface.co/org/base", license="mit",
                           model_type="bert", is_causal=False, policy="{}", corpora=["fr: x"], **kw))
    return yaml.safe_load(text.split("---")[1]), text


def test_sentence_transformers_base_and_local_location():
    meta, text = card(rec(), model_class="BertModel", sentence_transformers=True, location="/srv/registry/trimworks/m-trimmed-fr-v64")
    assert meta["library_name"] == "sentence-transformers" and "sentence-transformers" in meta["tags"]
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert 'SentenceTransformer("/srv/registry/trimworks/m-trimmed-fr-v64")' in text
    assert 'BertModel.from_pretrained("/srv/registry/trimworks/m-trimmed-fr-v64")' in text


def test_plain_transformers_base_and_hub_id():
    meta, text = card(rec(), model_class="BertModel")
    assert meta["library_name"] == "transformers" and "SentenceTransformer" not in text
    assert 'from_pretrained("trimworks/m-trimmed-fr-v64")' in text


def test_loss_note_explains_the_drop():
    _, text = card(rec(loss_before=6.02, loss_after=5.79), model_class="AutoModelForCausalLM")
    assert "before 6.0200, after 5.7900" in text and "not an improvement" in text and "kept tokens only" in text


def test_card_plot_marks_the_variant(tmp_path):
    base_png = tmp_path / "m-coverage.png"
    sizes = [64, 256, 1024, 4096, 16384, 30522]
    base_png.with_suffix(".json").write_text(json.dumps({
        "base": "m", "vocab_size": 30522, "sizes": sizes,
        "curves": {"fr": [10, 40, 70, 88, 95, 99], "de": [5, 30, 60, 85, 94, 99]}}))
    out = tmp_path / "coverage.png"
    assert plot_variant(base_png, rec(), out) and out.stat().st_size > 5000
    assert not plot_variant(tmp_path / "no-data.png", rec(), tmp_path / "x.png")  # old plots: caller copies
