"""What a variant loses on text it does not cover: NLL per character (causal LM) and sentence
embedding cosine (encoder), split into covered and uncovered lines."""

from __future__ import annotations

from tasks.engine.counting.tokens import count_tokens
from tasks.engine.selection.policy import SelectionPolicy
from tasks.engine.trim import trim_model
from tasks.engine.verify.loss import COSINE_FLOOR, text_loss
from tests import subjects


def test_causal_lm_loses_nothing_on_covered_lines_and_measurably_on_uncovered(toy_model, toy_lines, tmp_path):
    counts = count_tokens(toy_model / "tokenizer.json", toy_lines[:60], "few lines")  # under-trimmed on purpose
    out = tmp_path / "trimmed"
    trim_model(toy_model, [counts], SelectionPolicy(min_count=1), 8, out)
    loss = text_loss(toy_model, out, toy_lines[1000:1400], sample_per_split=6)
    assert loss.kind == "nll_per_char" and loss.covered.lines == 6 and loss.uncovered.lines == 6
    # Covered: the same logits on the kept columns, renormalised over fewer tokens: never higher.
    assert loss.covered.nll_ratio <= 1 + 1e-12
    assert loss.covered.nll_ratio > 0.5  # not a degenerate measure
    # Uncovered: more, shorter tokens the model reads worse.
    assert loss.uncovered.nll_ratio > loss.covered.nll_ratio + 0.05, loss
    assert loss.all.lines == 12


def test_sentence_encoder_keeps_covered_embeddings_and_moves_uncovered_ones(tmp_path):
    """Real MiniLM trimmed for Basque (UDHR): Basque lines it covers embed identically; Georgian
    lines, full of [UNK] after the trim, move below the cosine floor."""
    from tasks.pipeline.evaluation.benchmark_text import udhr_lines

    minilm = subjects.minilm_folder()
    counts = count_tokens(minilm / "tokenizer.json", udhr_lines("eu")[:40], "eu")
    out = tmp_path / "minilm-eu"
    trim_model(minilm, [counts], SelectionPolicy(min_count=1), 8, out, languages=("eu",))
    eu = text_loss(minilm, out, udhr_lines("eu"), sample_per_split=4)
    assert eu.kind == "cosine" and eu.covered.lines == 4
    assert eu.covered.cosine_min > 1 - 1e-9
    ka = text_loss(minilm, out, udhr_lines("ka"), sample_per_split=4)
    assert ka.uncovered.lines == 4 and ka.uncovered.cosine_mean < COSINE_FLOOR and ka.uncovered.share_below_floor > 0.5, ka



def test_masked_lm_top1_agreement_is_whole_on_covered_lines(tmp_path):
    """A BERT masked LM on MiniLM's real WordPiece tokenizer: with every fourth word masked, the
    variant's top-1 predictions are the base's (over the kept tokens) on every covered line."""
    import transformers as T

    from tasks.pipeline.evaluation.benchmark_text import udhr_lines

    minilm = subjects.minilm_folder()
    base = tmp_path / "bert-mlm"
    cfg = T.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=128, architectures=["BertForMaskedLM"])
    subjects.save_model(T.BertForMaskedLM(cfg), base)
    subjects.copy_tokenizer_files(minilm, base)
    counts = count_tokens(base / "tokenizer.json", udhr_lines("eu")[:40], "eu")
    out = tmp_path / "bert-mlm-eu"
    trim_model(base, [counts], SelectionPolicy(min_count=1), 8, out, languages=("eu",))
    eu = text_loss(base, out, udhr_lines("eu"), sample_per_split=4)
    assert eu.kind == "top1_agreement" and eu.covered.lines == 4 and eu.covered.top1_agreement == 1.0, eu
    ka = text_loss(base, out, udhr_lines("ka"), sample_per_split=4)
    assert ka.uncovered.lines == 4 and 0.0 <= ka.uncovered.top1_agreement <= 1.0
