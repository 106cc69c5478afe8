"""Reading a language's corpora as a stream of lines, split into train and held-out.

The split is a hash of the line (stable across runs and machines), so the held-out text is
never counted. `wordfreq` turns the real word-frequency lists of the PyPI package into
weighted pseudo-sentences: an always-available, offline corpus for any language it knows.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import random
from collections.abc import Iterator
from pathlib import Path

from tasks.engine.counting.tokens import MAX_LINE_BYTES, iter_text_file
from tasks.engine.errors import CorpusError
from tasks.pipeline.manifest import (
    CorpusSpec,
    DatasetsCorpus,
    LoadedManifest,
    ParquetCorpus,
    TextCorpus,
    WordfreqCorpus,
    expand_globs,
)

log = logging.getLogger("trimworks.corpora")


def wordfreq_sentences(lang: str, n_lines: int, words: int = 5000, seed: int = 0) -> list[str]:
    """Pseudo-sentences of words drawn by their real frequency in `lang` (deterministic)."""
    from wordfreq import available_languages, get_frequency_dict

    code = lang.replace("_", "-")
    if code not in available_languages():
        code = code.split("-")[0]
    if code not in available_languages():
        raise CorpusError(f"wordfreq has no word list for language {lang!r}")
    # The frequency dict needs no word segmenter (word_frequency would want MeCab for ja).
    top = sorted(get_frequency_dict(code).items(), key=lambda kv: -kv[1])[:words]
    vocab = [w for w, _ in top]
    weights = [f for _, f in top]
    cumulative = list(itertools.accumulate(weights))  # once: choices(weights=) re-sums per call
    rng = random.Random(f"{lang}-{seed}")
    return [" ".join(rng.choices(vocab, cum_weights=cumulative, k=rng.randint(4, 14))).capitalize() + "."
            for _ in range(n_lines)]


# Per-language quotation marks and number styles, so the text holds what real text holds.
_QUOTES = {"fr": [("« ", " »"), ("“", "”")], "de": [("„", "“"), ("»", "«")], "en": [("“", "”"), ("‘", "’"), ('"', '"')]}
_DECIMAL_COMMA = {"fr", "de", "es", "it", "pt", "nl", "pl", "cs", "ru", "uk", "sv", "da", "fi", "nb", "tr", "ro", "hu"}
_PUNCT_AFTER = [",", ",", ",", ";", ":", " –", " -", "…"]
_SENTENCE_END = [".", ".", ".", ".", "?", "!", ":", "…"]


def _number(rng: random.Random, lang: str) -> str:
    """A number as real text writes it: years, counts, decimals, percentages, ordinals, dates."""
    comma = lang.split("_")[0] in _DECIMAL_COMMA
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.randint(1800, 2030))
    if kind == 1:
        return str(rng.randint(0, 100))
    if kind == 2:
        whole, frac = rng.randint(0, 999), rng.randint(0, 99)
        return f"{whole},{frac}" if comma else f"{whole}.{frac}"
    if kind == 3:
        return f"{rng.randint(1, 100)}{' %' if comma else '%'}"
    if kind == 4:
        n = rng.randint(1000, 9_999_999)
        return f"{n:,}".replace(",", "." if comma else ",")
    if kind == 5:
        return f"{rng.randint(1, 31)}.{rng.randint(1, 12)}.{rng.randint(1900, 2030)}" if comma else f"{rng.randint(1, 12)}/{rng.randint(1, 31)}/{rng.randint(1900, 2030)}"
    if kind == 6:
        return f"{rng.randint(1, 99)}." if lang.startswith("de") else f"({rng.randint(1, 20)})"
    if kind == 7:
        return f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
    return str(rng.randint(0, 9))


def wordfreq_text(lang: str, n_lines: int, words: int = 5000, seed: int = 0) -> list[str]:
    return list(_wordfreq_text(lang, n_lines, words, seed))


@functools.lru_cache(maxsize=4)  # counting per tokenizer and the held-out split read it again
def _wordfreq_text(lang: str, n_lines: int, words: int, seed: int) -> tuple[str, ...]:
    """Text-like lines from wordfreq's list: every one of the `words` most frequent words in
    turn (so each is counted, not only the frequent ones), lower case mid-sentence, Titlecase at
    a sentence start and as a name, with commas, quotes, parentheses, numbers, dates and
    sentence ends. Every word starts a line once per `words` lines: use `lines` >= 2 x `words`. wordfreq's lists are case-folded and hold no digits or punctuation: the
    plain pseudo-sentences lose every capitalised form and every symbol real text has.
    Deterministic; the word order is reshuffled on every pass over the list."""
    from wordfreq import available_languages, get_frequency_dict

    code = lang.replace("_", "-")
    if code not in available_languages():
        code = code.split("-")[0]
    if code not in available_languages():
        raise CorpusError(f"wordfreq has no word list for language {lang!r}")
    # Digit runs come as '0', '00', '000' (wordfreq folds digits); real numbers are added below.
    vocab = [w for w, _ in sorted(get_frequency_dict(code).items(), key=lambda kv: -kv[1])[:words]]
    rng = random.Random(f"text-{lang}-{seed}")
    quotes = _QUOTES.get(lang.split("_")[0], [("“", "”"), ('"', '"')])
    french = lang.split("_")[0] == "fr"  # a space before ; : ! ? (French typography)

    def stream() -> Iterator[tuple[str, bool]]:
        npass = 0
        while True:
            order = vocab[:]
            rng.shuffle(order)
            titled = npass % 3 == 2  # every third pass: the Titlecase form mid-sentence too
            for w in order:
                yield w, titled
            npass += 1

    words_it, initial_it = stream(), stream()
    out = []
    for _ in range(n_lines):
        parts = []
        for k in range(rng.randint(3, 12)):
            # The line's first word comes from its own pass over the list: line-initial forms
            # differ from mid-line ones (byte-level BPE: "Word" vs " Word").
            w, titled = next(initial_it) if k == 0 else next(words_it)
            if k == 0 or titled:
                w = w[:1].upper() + w[1:]
            r = rng.random()
            if r < 0.04:
                o, c = rng.choice(quotes)
                w = f"{o}{w}{c}"
            elif r < 0.06:
                w = f"({w})"
            parts.append(w)
            r = rng.random()
            if r < 0.12:
                p = rng.choice(_PUNCT_AFTER)
                parts[-1] += " " + p if french and p in (";", ":") else p
            elif r < 0.2:
                parts.append(_number(rng, lang))
        line = " ".join(parts).rstrip(",;:–-… ")
        end = rng.choice(_SENTENCE_END)
        out.append(line + (" " + end if french and end in ("?", "!", ":") else end))
    return tuple(out)


def is_heldout(line: str, percent: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(line.encode(), digest_size=8).digest(), "big")
    return (h % 10_000) < percent * 100


def iter_corpus(spec: CorpusSpec, language: str, m: LoadedManifest) -> Iterator[str]:
    """Non-empty stripped lines of one corpus spec, capped at `max_lines`."""
    lines: Iterator[str]
    limit = spec.max_line_bytes or MAX_LINE_BYTES
    if isinstance(spec, TextCorpus):
        lines = (line for p in expand_globs(spec.text, m.base_dir) for line in iter_text_file(p, limit))
    elif isinstance(spec, ParquetCorpus):
        lines = _skip_long(_iter_parquet(expand_globs(spec.parquet, m.base_dir), spec.column), limit, f"{spec.parquet}")
    elif isinstance(spec, DatasetsCorpus):
        lines = _skip_long(_iter_datasets(spec, m), limit, spec.datasets)
    elif isinstance(spec, WordfreqCorpus):
        w = spec.wordfreq
        make = wordfreq_text if w.style == "text" else wordfreq_sentences
        lines = iter(make(language, w.lines, w.words, w.seed))
    else:  # pragma: no cover - the manifest union is closed
        raise CorpusError(f"unknown corpus spec {spec!r}")
    return itertools.islice(lines, spec.max_lines) if spec.max_lines else lines


def _skip_long(lines: Iterator[str], limit: int, source: str) -> Iterator[str]:
    """Rows longer than `limit` bytes are skipped with a counted warning (the tokenizer would
    need many times their size in memory)."""
    skipped = 0
    for line in lines:
        if len(line) * 4 > limit and len(line.encode("utf-8")) > limit:
            skipped += 1
            log.warning("%s: skipped a row longer than %d bytes (max_line_bytes); %d skipped so far", source, limit, skipped)
            continue
        yield line


def _iter_parquet(paths: list[Path], column: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    for p in paths:
        try:
            pf = pq.ParquetFile(p)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            raise CorpusError(f"{p}: not a readable Parquet file ({exc})") from exc
        if column not in pf.schema_arrow.names:
            raise CorpusError(f"{p}: no column {column!r} (columns: {pf.schema_arrow.names}); set `column:`")
        for batch in pf.iter_batches(columns=[column], batch_size=8192):
            for text in batch.column(0).to_pylist():
                if text and (text := str(text).strip()):
                    yield text


def _iter_datasets(spec: DatasetsCorpus, m: LoadedManifest) -> Iterator[str]:
    import datasets

    local = m.resolve(spec.datasets)
    try:
        if local.is_dir() and (local / "dataset_info.json").exists():
            ds = datasets.load_from_disk(str(local))
            ds = ds[spec.split] if isinstance(ds, datasets.DatasetDict) else ds
        elif local.exists():
            builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text"}.get(local.suffix)
            if builder is None:
                raise CorpusError(f"{local}: unknown data file type {local.suffix!r}")
            ds = datasets.load_dataset(builder, data_files=str(local), split="train", streaming=spec.streaming)
        else:
            ds = datasets.load_dataset(spec.datasets, spec.config, split=spec.split, streaming=spec.streaming)
    except CorpusError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; the user needs the source
        raise CorpusError(f"datasets source {spec.datasets!r} (config {spec.config}, split {spec.split}): {exc}") from exc
    for row in ds:
        text = row.get(spec.column)
        if text and (text := str(text).strip()):
            yield text


def lid_applies(spec: CorpusSpec) -> bool:
    return spec.lid if spec.lid is not None else not isinstance(spec, WordfreqCorpus)


def split_lines(m: LoadedManifest, language: str, split: str) -> Iterator[tuple[str, bool]]:
    """(line, whether LID applies) of one split. With explicit held-out corpora, the
    training corpora are all train; otherwise a hash split of the same sources."""
    lang = m.spec.languages[language]
    explicit = lang.heldout.corpora
    if split == "heldout" and explicit:
        for spec in explicit:
            yield from ((line, lid_applies(spec)) for line in iter_corpus(spec, language, m))
        return
    want_heldout = split == "heldout"
    for spec in lang.corpora:
        for line in iter_corpus(spec, language, m):
            if explicit or is_heldout(line, lang.heldout.percent) == want_heldout:
                yield line, lid_applies(spec)
