"""A language's counting input named by its content: the corpus spec plus the sha256 of every
local file it reads (streamed, cached by path, size, mtime and inode).

Counts tables and held-out text are keyed on this, so a corpus that is edited, truncated or
restored is counted again; `--force` can never reuse counts of other bytes. The stat keys
taken here are checked again after reading: a corpus that changes while it is read is an
error, never a silently partial count.
"""

from __future__ import annotations

from pathlib import Path

from tasks.engine.checkpoint.content_id import DigestCache, check_unchanged, stat_key
from tasks.engine.errors import CorpusError
from tasks.pipeline.corpus.reader import LanguageCorpora
from tasks.pipeline.manifest import LoadedManifest, spec_hash

DIGEST_CACHE = "digests.json"


def corpus_files(corpora: LanguageCorpora) -> list[Path]:
    """Every local file a language's corpora (and explicit held-out corpora) read: what each
    kind's `files()` names (corpus/sources/)."""
    place = corpora.place
    return [p for spec in corpora.all_specs for p in spec.files(place)]


def corpus_snapshot(corpora: LanguageCorpora) -> dict[str, tuple[int, int, int]]:
    """Stat keys of the language's files, to compare after reading them."""
    snap = {}
    for p in corpus_files(corpora):
        try:
            snap[str(p)] = stat_key(p)
        except OSError as exc:
            raise CorpusError(f"{p}: cannot read corpus file ({exc.strerror}) for languages.{corpora.language}") from exc
    return snap


def check_snapshot(snapshot: dict[str, tuple[int, int, int]], language: str) -> None:
    """Raise if any corpus file changed since `snapshot` was taken (it was read meanwhile)."""
    for path, before in snapshot.items():
        try:
            check_unchanged(Path(path), before, "read")
        except CorpusError:
            raise
        except Exception as exc:  # noqa: BLE001 - ChangedWhileReadingError: say which language
            raise CorpusError(f"languages.{language}: {exc}") from exc


def corpus_content_key(m: LoadedManifest, language: str) -> str:
    """corpus_key (spec and LID settings) plus the content digest of every local file."""
    return content_key(LanguageCorpora.of(m, language), m.work_dir)


def content_key(corpora: LanguageCorpora, work_dir: Path) -> str:
    """corpus_content_key from the language's settings; file digests are cached in `work_dir`."""
    cache = DigestCache(work_dir / DIGEST_CACHE)
    files = []
    for p in corpus_files(corpora):
        try:
            files.append((str(p), cache.digest(p)))
        except OSError as exc:
            raise CorpusError(f"{p}: cannot read corpus file ({exc.strerror}) for languages.{corpora.language}") from exc
        except Exception as exc:  # noqa: BLE001 - changed while hashed
            raise CorpusError(f"languages.{corpora.language}: {exc}") from exc
    try:
        cache.save()
    except OSError:
        pass  # a cache that cannot be saved only costs a rehash next time
    return spec_hash({"spec": corpora.key, "files": files})
