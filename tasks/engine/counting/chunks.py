"""Chunk counts: count each distinct space-delimited chunk once, tokenize it once.

Most tokenizers are *chunk-local*: the tokens of a line are the concatenation of the tokens
of its chunks. Then exact token counts are the sum over distinct chunks of (chunk frequency
x that chunk's tokens), and chunk frequencies do not depend on the tokenizer: one corpus
pass per language serves every tokenizer, and each tokenizer encodes only distinct chunks.

**Chunks.** A line is cut before every U+0020 space whose preceding character is not
whitespace; a chunk keeps its leading spaces (`"a  b, c" -> "a", "  b,", " c"`). The
cut sits where every whitespace-aware pre-tokenizer we accept cuts too, on the same side:
byte-level regexes attach the space to the following word (`Ġword`), Metaspace turns it
into the following word's `▁`, BERT drops it. Other whitespace (tabs, NBSP, ...) never
starts a cut and a cut never follows whitespace, so `"a\\t  b"` stays one chunk (GPT-2's
`\\s+(?!\\S)` would take `"\\t "` as one piece) and `"a\\tb"` too (Metaspace does not split on tabs).

**Locality** is decided per tokenizer from tokenizer.json (`analyze_locality`: known-local
normalizers and pre-tokenizers, a vocabulary check when nothing splits at spaces, added
tokens that strip whitespace), then proven on a sample of the corpus (`prove_locality`:
every sample line's direct tokens must equal the concatenation of its chunks' tokens).
Anything else falls back to direct counting. Special tokens a post-processor adds are
per line, never per chunk (`special_ids_per_line`).
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from tasks.engine.runtime.failpoints import failpoint
from tasks.engine.runtime.stopping import check_stop
from tasks.engine.runtime.atomic import atomic_file
from tasks.engine.counting.tokens import META_KEY, TokenCounts, count_tokens, load_plain_tokenizer
from tasks.engine.errors import CorpusError
from tasks.engine.checkpoint.model_folder import load_tokenizer_json, tokenizer_fingerprint

# Characters that must not precede a cut: whitespace (Unicode White_Space, Python's
# str.isspace extras \x1c-\x1f, U+180E), every control (Cc) and format character (Cf: ZWSP,
# ZWNJ, LRM/RLM, BOM, ...). Normalizers map some of these to spaces (SentencePiece's nmt_nfkc
# turns RLM and ZWNJ into ' '), and a space-collapsing Replace(' {2,}') would then join two
# chunks. Wider than any tokenizer's notion means fewer cuts, never a wrong one. The set comes
# from Python's Unicode tables, so their version is part of the chunking key.
# U+180E (a space before Unicode 6.3), and what SentencePiece's nmt_nfkc maps to a space: its
# own meta symbol U+2581 and the replacement character U+FFFD.
_NO_CUT_EXTRA = (0x180E, 0x2581, 0xFFFD)


def no_cut_ranges() -> list[tuple[int, int]]:
    """The set above from this Python's Unicode tables (the test checks NO_CUT_RANGES against it)."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and (
        unicodedata.category(chr(c)) in ("Cc", "Cf", "Zs", "Zl", "Zp") or chr(c).isspace() or c in _NO_CUT_EXTRA)]
    ranges: list[tuple[int, int]] = []
    for c in cps:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1] = (ranges[-1][0], c)
        else:
            ranges.append((c, c))
    return ranges


# no_cut_ranges() under Unicode 14.0 (Python 3.11), written out: computing it costs seconds.
NO_CUT_RANGES = [(0x0, 0x20), (0x7F, 0xA0), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70F, 0x70F),
                 (0x890, 0x891), (0x8E2, 0x8E2), (0x1680, 0x1680), (0x180E, 0x180E), (0x2000, 0x200F), (0x2028, 0x202F),
                 (0x205F, 0x2064), (0x2066, 0x206F), (0x2581, 0x2581), (0x3000, 0x3000), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
                 (0xFFFD, 0xFFFD),
                 (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
                 (0xE0001, 0xE0001), (0xE0020, 0xE007F)]
CHUNKING = "space-v2"  # part of the cache key: change it when the cut rule changes
CHUNK_BATCH_LINES = 65_536
ENCODE_BATCH_CHUNKS = 8_192
COMPACT_ROWS = 2_000_000  # merge per-batch value counts once this many rows pile up
DEFAULT_PROOF_LINES = 20_000

_WS_RANGES = NO_CUT_RANGES
_RE2_CLASS = "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" if a != b else f"\\x{{{a:X}}}" for a, b in _WS_RANGES)
_PY_CLASS = "".join(f"\\U{a:08x}-\\U{b:08x}" if a != b else f"\\U{a:08x}" for a, b in _WS_RANGES)
_RE2_CUT = f"([^{_RE2_CLASS}]) "  # a non-whitespace character followed by a space
_RE2_AFTER_NO_CUT = f"[{_RE2_CLASS}] "  # a space that does not start a chunk
_PY_CUT = re.compile(f"(?<=[^{_PY_CLASS}])(?= )")
_SENTINEL = "\uffff"  # a noncharacter; lines that contain it are chunked in Python


def chunk_line(line: str) -> list[str]:
    """The chunks of one line (reference implementation; the batch path must agree)."""
    return [c for c in _PY_CUT.split(line) if c]


def chunk_array(lines: pa.Array) -> pa.ListArray:
    """Chunks of every line as a list array (one list per line), vectorised with pyarrow.

    Most lines have no space after whitespace: there every space starts a chunk and a plain
    substring replace marks the cuts (8x faster than the regex, which only the other lines
    need). A leading empty chunk (line starting with a space) is dropped by the callers."""
    needs_regex = pc.match_substring_regex(lines, pattern=_RE2_AFTER_NO_CUT)
    marked = pc.replace_substring(lines, pattern=" ", replacement=_SENTINEL + " ")
    if pc.any(needs_regex).as_py():
        slow = pc.replace_substring_regex(lines.filter(needs_regex), pattern=_RE2_CUT, replacement="\\1" + _SENTINEL + " ")
        marked = pc.replace_with_mask(marked, needs_regex, slow)
    return pc.split_pattern(marked, _SENTINEL)


def chunk_lines(lines: list[str]) -> list[list[str]]:
    """Chunks per line for a list of lines (the proof sample): pyarrow, Python for odd lines."""
    if not lines:
        return []
    lists = chunk_array(pa.array(lines, pa.string())).to_pylist()
    return [chunk_line(line) if _SENTINEL in line else [c for c in cs if c] for line, cs in zip(lines, lists)]


# --- the shared pass: chunk frequencies of a corpus ---------------------------------------


@dataclass
class ChunkCounts:
    """Distinct chunks of one corpus and how often each occurs (tokenizer-independent)."""

    table: pa.Table  # columns chunk (string), count (int64); most frequent first
    lines: int
    chunks: int  # running chunks (sum of counts)
    text_bytes: int
    sample: list[str]  # an evenly spread sample of lines, for the locality proof
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def distinct(self) -> int:
        return self.table.num_rows


def _compact(parts: list[pa.Table]) -> pa.Table:
    t = pa.concat_tables(parts).group_by("chunk").aggregate([("count", "sum")])
    return t.select(["chunk", "count_sum"]).rename_columns(["chunk", "count"])


class _Sampler:
    """Every `stride`-th line, at most `cap` lines: halves the sample and doubles the stride
    when full, so the sample stays evenly spread over a corpus of unknown length."""

    def __init__(self, cap: int):
        self.cap, self.stride, self.seen, self.lines = max(cap, 1), 1, 0, []

    def add(self, batch: list[str]) -> None:
        first = (-self.seen) % self.stride
        self.lines.extend(batch[first :: self.stride])
        self.seen += len(batch)
        while len(self.lines) > self.cap:
            self.lines = self.lines[::2]
            self.stride *= 2


def _string_array(batch: list[str]) -> pa.Array:
    """32-bit offsets when the batch surely fits them (20x faster to build than large_string)."""
    fits = 4 * sum(map(len, batch)) < 2**31 - 1  # UTF-8 needs at most 4 bytes per character
    return pa.array(batch, pa.string() if fits else pa.large_string())


def _batch_chunk_counts(batch: list[str]) -> tuple[pa.Table, int]:
    """One batch's (chunk, count) table and its UTF-8 bytes; pyarrow work, GIL released."""
    arr = _string_array(batch)
    n_bytes = int(pc.sum(pc.binary_length(arr)).as_py() or 0)
    parts = []
    odd = pc.match_substring(arr, _SENTINEL)
    if pc.any(odd).as_py():
        odd_lines = arr.filter(odd).to_pylist()
        arr = arr.filter(pc.invert(odd))
        c = Counter(ch for line in odd_lines for ch in chunk_line(line))
        parts.append(pa.table({"chunk": pa.array(list(c), pa.large_string()), "count": pa.array(list(c.values()), pa.int64())}))
    vc = pc.value_counts(chunk_array(arr).flatten())
    parts.append(pa.table({"chunk": vc.field("values").cast(pa.large_string()), "count": vc.field("counts").cast(pa.int64())}))
    return (parts[0] if len(parts) == 1 else pa.concat_tables(parts)), n_bytes


def count_chunks(
    lines: Iterable[str],
    sample_lines: int = DEFAULT_PROOF_LINES,
    batch_lines: int = CHUNK_BATCH_LINES,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> ChunkCounts:
    """Chunk frequencies of `lines`, one pass, vectorised per batch (pyarrow value_counts).

    Batches are chunked on `threads` threads (default: the CPUs this process may use) while
    this thread reads the next batch: pyarrow releases the GIL, so the pass uses every core
    like the tokenizer's own encode_batch does."""
    parts: list[pa.Table] = []
    rows = n_lines = n_bytes = 0
    sampler = _Sampler(sample_lines)
    it = iter(lines)
    workers = max(1, threads or len(os.sched_getaffinity(0)))
    pending: collections.deque[Future] = collections.deque()

    def collect(fut: Future) -> None:
        nonlocal rows, n_bytes, parts
        table, b = fut.result()
        n_bytes += b
        parts.append(table)
        rows += table.num_rows
        if rows > COMPACT_ROWS:
            parts = [_compact(parts)]
            rows = parts[0].num_rows

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunks") as pool:
        while batch := list(itertools.islice(it, batch_lines)):
            sampler.add(batch)
            n_lines += len(batch)
            pending.append(pool.submit(_batch_chunk_counts, batch))
            while len(pending) > workers:
                collect(pending.popleft())
            failpoint("counting")  # crash tests kill the process here, as in direct counting
            check_stop()  # Ctrl-C / SIGTERM stop between batches
            if progress is not None:
                progress(n_lines)
        while pending:
            collect(pending.popleft())
    if parts:
        table = _compact(parts)
        table = table.filter(pc.not_equal(table["chunk"], ""))
        table = table.sort_by([("count", "descending"), ("chunk", "ascending")])
    else:
        table = pa.table({"chunk": pa.array([], pa.large_string()), "count": pa.array([], pa.int64())})
    total = int(pc.sum(table["count"]).as_py() or 0)
    return ChunkCounts(table, n_lines, total, n_bytes, sampler.lines)


# --- locality: decided from tokenizer.json --------------------------------------------------

# Split regexes of real tokenizers whose matches never contain "non-whitespace + space" and
# which look ahead only (never behind): GPT-2 (also ByteLevel's built-in), cl100k / Llama-3,
# Qwen2 (single digits), o200k / GPT-4o.
LOCAL_SPLIT_REGEXES = frozenset({
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
})
# Normalizers that map each character on its own (or compose only within a run of
# non-space characters), so a line's normal form is the concatenation of its chunks'.
_CHAR_LOCAL_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "BertNormalizer",
                           "Precompiled", "Nmt", "ByteLevel"}
_LOCAL_REPLACE_REGEXES = {" {2,}", " +", "  +"}


@dataclass
class Locality:
    """Whether counts from chunks equal direct counts for a tokenizer, and why."""

    local: bool
    reasons: list[str]  # why not (empty when local)
    notes: list[str]  # what was checked
    risky_added_tokens: list[str] = field(default_factory=list)  # must not occur in any chunk
    # A normalizer collapses space runs (Replace(' {2,}', ' ')): no chunk may end in a character
    # that normalizes to a trailing space, or two chunks' spaces would merge (checked per corpus).
    collapses_spaces: bool = False

    def summary(self) -> str:
        return "; ".join(self.reasons or self.notes)


def _normalizer_parts(norm: dict | None) -> list[dict]:
    if norm is None:
        return []
    if norm.get("type") == "Sequence":
        return [p for n in norm.get("normalizers", []) for p in _normalizer_parts(n)]
    return [norm]


def _pretok_parts(pre: dict | None) -> list[dict]:
    if pre is None:
        return []
    if pre.get("type") == "Sequence":
        return [p for n in pre.get("pretokenizers", []) for p in _pretok_parts(n)]
    return [pre]


def _pattern(p: dict) -> tuple[str, str]:
    pat = p.get("pattern") or {}
    if "Regex" in pat:
        return "regex", pat["Regex"]
    return "string", pat.get("String", "")


def analyze_locality(tok_json: dict) -> Locality:
    """Structural verdict from tokenizer.json: every normalizer step is character-local (or
    maps space runs to space runs), every pre-tokenizer step keeps chunk cuts, the model never
    merges across a cut, and added tokens do not reach across whitespace."""
    reasons, notes = [], []
    collapses = False
    space = " "  # what a U+0020 has become by the time the model sees it
    for n in _normalizer_parts(tok_json.get("normalizer")):
        t = n.get("type")
        if t in _CHAR_LOCAL_NORMALIZERS:
            if t == "ByteLevel":
                space = "Ġ"
            continue
        if t == "Replace":
            kind, pat = _pattern(n)
            content = n.get("content", "")
            if kind == "string" and pat and set(pat) == {" "} and set(content) <= {" "}:
                continue
            if kind == "string" and pat and " " not in pat and " " not in content:
                if pat == " ":
                    space = content
                continue
            if kind == "string" and pat == " " and content and " " not in content:
                space = content
                continue
            if kind == "regex" and pat in _LOCAL_REPLACE_REGEXES and set(content) <= {" "} and content:
                collapses = True
                continue
            reasons.append(f"normalizer Replace({pat!r} -> {content!r}) may match across a space")
        elif t in ("Prepend", "Append"):
            reasons.append(f"normalizer {t} adds text once per line, not once per chunk")
        elif t == "Strip":
            reasons.append("normalizer Strip removes a chunk's leading space but not a line's inner ones")
        else:
            reasons.append(f"normalizer {t} is not known to be character-local")
    splits = False  # some step already cuts at every chunk boundary: later steps see words only
    for p in _pretok_parts(tok_json.get("pre_tokenizer")):
        t = p.get("type")
        if splits:
            continue
        if t == "ByteLevel":
            space = "Ġ"
            if p.get("use_regex", True):
                splits = True
        elif t in ("Whitespace", "WhitespaceSplit", "BertPreTokenizer"):
            splits = True
        elif t == "Metaspace":
            space = p.get("replacement", "▁")
            splits = bool(p.get("split", True))
        elif t == "Split":
            kind, pat = _pattern(p)
            behavior, invert = p.get("behavior"), p.get("invert", False)
            if kind == "regex" and pat in LOCAL_SPLIT_REGEXES and not invert and behavior in ("Isolated", "Removed"):
                splits = True
            elif kind == "string" and pat == " " and not invert and behavior in ("Isolated", "Removed", "MergedWithNext"):
                splits = True
            else:
                reasons.append(f"pre-tokenizer Split({pat[:60]!r}, {behavior}) is not a known chunk-local pattern")
        elif t == "Digits":
            continue
        elif t == "Punctuation" and p.get("behavior", "Isolated") in ("Isolated", "Removed", "Contiguous"):
            continue
        elif t == "CharDelimiterSplit":
            if p.get("delimiter") == " ":
                splits = True
        else:
            reasons.append(f"pre-tokenizer {t} is not known to be chunk-local")
    model = tok_json.get("model", {})
    if model.get("dropout"):
        reasons.append("BPE dropout makes tokenization random")
    if not splits and not reasons:
        # The model sees whole lines: it must have no piece that joins a non-space to a space.
        vocab = model.get("vocab", {})
        pieces = [v[0] for v in vocab] if isinstance(vocab, list) else list(vocab)
        joined = re.compile(f"[^{re.escape(space)}]{re.escape(space)}")
        bad = [pc_ for pc_ in pieces if joined.search(pc_)]
        if bad:
            reasons.append(f"the model sees whole lines and {len(bad)} pieces join a word to the next space (e.g. {bad[0]!r})")
        else:
            notes.append(f"the model sees whole lines, but no piece of its {len(pieces)} joins a word to the next {space!r}")
    risky = []
    for a in tok_json.get("added_tokens", []):
        content = a.get("content", "")
        # lstrip is safe: a chunk's leading spaces are all the whitespace left of it (a cut never
        # follows whitespace); rstrip would eat the next chunk's leading space.
        if a.get("rstrip") or any(ch.isspace() for ch in content) or (space != " " and space in content):
            if a.get("normalized") and tok_json.get("normalizer") is not None:
                reasons.append(f"added token {content!r} strips or holds whitespace and is matched after normalization")
            elif any(ch.isspace() for ch in content):
                reasons.append(f"added token {content!r} holds whitespace")
            else:
                risky.append(content)
    if risky:
        notes.append(f"{len(risky)} added tokens strip whitespace on their right; counted from chunks only when no chunk contains them")
    if not reasons:
        notes.insert(0, "normalizer and pre-tokenizer are chunk-local")
    return Locality(not reasons, reasons, notes, risky, collapses)


def chunk_ends_that_normalize_to_space(tok: Tokenizer, chunks: pa.Array) -> list[str]:
    """Last characters of chunks that the normalizer turns into something ending in a space
    (only these could merge with the next chunk's leading space under a collapsing Replace)."""
    if tok.normalizer is None or not len(chunks):
        return []
    last = pc.unique(pc.utf8_slice_codeunits(chunks, -1)).to_pylist()
    can_cut = [c for c in last if c and not any(a <= ord(c) <= b for a, b in _WS_RANGES)]  # others never precede a cut
    return [c for c in can_cut if tok.normalizer.normalize_str(c).endswith(" ")]


def risky_tokens_in_chunks(risky: list[str], chunks: pa.Array) -> list[str]:
    """The whitespace-stripping added tokens that occur in some chunk (vectorised search)."""
    return [t for t in risky if len(chunks) and pc.any(pc.match_substring(chunks, t)).as_py()]


# --- token counts from chunk counts ----------------------------------------------------------


def special_ids_per_line(tok: Tokenizer) -> list[int]:
    """Ids the post-processor adds to every single-sequence line (BOS, CLS/SEP, ...)."""
    empty = tok.encode("", add_special_tokens=False)
    return list(tok.post_process(empty, None, add_special_tokens=True).ids)


def _flat_ids(encs: list) -> tuple[np.ndarray, np.ndarray]:
    """All ids of some encodings end to end, and each encoding's length."""
    lens = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=int(lens.sum()))
    return ids, lens


def _encode_ids(tok: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    return _flat_ids(encode(texts, add_special_tokens=False))


def iter_chunk_batches(table: pa.Table, size: int = ENCODE_BATCH_CHUNKS) -> Iterator[tuple[list[str], np.ndarray]]:
    for rb in table.to_batches(max_chunksize=size):
        yield rb.column(0).to_pylist(), rb.column(1).to_numpy()


def counts_from_chunks(
    tok: Tokenizer, batches: Iterable[tuple[list[str], np.ndarray]], lines: int, add_special_tokens: bool = False
) -> np.ndarray:
    """Token id counts: each distinct chunk encoded once, its ids weighted by its frequency."""
    n = tok.get_vocab_size(with_added_tokens=True)
    counts = np.zeros(n, dtype=np.int64)
    for texts, freq in batches:
        ids, lens = _encode_ids(tok, texts)
        if not ids.size:
            continue
        # float64 weights are exact for integer sums below 2**53 (9e15 tokens per batch).
        binned = np.rint(np.bincount(ids, weights=np.repeat(freq.astype(np.float64), lens))).astype(np.int64)
        if binned.size > counts.size:
            grown = np.zeros(binned.size, dtype=np.int64)
            grown[: counts.size] = counts
            counts = grown
        counts[: binned.size] += binned
    if add_special_tokens:
        for i in special_ids_per_line(tok):
            if i >= counts.size:
                grown = np.zeros(i + 1, dtype=np.int64)
                grown[: counts.size] = counts
                counts = grown
            counts[i] += lines
    return counts


@dataclass
class Proof:
    """Outcome of checking chunk-locality line by line on a sample."""

    ok: bool
    lines: int
    tokens: int
    counterexample: str | None = None
    # Direct counts of the sample (no special tokens): when the sample is the whole corpus
    # (a small one), these are its counts and nothing needs encoding again.
    direct_counts: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "lines": self.lines, "tokens": self.tokens, "counterexample": self.counterexample}


def prove_locality(tok: Tokenizer, sample: list[str], add_special_tokens: bool = False) -> Proof:
    """Every sample line's direct tokens must equal the concatenation of its chunks' tokens
    (hence equal counts); the first line that differs is the counterexample. With special
    tokens, each line must also hold exactly the post-processor's per-line ids on top.

    Compared as flat id arrays: equal per-line lengths and equal flat ids mean every line is
    equal, without a Python loop over tokens."""
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    if not sample:
        return Proof(True, 0, 0)
    direct, direct_lens = _flat_ids(encode(sample, add_special_tokens=False))
    per_line = chunk_lines(sample)
    distinct = list(dict.fromkeys(c for cs in per_line for c in cs))
    encs = encode(distinct, add_special_tokens=False) if distinct else []
    d_ids, d_lens = _flat_ids(encs)
    d_starts = np.concatenate([[0], np.cumsum(d_lens)[:-1]]).astype(np.int64) if len(d_lens) else d_lens
    index_of = {c: i for i, c in enumerate(distinct)}
    seq = np.fromiter((index_of[c] for cs in per_line for c in cs), dtype=np.int64)
    line_of = np.repeat(np.arange(len(sample)), [len(cs) for cs in per_line])
    seq_lens = d_lens[seq] if seq.size else np.zeros(0, np.int64)
    chunk_lens = np.bincount(line_of, weights=seq_lens, minlength=len(sample)).astype(np.int64)
    total = int(seq_lens.sum())
    gather = np.repeat(d_starts[seq] - (np.cumsum(seq_lens) - seq_lens), seq_lens) + np.arange(total) if total else seq_lens
    got = d_ids[gather] if total else np.zeros(0, np.int64)
    encoded = {c: e.ids for c, e in zip(distinct, encs)}
    bad_len = np.flatnonzero(chunk_lens != direct_lens)
    first = int(bad_len[0]) if bad_len.size else len(sample)
    ends = np.cumsum(direct_lens)
    upto = int(ends[first - 1]) if first else 0  # lines before `first` line up position by position
    diff = np.flatnonzero(direct[:upto] != got[:upto])
    if diff.size:
        first = int(np.searchsorted(ends, diff[0], side="right"))
    if first < len(sample):
        line = sample[first]
        want = direct[ends[first] - direct_lens[first]: ends[first]].tolist()
        have = [i for c in per_line[first] for i in encoded[c]]
        return Proof(False, len(sample), int(ends[first] - direct_lens[first]),
                     f"{line[:200]!r}: direct {want[:40]} vs chunks {have[:40]}")
    tokens = int(direct.size)
    if add_special_tokens:
        specials = special_ids_per_line(tok)
        offsets = np.concatenate([[0], ends])
        for k, (line, full) in enumerate(zip(sample, encode(sample, add_special_tokens=True))):
            plain = direct[offsets[k]: offsets[k + 1]].tolist()
            if Counter(full.ids) != Counter(plain + specials):
                return Proof(False, len(sample), tokens, f"{line[:200]!r}: special tokens {full.ids[:40]} are not {specials} per line")
            tokens += len(specials)
    return Proof(True, len(sample), tokens, direct_counts=np.bincount(direct, minlength=tok.get_vocab_size(with_added_tokens=True)))


# --- one tokenizer's counts from a corpus's chunk counts ----------------------------------------


def write_chunk_counts(cc: ChunkCounts, path: Path, corpus: str) -> Path:
    """Parquet (chunk, count) with provenance; the proof sample goes to `<path>.sample.parquet`
    first, so a complete chunk table always has its sample."""
    meta = {"corpus": corpus, "chunking": CHUNKING, "lines": cc.lines, "chunks": cc.chunks, "distinct": cc.distinct,
            "text_bytes": cc.text_bytes, **cc.meta}
    with atomic_file(sample_path(path)) as fh:
        pq.write_table(pa.table({"line": pa.array(cc.sample, pa.string())}), fh)
    with atomic_file(Path(path)) as fh:
        pq.write_table(cc.table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), fh)
    return Path(path)


def sample_path(path: Path) -> Path:
    return Path(path).with_suffix(".sample.parquet")


def read_chunk_counts(path: Path) -> ChunkCounts:
    path = Path(path)
    try:
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[META_KEY])
        sample = pq.read_table(sample_path(path)).column("line").to_pylist()
    except (OSError, KeyError, TypeError, pa.ArrowInvalid) as exc:
        raise CorpusError(f"{path}: not a complete trimworks chunk table ({exc}); delete it to recount") from exc
    if meta.get("chunking") != CHUNKING:
        raise CorpusError(f"{path}: chunked with {meta.get('chunking')!r}, this trimworks cuts with {CHUNKING!r}; delete it")
    return ChunkCounts(table.replace_schema_metadata(None), int(meta["lines"]), int(meta["chunks"]),
                       int(meta["text_bytes"]), sample, meta)


@functools.lru_cache(maxsize=8)
def _tokenizer_and_locality(path: str, fingerprint: str) -> tuple[Tokenizer, Locality]:
    """Loaded once per process per tokenizer content, not once per language (a 150 k-vocab
    tokenizer.json takes seconds to parse twice); encoding from several threads is safe."""
    return load_plain_tokenizer(Path(path)), analyze_locality(load_tokenizer_json(Path(path)))


def _not_local(loc: Locality) -> dict[str, Any]:
    return {"chunking": CHUNKING, "structure": loc.summary(), "method": "direct",
            "fallback": "not chunk-local: " + "; ".join(loc.reasons)}


def counted_directly(direct: TokenCounts, why: dict[str, Any]) -> TokenCounts:
    """Direct counts carrying the provenance that says why chunk counting was not used."""
    return TokenCounts(direct.counts, direct.tokenizer_fingerprint, direct.corpus, direct.lines, direct.tokens,
                       {**direct.provenance, **why, "method": "direct"})


def tokens_from_chunk_counts(
    tokenizer_json: Path, cc: ChunkCounts, corpus: str, add_special_tokens: bool = False
) -> tuple[TokenCounts | None, dict[str, Any]]:
    """Token counts from chunk counts when the tokenizer is chunk-local (structure, then proof
    on the sample), else (None, provenance saying why: the caller counts directly)."""
    fingerprint = tokenizer_fingerprint(tokenizer_json)
    tok, loc = _tokenizer_and_locality(str(tokenizer_json), fingerprint)
    prov: dict[str, Any] = {"chunking": CHUNKING, "structure": loc.summary()}
    if not loc.local:
        return None, _not_local(loc)
    found = risky_tokens_in_chunks(loc.risky_added_tokens, cc.table.column("chunk"))
    if found:
        return None, {**prov, "method": "direct",
                      "fallback": f"added tokens {found[:5]} strip whitespace across chunks and occur in the corpus"}
    if loc.collapses_spaces:
        ends = chunk_ends_that_normalize_to_space(tok, cc.table.column("chunk"))
        if ends:
            return None, {**prov, "method": "direct", "fallback": f"chunks end in {ends[:5]!r}, which normalize to a space "
                          "that the normalizer's space collapsing would merge with the next chunk's"}
        prov["structure"] += "; no chunk ends in a character that normalizes to a space"
    proof = prove_locality(tok, cc.sample, add_special_tokens)
    prov["proof"] = proof.as_dict()
    if not proof.ok:
        return None, {**prov, "method": "direct", "fallback": f"the proof on {proof.lines} sample lines failed: {proof.counterexample}"}
    whole = proof.lines == cc.lines and proof.direct_counts is not None
    if whole:  # the sample is the whole (small) corpus: the proof counted it directly already
        counts = proof.direct_counts + counts_from_chunks(tok, [], cc.lines, add_special_tokens)
    else:
        counts = counts_from_chunks(tok, iter_chunk_batches(cc.table), cc.lines, add_special_tokens)
    how = ("the whole corpus is the proof sample, so its direct counts are the counts" if whole else
           f"{cc.distinct} distinct chunks encoded once each, weighted by frequency")
    prov.update(method="chunks", distinct_chunks=cc.distinct, chunks=cc.chunks,
                detail=f"{how}; identical to direct counting on {proof.lines} sample lines ({proof.tokens} tokens)")
    return TokenCounts(counts, fingerprint, corpus, cc.lines, int(counts.sum()), prov), prov


def count_tokens_fast(
    tokenizer_json: Path, lines: Callable[[], Iterable[str]], corpus: str,
    sample_lines: int = DEFAULT_PROOF_LINES, progress: Callable[[int], None] | None = None,
) -> TokenCounts:
    """Exact token counts of a corpus the fastest proven way: from chunk counts when the
    tokenizer is chunk-local (structure, then the proof on a sample), else directly.

    `lines` opens the corpus afresh: a proof that fails after the chunk pass needs a second
    pass to count directly. The counts' provenance says which way was taken and why."""
    fingerprint = tokenizer_fingerprint(tokenizer_json)
    _, loc = _tokenizer_and_locality(str(tokenizer_json), fingerprint)
    if loc.local:
        counts, prov = tokens_from_chunk_counts(tokenizer_json, count_chunks(lines(), sample_lines, progress=progress), corpus)
        if counts is not None:
            return counts
    else:
        prov = _not_local(loc)
    return counted_directly(count_tokens(tokenizer_json, lines(), corpus, progress=progress), prov)
