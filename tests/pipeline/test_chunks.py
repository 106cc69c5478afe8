"""Counts from chunk counts must equal direct counting exactly, on real text, for every
tokenizer family we accept; a tokenizer that is not chunk-local must fall back."""

from __future__ import annotations

import json
import logging
import random
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.engine.counting import chunks as ch
from tasks.engine.counting.tokens import count_tokens, load_plain_tokenizer, read_counts
from tests import subjects

GETTEXT = ("de", "fr", "ru", "pl", "el", "ja", "zh_CN", "ko", "tr", "vi")
LINGUA = ("de", "fr", "ru", "ar", "hi", "th", "ja", "ko", "vi", "tr", "el", "hy", "bn", "ta", "fa")
# Whitespace and digits real text rarely has: tabs before spaces, NBSP, ideographic space,
# runs of spaces, long numbers (Llama-3 cuts digits in threes, Qwen2 one by one), a line that
# holds the chunker's sentinel, added-token text.
ODD_LINES = [
    "a\t  b", "x\ty z", "Preis:\u00a012 345,67 €  (inkl.  MwSt.)", "全角\u3000スペース とASCII", "version 1234567890 build 20241126",
    "trailing spaces   ", "  leading spaces", "tab\tand  two  spaces\t ", "émoji 🙂 and ZWJ 👩\u200d💻 mixed",
    "sentinel \uffff inside", "Σίσυφος ΣΟΦΟΣ ΟΔΟΣ. ὁδός", "<s> not special </s> text <unk>", "İstanbul ŞIŞLI ĞÜÇ",
    "line\rwith\rcarriage returns", "RLM\u200f \u200fmarks\u200e \u200e. ZWNJ\u200c \u200cword", "meta▁ ▁symbol \ufffd \ufffd", "numbers 3.14159 and 2,718 and 1e-10", "'s 're 'll CAN'T don't",
]


@pytest.fixture(scope="module")
def real_lines(shared) -> list[str]:
    lines = [x for loc in GETTEXT for x in subjects.gettext_lines(loc, "train", 400)]
    for lang in LINGUA:
        path = shared / "data" / "lingua" / f"{lang}.txt"
        lines += [x.strip() for x in path.read_text(encoding="utf-8").splitlines()[:150] if x.strip()]
    return lines + ODD_LINES


_DIRECT: dict = {}


def _direct(tok_json: Path, lines: list[str], special: bool = False) -> np.ndarray:
    key = (str(tok_json), len(lines), hash(tuple(lines)), special)
    if key not in _DIRECT:
        _DIRECT[key] = _direct_uncached(tok_json, lines, special)
    return _DIRECT[key]


def _direct_uncached(tok_json: Path, lines: list[str], special: bool) -> np.ndarray:
    if not special:
        return count_tokens(tok_json, lines, "direct").counts
    tok = load_plain_tokenizer(tok_json)
    ids = np.fromiter((i for e in tok.encode_batch(lines, add_special_tokens=True) for i in e.ids), dtype=np.int64)
    return np.bincount(ids, minlength=tok.get_vocab_size(with_added_tokens=True))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    n = max(a.size, b.size)
    return np.array_equal(np.pad(a, (0, n - a.size)), np.pad(b, (0, n - b.size)))


def test_no_cut_set_matches_this_pythons_unicode_tables():
    assert ch.NO_CUT_RANGES == ch.no_cut_ranges()


def test_batch_chunker_equals_reference_and_rebuilds_lines(real_lines):
    rng = random.Random(0)
    alphabet = ["a", "b", " ", " ", "\t", "\u00a0", "\u3000", ".", "é", "\u200b", "\r", "1", "\uffff"]
    fuzz = ["".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(3000)]
    lines = real_lines + fuzz
    batch = ch.chunk_lines(lines)
    for line, got in zip(lines, batch):
        assert got == ch.chunk_line(line), line
        assert "".join(got) == line
        # every cut is before a space that follows a non-whitespace character
        for left, right in zip(got, got[1:]):
            assert right.startswith(" ") and not left[-1].isspace() and unicodedata.category(left[-1]) not in ("Cc", "Cf")
    cc = ch.count_chunks(lines, sample_lines=100, batch_lines=1000)
    expected = {}
    for cs in batch:
        for c in cs:
            expected[c] = expected.get(c, 0) + 1
    assert dict(zip(cc.table.column("chunk").to_pylist(), cc.table.column("count").to_pylist())) == expected
    assert cc.lines == len(lines) and cc.chunks == sum(expected.values())
    assert 50 < len(cc.sample) <= 100 and cc.sample[0] == lines[0]


def _counts_via_chunks(tok_json: Path, lines: list[str], special: bool = False):
    cc = ch.count_chunks(lines, sample_lines=300, batch_lines=2048)  # several batches, a real proof
    counts, prov = ch.tokens_from_chunk_counts(tok_json, cc, "test", add_special_tokens=special)
    return cc, counts, prov


@pytest.mark.parametrize("name", ["gpt-2", "qwen2", "llama-bpe", "llama-spm"])
def test_real_gguf_tokenizers_count_identically_from_chunks(name, gguf_tokenizers, real_lines):
    tok_json = gguf_tokenizers(name) / "tokenizer.json"
    cc, counts, prov = _counts_via_chunks(tok_json, real_lines)
    assert counts is not None, prov
    assert prov["method"] == "chunks" and prov["proof"]["ok"] and 150 <= prov["proof"]["lines"] <= 300
    assert cc.distinct < cc.chunks  # distinct chunks, not running ones, were encoded
    assert _same(counts.counts, _direct(tok_json, real_lines))
    assert counts.tokens == int(_direct(tok_json, real_lines).sum()) and counts.lines == len(real_lines)
    if name == "llama-spm":  # BOS per line from the post-processor, never per chunk
        c2, counts2, prov2 = _counts_via_chunks(tok_json, real_lines, special=True)
        assert counts2 is not None, prov2
        assert _same(counts2.counts, _direct(tok_json, real_lines, special=True))


def test_wordpiece_minilm_lowercasing_counts_identically(real_lines, shared):
    tok_json = subjects.minilm_folder() / "tokenizer.json"
    cc, counts, prov = _counts_via_chunks(tok_json, real_lines)
    assert counts is not None, prov
    assert _same(counts.counts, _direct(tok_json, real_lines))
    _, counts2, prov2 = _counts_via_chunks(tok_json, real_lines, special=True)  # [CLS] ... [SEP] per line
    assert counts2 is not None, prov2
    assert _same(counts2.counts, _direct(tok_json, real_lines, special=True))


@pytest.fixture(scope="module", params=["converted", "hub-schema"])
def xlmr_like(request, shared, tmp_path_factory) -> Path:
    """XLM-R tokenizers from a SentencePiece Unigram model trained here: as transformers
    converts it now (WhitespaceSplit + Metaspace), and in the schema of the real
    xlm-roberta-base tokenizer.json on the Hub (Precompiled nmt_nfkc + Replace(' {2,}', ' ')
    + Metaspace, <mask> with lstrip)."""
    import base64

    import transformers as T
    from sentencepiece import sentencepiece_model_pb2

    tmp = tmp_path_factory.mktemp("xlmr_like")
    lines = [x for lang in ("de", "fr", "ru", "el") for x in subjects.gettext_lines(lang, "train", 1500)]
    model = subjects.train_sentencepiece(lines, tmp / "spm", 2000)
    folder = tmp / "xlmr"
    folder.mkdir()
    shutil.copy(model, folder / "sentencepiece.bpe.model")
    T.XLMRobertaTokenizerFast(vocab_file=str(folder / "sentencepiece.bpe.model")).save_pretrained(str(folder))
    if request.param == "hub-schema":
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(model.read_bytes())
        charsmap = base64.b64encode(proto.normalizer_spec.precompiled_charsmap).decode()
        spec = json.loads((folder / "tokenizer.json").read_text())
        spec["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": charsmap},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
        spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
        for a in spec["added_tokens"]:
            a["lstrip"] = a["content"] == "<mask>"
        (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    return folder / "tokenizer.json"


def test_unigram_metaspace_xlmr_like_counts_identically(xlmr_like, real_lines):
    spec = json.loads(xlmr_like.read_text())
    assert "Metaspace" in json.dumps(spec["pre_tokenizer"]) and spec["model"]["type"] == "Unigram"
    loc = ch.analyze_locality(spec)
    assert loc.local and not loc.risky_added_tokens, loc
    cc, counts, prov = _counts_via_chunks(xlmr_like, real_lines)
    assert counts is not None, prov
    assert _same(counts.counts, _direct(xlmr_like, real_lines))
    _, counts2, _ = _counts_via_chunks(xlmr_like, real_lines, special=True)  # <s> ... </s> per line
    assert _same(counts2.counts, _direct(xlmr_like, real_lines, special=True))


def test_lstrip_added_token_in_the_corpus_is_chunk_local(xlmr_like, real_lines):
    """<mask> (lstrip on the Hub) eats the whitespace on its left: all of it lies in its own
    chunk, since a cut never follows whitespace."""
    lines = real_lines + ["Ein\t <mask> Test", "word  <mask>. <mask>"]
    cc = ch.count_chunks(lines, sample_lines=300)
    counts, prov = ch.tokens_from_chunk_counts(xlmr_like, cc, "test")
    assert counts is not None, prov
    assert _same(counts.counts, _direct(xlmr_like, lines))


def test_rstrip_added_token_in_the_corpus_falls_back(gguf_tokenizers, real_lines, tmp_path):
    """An added token with rstrip eats the next chunk's leading space (GPT-2 then encodes
    'Test', not 'ĠTest'): when a chunk holds it, counting is direct, and still exact."""
    spec = json.loads((gguf_tokenizers("gpt-2") / "tokenizer.json").read_text())
    spec["added_tokens"].append({"id": len(spec["model"]["vocab"]), "content": "<|x|>", "single_word": False, "lstrip": False,
                                 "rstrip": True, "normalized": False, "special": True})
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    tok_json = tmp_path / "tokenizer.json"
    assert ch.analyze_locality(spec).risky_added_tokens == ["<|x|>"]
    cc, counts, prov = _counts_via_chunks(tok_json, real_lines)  # not in the corpus: chunks
    assert counts is not None and _same(counts.counts, _direct(tok_json, real_lines)), prov
    lines = real_lines + ["A <|x|> Test"]
    cc = ch.count_chunks(lines, sample_lines=300)
    counts, prov = ch.tokens_from_chunk_counts(tok_json, cc, "test")
    assert counts is None and prov["method"] == "direct" and "<|x|>" in prov["fallback"]
    wrong = ch.counts_from_chunks(load_plain_tokenizer(tok_json), ch.iter_chunk_batches(cc.table), cc.lines)
    assert not _same(wrong, _direct(tok_json, lines))


def _legacy_llama2(src: Path, dst: Path) -> Path:
    """Llama-2 in the older tokenizer.json schema: Prepend('▁') + Replace(' ', '▁') as the
    normalizer, no pre-tokenizer. The ▁ is prepended once per line, so it is not chunk-local."""
    spec = json.loads(src.read_text())
    spec["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                              {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    spec["pre_tokenizer"] = None
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    return dst / "tokenizer.json"


def test_not_chunk_local_tokenizer_falls_back(gguf_tokenizers, real_lines, tmp_path):
    tok_json = _legacy_llama2(gguf_tokenizers("llama-spm") / "tokenizer.json", tmp_path / "legacy")
    loc = ch.analyze_locality(json.loads(tok_json.read_text()))
    assert not loc.local and "Prepend" in loc.summary()
    cc = ch.count_chunks(real_lines, sample_lines=300)
    counts, prov = ch.tokens_from_chunk_counts(tok_json, cc, "test")
    assert counts is None and prov["method"] == "direct" and "Prepend" in prov["fallback"]
    # The proof alone would have caught it too: the sample has a line whose chunks tokenize differently.
    tok = load_plain_tokenizer(tok_json)
    proof = ch.prove_locality(tok, cc.sample)
    assert not proof.ok and proof.counterexample
    # The vectorised proof names the first line a line-by-line check finds.
    first = next(line for line in cc.sample
                 if tok.encode(line, add_special_tokens=False).ids
                 != [i for c in ch.chunk_line(line) for i in tok.encode(c, add_special_tokens=False).ids])
    assert proof.counterexample.startswith(repr(first[:200]))
    # ... and summing chunk tokens would indeed have been wrong.
    wrong = ch.counts_from_chunks(load_plain_tokenizer(tok_json), ch.iter_chunk_batches(cc.table), cc.lines)
    assert not _same(wrong, _direct(tok_json, real_lines))


def test_unknown_pretokenizer_regex_is_not_trusted(gguf_tokenizers):
    spec = json.loads((gguf_tokenizers("qwen2") / "tokenizer.json").read_text())
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\S+\s*"  # words with their trailing space
    loc = ch.analyze_locality(spec)
    assert not loc.local and "Split" in loc.summary()


def test_chunk_table_round_trip(real_lines, tmp_path):
    cc = ch.count_chunks(real_lines, sample_lines=50)
    path = ch.write_chunk_counts(cc, tmp_path / "de.parquet", "de:test")
    back = ch.read_chunk_counts(path)
    assert back.table.equals(cc.table) and back.sample == cc.sample and back.lines == cc.lines
    assert json.loads(pq.read_schema(path).metadata[b"trimworks"])["chunking"] == ch.CHUNKING


# --- the pipeline: chunk counts by default, shared by tokenizers, provenance recorded ------------


def _manifest(tmp: Path, real_lines: list[str], toy: Path, method: str = "chunks"):
    from tasks.pipeline.manifest import load_manifest

    de = tmp / "de.txt"
    de.write_text("\n".join(real_lines) + "\n")
    path = subjects.make_manifest(tmp, (toy, toy), languages={"de": {"corpora": [{"text": [str(de)]}], "heldout": {"percent": 10}}},
                                  subsets=[["de"]], lid={"enabled": False}, counting={"method": method, "proof_lines": 200})
    return load_manifest(path)


def test_pipeline_counts_from_one_shared_chunk_pass(toy_model, gguf_tokenizers, real_lines, tmp_path, caplog):
    from tasks.pipeline.corpus.chunk_cache import chunks_path, train_stream
    from tasks.pipeline.corpus.counts_cache import ensure_counts
    from tasks.pipeline.corpus.reader import LanguageCorpora

    m = _manifest(tmp_path, real_lines, toy_model)
    legacy = _legacy_llama2(gguf_tokenizers("llama-spm") / "tokenizer.json", tmp_path / "legacy")
    toks = [toy_model / "tokenizer.json", gguf_tokenizers("gpt-2") / "tokenizer.json",
            gguf_tokenizers("llama-spm") / "tokenizer.json", legacy]
    train = list(train_stream(LanguageCorpora.of(m, "de")))
    with caplog.at_level(logging.INFO, logger="trimworks.counts"):
        paths = [ensure_counts(m, t, "de") for t in toks]
    assert sum("chunked de" in r.message for r in caplog.records) == 1  # one chunk pass for four tokenizers
    assert chunks_path(m, "de").exists()
    methods = []
    for t, p in zip(toks, paths):
        c = read_counts(p)
        assert _same(c.counts, _direct(t, train)), t
        methods.append(c.provenance["method"])
        assert c.provenance.get("detail") or c.provenance.get("fallback")
    assert methods == ["chunks", "chunks", "chunks", "direct"]
    assert "Prepend" in read_counts(paths[3]).provenance["fallback"]
    assert any("counting de directly" in r.message and r.levelno == logging.WARNING for r in caplog.records)


def test_pipeline_direct_method_is_recorded(toy_model, real_lines, tmp_path):
    from tasks.pipeline.corpus.chunk_cache import chunks_path, train_stream
    from tasks.pipeline.corpus.counts_cache import ensure_counts
    from tasks.pipeline.corpus.reader import LanguageCorpora

    m = _manifest(tmp_path, real_lines, toy_model, method="direct")
    c = read_counts(ensure_counts(m, toy_model / "tokenizer.json", "de"))
    assert c.provenance["method"] == "direct" and "manifest" in c.provenance["fallback"]
    assert not chunks_path(m, "de").exists()
    assert _same(c.counts, _direct(toy_model / "tokenizer.json", list(train_stream(LanguageCorpora.of(m, "de")))))


@pytest.mark.parametrize("special", [False, True])
def test_small_corpus_is_counted_once_by_the_proof(gguf_tokenizers, real_lines, special):
    """When the proof sample is the whole corpus, its direct counts are used (no second encode)."""
    tok_json = gguf_tokenizers("llama-spm") / "tokenizer.json"
    lines = real_lines[:250]
    cc = ch.count_chunks(lines, sample_lines=1000)
    assert cc.sample == lines
    counts, prov = ch.tokens_from_chunk_counts(tok_json, cc, "test", add_special_tokens=special)
    assert counts is not None and prov["method"] == "chunks" and "whole corpus is the proof sample" in prov["detail"]
    assert _same(counts.counts, _direct(tok_json, lines, special=special))


def test_threaded_chunk_pass_equals_one_thread(real_lines):
    one = ch.count_chunks(real_lines, sample_lines=50, batch_lines=500, threads=1)
    two = ch.count_chunks(real_lines, sample_lines=50, batch_lines=500, threads=2)
    assert one.table.equals(two.table) and one.sample == two.sample and one.text_bytes == two.text_bytes
