"""Selection rules: merge closure, always-kept tokens, multiples, top_k, weighting, keep-list."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from tasks.engine.counting.tokens import TokenCounts, count_tokens
from tasks.engine.errors import SelectionError
from tasks.engine.checkpoint.model_folder import load_tokenizer_json, tokenizer_fingerprint
from tasks.engine.selection.policy import SelectionPolicy, select_kept_ids
from tasks.engine.tokenizer.rebuild import rebuild_tokenizer_json
from tasks.engine.tokenizer.vocab import analyze_tokenizer, byte_level_alphabet
from tests import subjects


def _vocab(folder):
    return analyze_tokenizer(load_tokenizer_json(folder / "tokenizer.json"))


def _counts(folder, lines, name="c"):
    return count_tokens(folder / "tokenizer.json", lines, name)


def _synthetic(vocab, values: dict[int, int], name="syn") -> TokenCounts:
    c = np.zeros(vocab.id_space, dtype=np.int64)
    for i, v in values.items():
        c[i] = v
    return TokenCounts(c, "fp", name, 1, int(c.sum()))


def test_byte_alphabet_and_specials_always_kept(toy_model, toy_lines):
    vocab = _vocab(toy_model)
    sel = select_kept_ids(vocab, [_counts(toy_model, toy_lines[:50])], SelectionPolicy(), 8)
    kept = {vocab.id_to_token[int(i)] for i in sel.kept_ids}
    assert byte_level_alphabet() <= kept
    assert "<|endoftext|>" in kept
    assert sel.n_always >= 257


def test_merge_closure_restores_dropped_parents_and_matters(toy_model, toy_lines):
    vocab = _vocab(toy_model)
    tok_json = load_tokenizer_json(toy_model / "tokenizer.json")
    tok = Tokenizer.from_file(str(toy_model / "tokenizer.json"))
    # Count a single long word: only its final token is counted, not its merge ancestors.
    longest = max((t for t in vocab.token_to_id if t.startswith("Ġ") and len(t) > 6), key=len)
    word = tok.decode([vocab.token_to_id[longest]])
    line = word.strip() + " " + word.strip()
    counts = _counts(toy_model, [line] * 3)
    counted = set(np.flatnonzero(counts.counts))
    parents = {p for a, b in vocab.producers[vocab.token_to_id[longest]] for p in (a, b)}
    assert parents - counted, "the subject must have a counted token whose parents were not counted"

    closed = select_kept_ids(vocab, [counts], SelectionPolicy(), 8)
    assert parents <= set(closed.kept_ids.tolist())
    assert closed.n_merge_closure > 0

    def tokenize_mapped(sel):
        new = Tokenizer.from_str(json.dumps(rebuild_tokenizer_json(tok_json, vocab, sel.kept_ids)))
        return sel.kept_ids[new.encode(line).ids].tolist()

    original = tok.encode(line).ids
    assert set(original) <= set(closed.kept_ids.tolist())
    assert tokenize_mapped(closed) == original
    unclosed = select_kept_ids(vocab, [counts], SelectionPolicy(), 8, merge_closure=False)
    assert set(original) <= set(unclosed.kept_ids.tolist()), "line is covered without closure too"
    assert tokenize_mapped(unclosed) != original, "without closure the covered line must break"


@pytest.mark.parametrize("multiple", [8, 64])
def test_size_is_rounded_up_to_multiple_with_real_tokens(toy_model, toy_lines, multiple):
    vocab = _vocab(toy_model)
    counts = _counts(toy_model, toy_lines[:200])
    sel = select_kept_ids(vocab, [counts], SelectionPolicy(min_count=3), multiple)
    assert sel.size % multiple == 0
    assert 0 <= sel.n_rounding < multiple + 64  # closure can make a rounding step skip ahead
    assert all(int(i) in vocab.id_to_token for i in sel.kept_ids)  # never dummy rows
    unrounded = select_kept_ids(vocab, [counts], SelectionPolicy(min_count=3), 1)
    assert set(unrounded.kept_ids) <= set(sel.kept_ids)


def test_vocab_smaller_than_multiple_keeps_all_and_says_so(toy_model, toy_lines):
    vocab = _vocab(toy_model)
    sel = select_kept_ids(vocab, [_counts(toy_model, toy_lines[:100])], SelectionPolicy(), 4096)
    assert sel.size == vocab.size
    assert any("fewer than the next multiple" in n for n in sel.notes)


def test_top_k_is_exact_and_validated(toy_model, toy_lines):
    vocab = _vocab(toy_model)
    counts = _counts(toy_model, toy_lines)
    sel = select_kept_ids(vocab, [counts], SelectionPolicy(top_k=512), 64)
    assert sel.size == 512
    with pytest.raises(SelectionError, match="not a multiple"):
        select_kept_ids(vocab, [counts], SelectionPolicy(top_k=500), 64)
    with pytest.raises(SelectionError, match="always be kept"):
        select_kept_ids(vocab, [counts], SelectionPolicy(top_k=128), 64)
    with pytest.raises(ValueError):
        SelectionPolicy(top_k=512, min_count=2)


def test_coverage_keeps_most_frequent_tokens(toy_model, toy_lines):
    vocab = _vocab(toy_model)
    counts = _counts(toy_model, toy_lines)
    low = select_kept_ids(vocab, [counts], SelectionPolicy(coverage=0.5), 8)
    high = select_kept_ids(vocab, [counts], SelectionPolicy(coverage=0.95), 8)
    assert low.size < high.size
    top = int(np.argmax(counts.counts))
    assert top in set(low.kept_ids.tolist())


def test_equal_weighting_does_not_drown_a_small_language(toy_model):
    vocab = _vocab(toy_model)
    non_special = [i for i in sorted(vocab.id_to_token) if i not in vocab.always_keep]
    big_ids, small_ids = non_special[:300], non_special[300:310]
    big = _synthetic(vocab, {i: 100_000 for i in big_ids}, "big")
    small = _synthetic(vocab, {i: 10 for i in small_ids}, "small")
    equal = select_kept_ids(vocab, [big, small], SelectionPolicy(coverage=0.9), 1)
    pooled = select_kept_ids(vocab, [big, small], SelectionPolicy(coverage=0.9, weighting="proportional"), 1)
    assert set(small_ids) <= set(equal.kept_ids.tolist())
    assert not set(small_ids) & set(pooled.kept_ids.tolist())


def test_keep_list(toy_model):
    vocab = _vocab(toy_model)
    token = next(t for t, i in vocab.token_to_id.items() if i not in vocab.always_keep and len(t) > 3)
    empty = _synthetic(vocab, {})
    sel = select_kept_ids(vocab, [empty], SelectionPolicy(keep=(token,)), 8)
    assert vocab.token_to_id[token] in set(sel.kept_ids.tolist())
    with pytest.raises(SelectionError, match="not in the vocabulary"):
        select_kept_ids(vocab, [empty], SelectionPolicy(keep=("no-such-token-xyz",)), 8)


def test_wordpiece_keeps_seen_characters():
    folder = subjects.minilm_folder()
    vocab = _vocab(folder)
    counts = _counts(folder, ["Ünïcödé façade naïve"])
    sel = select_kept_ids(vocab, [counts], SelectionPolicy(), 8)
    kept = {vocab.id_to_token[int(i)] for i in sel.kept_ids}
    counted = [vocab.id_to_token[int(i)] for i in np.flatnonzero(counts.counts)]
    for tok in counted:
        for ch in tok.removeprefix("##"):
            assert ch in kept or ch not in vocab.token_to_id
            assert "##" + ch in kept or "##" + ch not in vocab.token_to_id
    assert "[UNK]" in kept and "[CLS]" in kept and "[MASK]" in kept


def test_byte_fallback_pieces_kept(gguf_tokenizers):
    folder = gguf_tokenizers("llama-spm")
    vocab = _vocab(folder)
    sel = select_kept_ids(vocab, [_counts(folder, ["hello world"])], SelectionPolicy(), 64)
    kept = {vocab.id_to_token[int(i)] for i in sel.kept_ids}
    assert {f"<0x{b:02X}>" for b in range(256)} <= kept


def test_counts_fingerprint_is_sha_of_tokenizer(toy_model, toy_lines):
    counts = _counts(toy_model, toy_lines[:10])
    assert counts.tokenizer_fingerprint == tokenizer_fingerprint(toy_model / "tokenizer.json")
    assert counts.lines == 10 and counts.tokens == int(counts.counts.sum())


def _rebuilt_by_definition(tok_json: dict, vocab, kept) -> dict:
    """What the rebuild must keep, written entry by entry (the rebuild itself uses id arrays)."""
    from tasks.engine.tokenizer.vocab import merge_result, parse_merge

    table = {int(old): new for new, old in enumerate(kept)}
    model = tok_json["model"]
    if vocab.kind == "Unigram":
        return {"vocab": [[p, s] for p, s in model["vocab"] if vocab.token_to_id[p] in table]}
    kept_tokens = {vocab.id_to_token[int(i)] for i in kept}
    merges = [m for m in model.get("merges", [])
              if (ab := parse_merge(m))[0] in kept_tokens and ab[1] in kept_tokens
              and merge_result(ab[0], ab[1], model.get("continuing_subword_prefix")) in kept_tokens]
    return {"vocab": {t: table[i] for t, i in model["vocab"].items() if i in table}, "merges": merges}


def test_rebuild_keeps_exactly_the_entries_of_kept_ids(toy_model, toy_lines, tmp_path):
    """BPE (vocab + merges) and Unigram (pieces), several kept sets from one remembered index."""
    from tokenizers import Tokenizer as Tok, models, pre_tokenizers, trainers

    uni = Tok(models.Unigram())
    uni.pre_tokenizer = pre_tokenizers.Metaspace()
    uni.train_from_iterator(toy_lines, trainers.UnigramTrainer(vocab_size=400, special_tokens=["<unk>"], unk_token="<unk>"))
    uni.save(str(tmp_path / "uni.json"))
    rng = np.random.default_rng(0)
    for path in (toy_model / "tokenizer.json", tmp_path / "uni.json"):
        tok_json = load_tokenizer_json(path)
        vocab = analyze_tokenizer(tok_json)
        for share in (0.2, 0.6, 1.0):
            ids = np.array(sorted(vocab.id_to_token))
            kept = np.union1d(rng.choice(ids, int(len(ids) * share), replace=False),
                              np.array(sorted(vocab.always_keep), dtype=np.int64))
            if vocab.kind == "Unigram":
                kept = np.union1d(kept, [tok_json["model"]["unk_id"]])
            model = rebuild_tokenizer_json(tok_json, vocab, kept)["model"]
            want = _rebuilt_by_definition(tok_json, vocab, kept)
            assert {k: model[k] for k in want} == want, (path.name, share)
