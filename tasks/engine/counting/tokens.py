"""Token frequency counting: stream text through the model's own fast tokenizer.

Counts are a vocab-sized int64 vector built with `np.bincount` on each batch's
concatenated ids; memory is one batch, independent of corpus size. `encode_batch`
runs on all cores (Rust threads), so counting uses both cores of a small machine.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from tasks.engine.runtime.atomic import atomic_file
from tasks.engine.errors import CorpusError, CountsMismatchError, ModelFolderError
from tasks.engine.runtime.failpoints import failpoint
from tasks.engine.runtime.stopping import check_stop
from tasks.engine.checkpoint.model_folder import tokenizer_fingerprint

BATCH_LINES = 4096
T = TypeVar("T")
META_KEY = b"trimworks"


@dataclass(frozen=True)
class TokenCounts:
    """How often each token id occurred in one corpus (one language)."""

    counts: np.ndarray  # int64, length = tokenizer id space
    tokenizer_fingerprint: str
    corpus: str
    lines: int
    tokens: int
    # How the counts were made (method "direct" or "chunks", and why); written to the table.
    provenance: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return int(self.counts.shape[0])


def _grow(counts: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, dtype=counts.dtype)
    out[: counts.size] = counts
    return out


def load_plain_tokenizer(tokenizer_json: Path, word_cache: bool = True) -> Tokenizer:
    """The tokenizer without padding/truncation (a tokenizer.json may pad every line to 128).

    Loaded once per file content identity (path, size, mtime, inode): a base serves every
    variant of a run, and encoding from several threads is safe. Callers must not change it.
    `word_cache=False` for a tokenizer that encodes a few thousand lines and is dropped (a
    variant's): loaded fresh, not remembered (the cache would hold the last 16 variants'
    tokenizers for nothing), and without its word cache (`without_word_cache`)."""
    if not word_cache:
        return _load_plain_uncached(str(tokenizer_json), word_cache=False)
    try:
        st = os.stat(tokenizer_json)
    except OSError:
        return _load_plain_uncached(str(tokenizer_json))  # raises the located error
    return _load_plain(str(tokenizer_json), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=16)
def _load_plain(tokenizer_json: str, size: int, mtime_ns: int, inode: int) -> Tokenizer:
    return _load_plain_uncached(tokenizer_json)


def _load_plain_uncached(tokenizer_json: str, word_cache: bool = True) -> Tokenizer:
    try:
        tok = Tokenizer.from_file(str(tokenizer_json))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise ModelFolderError(f"{tokenizer_json}: cannot load the tokenizer ({exc}); the file is truncated or corrupt") from exc
    tok.no_padding()
    tok.no_truncation()
    return tok if word_cache else without_word_cache(tok)


def without_word_cache(tok: Tokenizer) -> Tokenizer:
    """Turn off the model's word cache (BPE's, 10 k words).

    tokenizers 0.23 does not give that cache's memory back when a tokenizer whose
    pre-tokenizer is ByteLevel(use_regex=True) (GPT-2, SmolLM2) is dropped: ~70 KB per 300
    lines encoded, every time. A run builds and drops one tokenizer per variant, so the flow
    grew by ~1 MB per variant (3.9 GB after 2,000). Long-lived base tokenizers keep theirs
    (bounded, and 10-20 % faster on a large corpus)."""
    resize = getattr(tok.model, "_resize_cache", None)
    if resize is not None:
        resize(0)
    return tok


def batched(lines: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last may be shorter), streaming."""
    it = iter(lines)
    while batch := list(itertools.islice(it, size)):
        yield batch


def count_tokens(
    tokenizer_json: Path,
    lines: Iterable[str],
    corpus: str,
    batch_lines: int = BATCH_LINES,
    progress: Callable[[int], None] | None = None,
) -> TokenCounts:
    """Count token ids of `lines` (no special tokens added), streaming in batches."""
    tok = load_plain_tokenizer(tokenizer_json)
    # get_vocab_size is cheap; a 250k-entry get_vocab() dict is not. Ids past it (gaps in
    # the id space) grow the vector below.
    n = tok.get_vocab_size(with_added_tokens=True)
    counts = np.zeros(n, dtype=np.int64)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    n_lines = 0
    for batch in batched(lines, batch_lines):
        encs = encode(batch, add_special_tokens=False)
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64)
        if ids.size:
            binned = np.bincount(ids, minlength=n)
            if binned.size > counts.size:
                counts, n = _grow(counts, binned.size), binned.size
            counts += binned
        n_lines += len(batch)
        failpoint("counting")
        check_stop()
        if progress is not None:
            progress(n_lines)
    return TokenCounts(counts, tokenizer_fingerprint(tokenizer_json), corpus, n_lines, int(counts.sum()),
                       {"method": "direct", "detail": "every line encoded by the tokenizer"})


MAX_LINE_BYTES = 1 << 20  # longer lines are skipped (counted, warned): memory stays bounded
log = logging.getLogger("trimworks.counting")


def check_text_encoding(path: Path, first: bytes) -> None:
    """What the first line (or first chunk) of a corpus file shows about its encoding."""
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CorpusError(f"{path}: UTF-16 (it starts with a byte-order mark); re-encode it as UTF-8 (iconv -f utf-16 -t utf-8)")
    if b"\r" in first.rstrip(b"\r") and b"\n" not in first:
        raise CorpusError(f"{path}: lines end with a lone carriage return (CR, old Mac style); convert them to "
                          "newlines (tr '\\r' '\\n') and rerun")


def iter_text_file(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[str]:
    """Non-empty stripped lines of a UTF-8 text file; a bad byte is a located error.

    Lines are read at most `max_line_bytes` at a time: a longer line (one 200 MB line with
    no newline, say) is skipped without ever being held in memory, with a counted warning."""
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open corpus file ({exc.strerror})") from exc
    skipped = 0
    with fh:
        lineno = 0
        while raw := fh.readline(max_line_bytes + 1):
            lineno += 1
            if lineno == 1:
                check_text_encoding(path, raw)
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while (rest := fh.readline(max_line_bytes + 1)) and not rest.endswith(b"\n"):
                    pass  # drain the long line in bounded chunks
                skipped += 1
                log.warning("%s:%d: skipped a line longer than %d bytes (max_line_bytes); %d line(s) skipped in this file so far",
                            path, lineno, max_line_bytes, skipped)
                continue
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise CorpusError(
                    f"{path}:{lineno}: invalid UTF-8 at byte {exc.start} of the line; "
                    "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from exc
            if "\x00" in line:
                raise CorpusError(f"{path}:{lineno}: NUL bytes in the line: the file looks like UTF-16 without a "
                                  "byte-order mark, or binary; re-encode it as UTF-8 (iconv -f utf-16le -t utf-8)")
            if line:
                yield line
    if skipped:
        log.warning("%s: %d line(s) longer than %d bytes were skipped", path, skipped, max_line_bytes)


def write_counts(counts: TokenCounts, tokenizer_json: Path, path: Path) -> Path:
    """Parquet table (token_id, token, count) of non-zero counts, with provenance metadata."""
    tok = Tokenizer.from_file(str(tokenizer_json))
    nz = np.flatnonzero(counts.counts)
    table = pa.table(
        {
            "token_id": pa.array(nz, type=pa.int32()),
            "token": pa.array([tok.id_to_token(int(i)) for i in nz], type=pa.string()),
            "count": pa.array(counts.counts[nz], type=pa.int64()),
        }
    )
    meta = {
        "tokenizer_fingerprint": counts.tokenizer_fingerprint,
        "corpus": counts.corpus,
        "lines": counts.lines,
        "tokens": counts.tokens,
        "vocab_size": counts.vocab_size,
        "counting": counts.provenance or {"method": "unknown"},
    }
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    with atomic_file(Path(path)) as fh:
        pq.write_table(table, fh)
    return Path(path)


def read_counts(path: Path) -> TokenCounts:
    """A table `write_counts` wrote. Read as one file: `pq.read_table` goes through
    pyarrow.dataset, which imports pandas (~0.3 s of a `trimworks trim`)."""
    path = Path(path)
    try:
        with pq.ParquetFile(path) as fh:
            table = fh.read()
        meta = json.loads(table.schema.metadata[META_KEY])
    except (OSError, KeyError, TypeError, pa.ArrowInvalid) as exc:
        raise CorpusError(f"{path}: not a trimworks counts table ({exc})") from exc
    counts = np.zeros(int(meta["vocab_size"]), dtype=np.int64)
    ids = _ints(table, "token_id", path)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= counts.size):
        bad = int(ids.max()) if int(ids.max()) >= counts.size else int(ids.min())
        raise CorpusError(f"{path}: token id {bad} is outside the vocabulary (0..{counts.size - 1}); the table is damaged. "
                          "Delete it and rerun to count again")
    counts[ids] = _ints(table, "count", path)
    return TokenCounts(counts, meta["tokenizer_fingerprint"], meta["corpus"], int(meta["lines"]), int(meta["tokens"]),
                       meta.get("counting", {}))


def _ints(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """An integer column as numpy from its buffers: pyarrow's own `to_numpy` imports pandas
    (~0.7 s of a `trimworks trim`)."""
    column = table.column(name)
    if column.null_count or not pa.types.is_integer(column.type):
        raise CorpusError(f"{path}: column {name!r} is not a null-free integer column ({column.type})")
    dtype = np.dtype(str(column.type))
    parts = [np.frombuffer(c.buffers()[1], dtype=dtype, count=len(c) + c.offset)[c.offset:] for c in column.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def check_counts_match(counts: TokenCounts, source: str, fingerprint: str, tokenizer_json: Path) -> None:
    if counts.tokenizer_fingerprint != fingerprint:
        raise CountsMismatchError(
            f"{source}: counts were made with another tokenizer (fingerprint {counts.tokenizer_fingerprint[:12]}…) "
            f"than {tokenizer_json} ({fingerprint[:12]}…); recount with `trimworks count` for this model"
        )
