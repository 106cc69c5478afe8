"""Cards: sentence-transformers bases get its library name and usage; usage loads from where
the model really is; the loss note says why it drops; the card's plot marks the variant."""

from __future__ import annotations

import json
import re
import sys
import types

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


def snippets(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def run_snippet(code: str, monkeypatch, cwd) -> list[str]:
    """Run a usage snippet against stand-ins of transformers and sentence-transformers; the paths it loads."""
    loaded: list[str] = []

    class Loader:
        @staticmethod
        def from_pretrained(path):
            loaded.append(str(path))

    def sentence_transformer(path):
        loaded.append(str(path))
        return types.SimpleNamespace(encode=lambda texts: None)

    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(BertModel=Loader, AutoTokenizer=Loader))
    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=sentence_transformer))
    monkeypatch.chdir(cwd)
    exec(compile(code, "<card usage>", "exec"), {})
    return loaded


def test_sentence_transformers_base_and_registry_relative_location(tmp_path, monkeypatch):
    meta, text = card(rec(), model_class="BertModel", sentence_transformers=True, location="trimworks/m-trimmed-fr-v64",
                      registry="published")
    assert meta["library_name"] == "sentence-transformers" and "sentence-transformers" in meta["tags"]
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert 'registry = "published"' in text and 'SentenceTransformer(f"{registry}/trimworks/m-trimmed-fr-v64")' in text
    assert str(tmp_path) not in text and '"/' not in text  # no absolute path: the registry may move
    folder = tmp_path / "published" / "trimworks" / "m-trimmed-fr-v64"
    folder.mkdir(parents=True)
    loaded = [p for code in snippets(text) for p in run_snippet(code, monkeypatch, tmp_path)]
    assert loaded and all((tmp_path / p).resolve() == folder for p in loaded)  # from beside the registry: its folder


def test_plain_transformers_base_and_hub_id(tmp_path, monkeypatch):
    meta, text = card(rec(), model_class="BertModel")
    assert meta["library_name"] == "transformers" and "SentenceTransformer" not in text
    assert 'from_pretrained("trimworks/m-trimmed-fr-v64")' in text and "registry" not in snippets(text)[0]
    assert run_snippet(snippets(text)[0], monkeypatch, tmp_path) == ["trimworks/m-trimmed-fr-v64"] * 2  # the Hub id


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
