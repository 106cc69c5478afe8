"""Counts computed once per (tokenizer fingerprint, language, corpus spec), reused forever.

Tables live at work_dir/counts/<tokenizer fp>/<language>-<corpus key>.parquet; a file lock
makes concurrent runs compute each table once, and the atomic write means a crash leaves
either no table or a complete one. Each table carries its digest (`<table>.xxh3`), checked
when it is reused: a damaged table is made again, never counted as input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from tasks.engine.runtime.progress import RateLog
from tasks.engine.runtime.atomic import write_text_atomic
from tasks.engine.counting.tokens import count_tokens, read_counts, write_counts
from tasks.engine.runtime.sealed import seal_file
from tasks.engine.errors import CorpusError
from tasks.pipeline.corpus.identity import check_snapshot, corpus_content_key, corpus_snapshot
from tasks.pipeline.corpus.chunk_cache import cached, count_language, lid_filtered
from tasks.pipeline.corpus.lid import LidStats
from tasks.pipeline.corpus.reader import LanguageCorpora, expected_lines, split_lines
from tasks.pipeline.manifest import LoadedManifest
from tasks.engine.checkpoint.model_folder import tokenizer_fingerprint

log = logging.getLogger("trimworks.counts")


def counts_path(m: LoadedManifest, tokenizer_json: Path, language: str) -> Path:
    fp = tokenizer_fingerprint(tokenizer_json)
    return m.work_dir / "counts" / fp[:16] / f"{language}-{corpus_content_key(m, language)[:16]}.parquet"


def heldout_path(m: LoadedManifest, language: str) -> Path:
    return m.work_dir / "heldout" / f"{language}-{corpus_content_key(m, language)[:16]}.txt"


def ensure_heldout(m: LoadedManifest, language: str) -> Path:
    """The language's held-out lines (after LID), saved once as text for every variant to reuse."""
    corpora = LanguageCorpora.of(m, language)
    snapshot = corpus_snapshot(corpora)
    path = heldout_path(m, language)
    if not cached(path, f"held-out text of {language}", read_heldout, repair=True):  # its digest checked, as counts
        lines = heldout_lines(corpora)
        check_snapshot(snapshot, language)  # a corpus changed while read is an error
        if not lines:
            raise CorpusError(f"{m.path}: languages.{language}: no held-out lines; add text or heldout.corpora")
        write_text_atomic(path, "\n".join(lines) + "\n")
        seal_file(path)
    return path


def read_heldout(path: Path) -> list[str]:
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


def heldout_lines(corpora: LanguageCorpora) -> list[str]:
    """The held-out split after the LID filter, up to `heldout.max_lines`."""
    cap = corpora.spec.heldout.max_lines
    out: list[str] = []
    for line in lid_filtered(corpora, split_lines(corpora, "heldout")):
        out.append(line)
        if len(out) >= cap:
            break
    return out


def expected_train_lines(m: LoadedManifest, language: str) -> int | None:
    """Lines counting will read, when every corpus says so up front (wordfreq, max_lines)."""
    return expected_lines(LanguageCorpora.of(m, language))


def ensure_counts(
    m: LoadedManifest, tokenizer_json: Path, language: str, on_progress: Callable[[int], None] | None = None
) -> Path:
    """Return the cached counts table, computing it (once, under a lock) if missing.
    `on_progress(lines)` is called after every batch (e.g. to update a progress artifact)."""
    snapshot = corpus_snapshot(LanguageCorpora.of(m, language))  # before the key's digests: any later change shows
    path = counts_path(m, tokenizer_json, language)
    what = f"counts of {language} ({tokenizer_json.parent.name} tokenizer)"
    if cached(path, what, read_counts, repair=False):  # its digest checked: a damaged table is never input
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if cached(path, what, read_counts, repair=True):
            return path
        stats = LidStats()
        who = f"counting {language} ({tokenizer_json.parent.name} tokenizer)"
        rate = RateLog(who, "lines", lambda line: log.info("%s; LID kept %.1f%%", line, 100 * stats.kept_share),
                       total=expected_train_lines(m, language))

        def progress(lines: int) -> None:
            if on_progress is not None:
                on_progress(lines)
            rate.update(lines)  # every few seconds, with rate and ETA

        # Chunk counts shared by every tokenizer by default; direct counting when not chunk-local.
        counts = count_language(m, tokenizer_json, language, stats, progress)
        check_snapshot(snapshot, language)  # truncated or rewritten while counted: not a partial table
        if counts.tokens == 0:
            raise CorpusError(
                f"{m.path}: languages.{language}: no text left to count "
                f"({stats.seen} lines read, {stats.kept} kept by the LID filter); check its corpora"
            )
        log.info("counted %s with the %s tokenizer: %d lines (%d read, LID kept %.1f%%), %d tokens in %.1f s (%s)", language,
                 tokenizer_json.parent.name, counts.lines, stats.seen, 100 * stats.kept_share, counts.tokens,
                 rate.clock() - rate.start, counts.provenance.get("method"))
        write_counts(counts, tokenizer_json, path)
        seal_file(path)  # checked on every later read (chunk_cache.cached)
    return path
