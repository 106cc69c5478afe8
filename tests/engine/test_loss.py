"""What a variant loses on text it does not cover: NLL per character (causal LM) and sentence
embedding cosine (encoder), split into covered and uncovered lines."""

from __future__ import annotations

import json

import pytest

from tasks.engine.counting.tokens import count_tokens
from tasks.engine.selection.policy import SelectionPolicy
from tasks.engine.trim import trim_model
from tasks.engine.verify.loss import COSINE_FLOOR, text_loss, texts_loss
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
    # Through the base (its hidden states at the masks, the variant's head): the same agreement.
    through = texts_loss(base, out, {"eu": udhr_lines("eu"), "ka": udhr_lines("ka")}, sample_per_split=4,
                         dtype="float64", through_base=True, cache_dir=tmp_path / "seq")
    assert through["eu"].through_base and through["eu"].covered.top1_agreement == 1.0
    assert through["ka"].uncovered.top1_agreement == ka.uncovered.top1_agreement
    assert through["eu"].uncovered.top1_agreement == eu.uncovered.top1_agreement


def _variant_of(base, lines, out, multiple=8):
    """An under-trimmed variant of `base` (counted on 60 lines only), so a text has uncovered lines."""
    counts = count_tokens(base / "tokenizer.json", lines[:60], "few lines")
    trim_model(base, [counts], SelectionPolicy(min_count=1), multiple, out)
    return out


def _same_figures(a, b, tol=1e-5) -> None:
    for split in ("covered", "uncovered", "all"):
        sa, sb = getattr(a, split), getattr(b, split)
        assert sa.lines == sb.lines
        for field in ("nll_per_char_before", "nll_per_char_after", "cosine_mean", "cosine_min"):
            va, vb = getattr(sa, field), getattr(sb, field)
            assert (va is None) == (vb is None), (split, field)
            if va is not None:
                assert abs(va - vb) <= tol * max(1.0, abs(vb)), (split, field, va, vb)


def _base_runs(monkeypatch) -> list[int]:
    """How many id sequences the base is run on by the through-base path, call by call."""
    from tasks.engine.verify import base_sequences as S

    runs: list[int] = []
    real = S.compute_sequences

    def counting(base_dir, missing, *args):
        runs.append(len(missing))
        return real(base_dir, missing, *args)

    monkeypatch.setattr(S, "compute_sequences", counting)
    return runs


def _untied_llama(tmp_path, toy_model):
    import transformers as T

    base = tmp_path / "llama-untied"
    vocab = json.loads((toy_model / "config.json").read_text())["vocab_size"]
    cfg = T.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    subjects.save_model(T.LlamaForCausalLM(cfg), base)
    subjects.copy_tokenizer_files(toy_model, base)
    return base


def _t5(tmp_path, toy_model):
    import transformers as T

    base = tmp_path / "t5"
    vocab = json.loads((toy_model / "config.json").read_text())["vocab_size"]
    cfg = T.T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=0,
                     architectures=["T5ForConditionalGeneration"])
    subjects.save_model(T.T5ForConditionalGeneration(cfg), base)
    subjects.copy_tokenizer_files(toy_model, base)
    return base


@pytest.mark.parametrize("family", ["gpt2-tied", "llama-untied", "t5-encoder-decoder"])
def test_loss_through_the_base_is_the_variants_own(family, toy_model, toy_lines, tmp_path, monkeypatch):
    """A proved variant's figures computed from the base's hidden states and the variant's head
    equal those of running the variant itself (tied and untied decoders, an encoder-decoder), and
    a sibling of the same base runs the base on no sequence already computed."""
    base = {"gpt2-tied": lambda: toy_model, "llama-untied": lambda: _untied_llama(tmp_path, toy_model),
            "t5-encoder-decoder": lambda: _t5(tmp_path, toy_model)}[family]()
    v8 = _variant_of(base, toy_lines, tmp_path / "v8", 8)
    v64 = _variant_of(base, toy_lines, tmp_path / "v64", 64)
    text = {"heldout": toy_lines[1000:1400]}
    own = texts_loss(base, v8, text, sample_per_split=4, dtype="float32")["heldout"]
    from tasks.engine.verify import base_sequences as S

    one_by_one = S.run_one_by_one
    monkeypatch.setattr(S, "run_one_by_one", lambda *a: pytest.fail("the padded batch was not used"))
    runs = _base_runs(monkeypatch)
    cache = tmp_path / "sequences"
    through = texts_loss(base, v8, text, sample_per_split=4, dtype="float32", through_base=True, cache_dir=cache)["heldout"]
    assert through.kind == own.kind == "nll_per_char" and own.uncovered.lines == 4
    _same_figures(through, own)
    assert runs == [12]  # 4 covered lines (one sequence each) + 4 uncovered (the base's ids and the variant's)
    # Where a model refuses the padded batch, the lines run one at a time, with the same figures.
    monkeypatch.setattr(S, "run_one_by_one", one_by_one)
    monkeypatch.setattr(S, "run_batched", lambda *a: (_ for _ in ()).throw(TypeError("no attention_mask")))
    S.SEQUENCES.clear()
    _same_figures(texts_loss(base, v8, text, sample_per_split=4, dtype="float32", through_base=True,
                             cache_dir=tmp_path / "other")["heldout"], own)
    runs.clear()
    sibling = texts_loss(base, v64, text, sample_per_split=4, dtype="float32", through_base=True, cache_dir=cache)["heldout"]
    _same_figures(sibling, texts_loss(base, v64, text, sample_per_split=4, dtype="float32")["heldout"])
    assert sum(runs) < 12, runs  # of its 12 sequences, those computed for v8 are not computed again


def test_encoder_loss_through_the_base_is_the_variants_own(tmp_path, monkeypatch):
    """MiniLM (real weights) trimmed for Basque, measured on Georgian: the through-base cosines
    are the variant's own; a second process finds the sequences in the cache folder."""
    from tasks.engine.verify import base_sequences as S
    from tasks.pipeline.evaluation.benchmark_text import udhr_lines

    minilm = subjects.minilm_folder()
    counts = count_tokens(minilm / "tokenizer.json", udhr_lines("eu")[:40], "eu")
    out = tmp_path / "minilm-eu"
    trim_model(minilm, [counts], SelectionPolicy(min_count=1), 8, out, languages=("eu",))
    texts = {"eu": udhr_lines("eu"), "ka": udhr_lines("ka")}
    own = texts_loss(minilm, out, texts, sample_per_split=3, dtype="float32")
    cache = tmp_path / "sequences"
    through = texts_loss(minilm, out, texts, sample_per_split=3, dtype="float32", through_base=True, cache_dir=cache)
    for name in texts:
        assert through[name].kind == "cosine"
        _same_figures(through[name], own[name])
    assert through["eu"].covered.cosine_min > 1 - 1e-12  # the very same sequence: one pooled embedding
    S.SEQUENCES.clear()  # as in a fresh worker process: only the folder is shared
    runs = _base_runs(monkeypatch)
    again = texts_loss(minilm, out, texts, sample_per_split=3, dtype="float32", through_base=True, cache_dir=cache)
    assert runs == [] and again == through
    # A damaged file is computed again, not trusted.
    victim = next(cache.rglob("*.npz"))
    victim.write_bytes(b"not a numpy archive")
    S.SEQUENCES.clear()
    repaired = texts_loss(minilm, out, texts, sample_per_split=3, dtype="float32", through_base=True, cache_dir=cache)
    for name in texts:  # computed alone, not in its batch: equal up to float rounding
        _same_figures(repaired[name], through[name], tol=1e-6)
    assert runs == [1]


def test_logits_changed_after_the_head_run_the_variant_itself(toy_model, toy_lines, tmp_path, monkeypatch):
    """A model whose logits are capped after its head (Gemma 2's final_logit_softcapping): the
    head's output is not the logits, so the variant's own model is run, with the same figures."""
    import transformers as T

    base = tmp_path / "gemma2"
    vocab = json.loads((toy_model / "config.json").read_text())["vocab_size"]
    cfg = T.Gemma2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=0.5,
                         architectures=["Gemma2ForCausalLM"])
    subjects.save_model(T.Gemma2ForCausalLM(cfg), base)
    subjects.copy_tokenizer_files(toy_model, base)
    v8 = _variant_of(base, toy_lines, tmp_path / "v8")
    text = {"heldout": toy_lines[1000:1400]}
    runs = _base_runs(monkeypatch)
    through = texts_loss(base, v8, text, sample_per_split=3, dtype="float32", through_base=True,
                         cache_dir=tmp_path / "c")["heldout"]
    assert runs  # it tried, found the cap, and ran the variant
    _same_figures(through, texts_loss(base, v8, text, sample_per_split=3, dtype="float32")["heldout"])


def test_a_process_remembers_sequences_within_a_byte_budget(toy_model, toy_lines, tmp_path, monkeypatch):
    """The in-memory store is bounded in bytes, not entries (a wide base's lines are large): past
    the budget the oldest go, the figures do not change, and the folder still serves them."""
    from tasks.engine.verify import base_sequences as S

    v8 = _variant_of(toy_model, toy_lines, tmp_path / "v8")
    text = {"heldout": toy_lines[1000:1400]}
    S.SEQUENCES.clear()
    whole = texts_loss(toy_model, v8, text, sample_per_split=4, dtype="float32", through_base=True,
                       cache_dir=tmp_path / "a")["heldout"]
    one_line = max(seq.nbytes for seq in S.SEQUENCES.values())
    monkeypatch.setattr(S, "SEQUENCES_BYTES", 2 * one_line)
    S.SEQUENCES.clear()
    bounded = texts_loss(toy_model, v8, text, sample_per_split=4, dtype="float32", through_base=True,
                         cache_dir=tmp_path / "b")["heldout"]
    assert 0 < sum(seq.nbytes for seq in S.SEQUENCES.values()) <= 2 * one_line
    _same_figures(bounded, whole, tol=1e-6)
    runs = _base_runs(monkeypatch)
    _same_figures(texts_loss(toy_model, v8, text, sample_per_split=4, dtype="float32", through_base=True,
                             cache_dir=tmp_path / "b")["heldout"], whole, tol=1e-6)
    assert runs == []  # what memory let go of, the folder had
