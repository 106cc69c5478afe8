"""Cards: sentence-transformers bases get its library name and usage; usage loads from where
the model really is; the loss note says why it drops; the card's plot marks the variant."""

from __future__ import annotations

import json

import numpy as np
import yaml

from tasks.pipeline.report.card import render_card
from tasks.pipeline.report.record import LanguageScore, VariantRecord
from tasks.pipeline.report.variant_plot import plot_variant


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


def test_variant_plots_share_one_drawn_background(tmp_path):
    """The curves are drawn once per base x subset; each variant only adds its marker and title."""
    from PIL import Image

    from tasks.pipeline.report import variant_plot

    base_png = tmp_path / "m-coverage.png"
    sizes = [64, 256, 1024, 4096, 16384, 30522]
    base_png.with_suffix(".json").write_text(json.dumps({
        "base": "m", "vocab_size": 30522, "sizes": sizes, "curves": {"fr": [10, 40, 70, 88, 95, 99]}}))
    variant_plot._BACKGROUNDS.clear()
    outs = [tmp_path / f"v{n}.png" for n in (6656, 6720, 200)]
    for out, n in zip(outs, (6656, 6720, 200)):
        assert plot_variant(base_png, rec(vocab_after=n, variant_id=f"m-fr-v{n}"), out)
    assert len(variant_plot._BACKGROUNDS) == 1
    images = [np.asarray(Image.open(o).convert("RGB")).astype(int) for o in outs]
    assert all(i.shape == images[0].shape for i in images)
    assert (images[0] != images[1]).any(axis=2).sum() > 50  # the marker moved (and the title changed)
    # Nothing of one variant's marker stays behind in the next: v6656 drawn again is pixel-identical.
    assert plot_variant(base_png, rec(vocab_after=6656, variant_id="m-fr-v6656"), tmp_path / "again.png")
    assert (np.asarray(Image.open(tmp_path / "again.png").convert("RGB")).astype(int) == images[0]).all()
    # A variant outside the curves' range widens the axes (a background of its own).
    assert plot_variant(base_png, rec(vocab_after=40, variant_id="m-fr-v40"), tmp_path / "small.png")
    assert len(variant_plot._BACKGROUNDS) == 2


def test_base_plot_is_redrawn_only_when_its_inputs_change(tmp_path, toy_model, toy_lines):
    from tasks.engine.counting.tokens import count_tokens, write_counts
    from tasks.pipeline.report.catalog import plot_coverage

    tok = toy_model / "tokenizer.json"
    counts = write_counts(count_tokens(tok, toy_lines[:300], "c"), tok, tmp_path / "c.parquet")
    out = tmp_path / "plots" / "toy-coverage.png"
    held = {"en": toy_lines[300:340]}
    plot_coverage("toy", toy_model / "tokenizer.json", None, {"en": counts}, held, out)
    first = out.stat().st_mtime_ns
    plot_coverage("toy", toy_model / "tokenizer.json", None, {"en": counts}, held, out)
    assert out.stat().st_mtime_ns == first  # same inputs: not drawn again
    plot_coverage("toy", toy_model / "tokenizer.json", None, {"en": counts}, {"en": toy_lines[340:380]}, out)
    assert out.stat().st_mtime_ns != first  # other held-out text: drawn again
    assert json.loads(out.with_suffix(".json").read_text())["curves"]["en"]
