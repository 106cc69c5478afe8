"""Reading a language's corpora as a stream of lines, split into train and held-out.

The split is a hash of the line (stable across runs and machines), so the held-out text is
never counted. Each corpus is read through its kind's `CorpusSource` (corpus/sources/);
nothing here knows the kinds. `LanguageCorpora` is all of the manifest reading needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks.pipeline.corpus.sources import CorpusPlace
from tasks.pipeline.corpus.sources.wordfreq import wordfreq_sentences, wordfreq_text  # noqa: F401 - their old home
from tasks.pipeline.manifest import CorpusSpec, LanguageSpec, LidSpec, LoadedManifest, language_corpus_key, resolve_path


@dataclass(frozen=True)
class LanguageCorpora:
    """One language's counting input as the manifest sets it: its corpora and held-out spec,
    the LID settings, and the folder relative paths resolve against."""

    language: str
    spec: LanguageSpec
    lid: LidSpec
    base_dir: Path

    @classmethod
    def of(cls, m: LoadedManifest, language: str) -> LanguageCorpora:
        return cls(language, m.spec.languages[language], m.spec.lid, m.base_dir)

    @property
    def place(self) -> CorpusPlace:
        return CorpusPlace(self.language, self.base_dir)

    @property
    def all_specs(self) -> list[CorpusSpec]:
        """The counting corpora, then the explicit held-out corpora (if any)."""
        return [*self.spec.corpora, *(self.spec.heldout.corpora or [])]

    @property
    def key(self) -> str:
        """The manifest's corpus_key: spec and LID settings, no file content."""
        return language_corpus_key(self.language, self.spec, self.lid)

    def resolve(self, value: str) -> Path:
        return resolve_path(value, self.base_dir)


def is_heldout(line: str, percent: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(line.encode(), digest_size=8).digest(), "big")
    return (h % 10_000) < percent * 100


def lid_applies(spec: CorpusSpec) -> bool:
    return spec.lid_applies


def split_lines(corpora: LanguageCorpora, split: str) -> Iterator[tuple[str, bool]]:
    """(line, whether LID applies) of one split. With explicit held-out corpora, the
    training corpora are all train; otherwise a hash split of the same sources."""
    lang, place = corpora.spec, corpora.place
    explicit = lang.heldout.corpora
    if split == "heldout" and explicit:
        for spec in explicit:
            yield from ((line, spec.lid_applies) for line in spec.read(place))
        return
    want_heldout = split == "heldout"
    for spec in lang.corpora:
        for line in spec.read(place):
            if explicit or is_heldout(line, lang.heldout.percent) == want_heldout:
                yield line, spec.lid_applies


def expected_lines(corpora: LanguageCorpora) -> int | None:
    """Train lines counting will read, when every corpus says so up front (wordfreq, max_lines)."""
    lang = corpora.spec
    total = 0
    for c in lang.corpora:
        n = c.expected_lines()
        if n is None:
            return None
        total += n if lang.heldout.corpora else round(n * (1 - lang.heldout.percent / 100))
    return total
