"""Chunk counts once per (language, corpus spec, LID settings), shared by every tokenizer.

Tables live at work_dir/chunks/<language>-<corpus key>-<chunking>.parquet (+ the proof
sample beside it); like token counts they are computed once under a file lock and written
atomically. `count_language` turns them into one tokenizer's token counts, or counts
directly when the tokenizer is not chunk-local (and says so in the log and the table).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock

from tasks.engine.counting.chunks import (CHUNKING, ChunkCounts, count_chunks, counted_directly, read_chunk_counts,
                                 sample_path, tokens_from_chunk_counts, write_chunk_counts)
from tasks.engine.runtime.sealed import UNSEALED, discard_file, file_seal_problem, seal_file
from tasks.engine.counting.tokens import TokenCounts, count_tokens
from tasks.pipeline.corpus.lid import LanguageFilter, LidStats
from tasks.pipeline.corpus.identity import check_snapshot, corpus_content_key, corpus_snapshot
from tasks.pipeline.corpus.reader import LanguageCorpora, split_lines
from tasks.pipeline.manifest import LoadedManifest, corpus_key

log = logging.getLogger("trimworks.counts")


def cached(path: Path, what: str, decode: Callable[[Path], object], repair: bool,
           companions: tuple[Path, ...] = ()) -> bool:
    """Whether a cache file (and its `companions`) may be reused: present, with the digest
    recorded when it was written (tasks/engine/runtime/sealed.py). One an older trimworks wrote
    without a digest is adopted once it decodes. `repair` (under the cache's lock): a damaged
    one is logged and removed, so the caller makes it again; never taken as input."""
    if not path.exists():
        return False
    files = (path, *companions)
    problems = {p: file_seal_problem(p) for p in files}
    if all(v == UNSEALED for v in problems.values()):
        try:
            decode(path)
        except Exception as exc:  # noqa: BLE001 - whatever fails to decode is remade
            problems = {path: f"it does not decode ({exc})"}
        else:
            for p in files:  # its digest from now on (the same whoever writes it)
                seal_file(p)
            return True
    bad = {p: v for p, v in problems.items() if v is not None}
    if not bad:
        return True
    if repair:
        for p, why in bad.items():
            log.warning("%s: %s is damaged (%s); it is discarded and made again", what, p, why)
        for p in files:
            discard_file(p)
    return False


def lid_filtered(corpora: LanguageCorpora, items: Iterator[tuple[str, bool]], stats: LidStats | None = None) -> Iterator[str]:
    """The lines of (line, whether LID applies) items the manifest's LID settings keep."""
    if corpora.lid.enabled:
        lid = LanguageFilter(corpora.resolve(corpora.lid.model), corpora.lid.min_prob)
        return lid.filter(items, corpora.language, stats)
    return (line for line, _ in items)


def train_stream(corpora: LanguageCorpora, stats: LidStats | None = None) -> Iterator[str]:
    """The lines counting reads: the train split after the LID filter."""
    return lid_filtered(corpora, split_lines(corpora, "train"), stats)


def chunks_path(m: LoadedManifest, language: str) -> Path:
    # Keyed on the corpus content (spec, LID settings and file digests), like the counts tables.
    return m.work_dir / "chunks" / f"{language}-{corpus_content_key(m, language)[:16]}-{CHUNKING}.parquet"


def corpus_label(m: LoadedManifest, language: str) -> str:
    return f"{language}:{corpus_key(m, language)[:16]}"


def ensure_chunk_counts(m: LoadedManifest, language: str, on_progress: Callable[[int], None] | None = None,
                        stats: LidStats | None = None) -> Path:
    """The language's chunk table, computed once (one corpus pass, LID included) if missing;
    `stats` (if given) follows the LID filter while this pass reads."""
    corpora = LanguageCorpora.of(m, language)
    snapshot = corpus_snapshot(corpora)  # before the key's digests: any later change shows
    path = chunks_path(m, language)
    what = f"chunk table of {language}"
    if cached(path, what, read_chunk_counts, repair=False, companions=(sample_path(path),)):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if cached(path, what, read_chunk_counts, repair=True, companions=(sample_path(path),)):
            return path
        stats = stats if stats is not None else LidStats()
        cc = count_chunks(train_stream(corpora, stats), sample_lines=m.spec.counting.proof_lines, progress=on_progress)
        check_snapshot(snapshot, language)  # truncated or rewritten while read: no table of mixed bytes
        cc.meta.update(lid_seen=stats.seen, lid_kept=stats.kept)
        log.info("chunked %s: %d lines (%d read, LID kept %.1f%%), %d chunks, %d distinct (%.1f%%)", language, cc.lines,
                 stats.seen, 100 * stats.kept_share, cc.chunks, cc.distinct, 100 * cc.distinct / max(cc.chunks, 1))
        write_chunk_counts(cc, path, corpus_label(m, language))
        seal_file(sample_path(path))
        seal_file(path)
    return path


def count_language(
    m: LoadedManifest, tokenizer_json: Path, language: str, stats: LidStats,
    on_progress: Callable[[int], None] | None = None,
) -> TokenCounts:
    """One tokenizer's counts for a language: from the shared chunk table when the manifest's
    counting method is `chunks` and the tokenizer is proven chunk-local, else direct."""
    label = corpus_label(m, language)
    prov = {"method": "direct", "fallback": "counting.method is direct in the manifest"}
    if m.spec.counting.method == "chunks":
        cc: ChunkCounts = read_chunk_counts(ensure_chunk_counts(m, language, on_progress, stats))
        stats.seen, stats.kept = int(cc.meta.get("lid_seen", cc.lines)), int(cc.meta.get("lid_kept", cc.lines))
        counts, prov = tokens_from_chunk_counts(tokenizer_json, cc, label)
        if counts is not None:
            log.info("counts for %s from %d distinct chunks (%s)", language, cc.distinct, prov["detail"])
            return counts
        log.warning("counting %s directly with %s: %s", language, tokenizer_json, prov["fallback"])
    return counted_directly(count_tokens(tokenizer_json, train_stream(LanguageCorpora.of(m, language), stats), label, progress=on_progress), prov)
