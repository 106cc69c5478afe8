"""The one contract every corpus kind keeps: `CorpusSource`, and `CorpusBase`, the fields and
defaults all kinds share.

A kind is one module in this package: its pydantic spec (the mapping a manifest writes under
`languages.<code>.corpora`) subclasses `CorpusBase` and implements the protocol, and one line
in `sources/__init__.py` registers it. The manifest builds its corpus union from that
registry; the reader, the content fingerprint, the counts cache and the card only call the
protocol, so no code elsewhere switches on the kind. Forgetting `files()` is visible here,
not a silent hole in the fingerprint: a kind that reads local files must say which.

This module imports no manifest code (the manifest imports the registry) and nothing heavy:
the readers import their libraries when they read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from tasks.pipeline.paths import expand_globs, resolve_path

log = logging.getLogger("trimworks.corpora")


@dataclass(frozen=True)
class CorpusPlace:
    """What a source needs besides its own spec: the language it is read for and the folder
    its relative paths resolve against (the manifest's)."""

    language: str
    base_dir: Path

    def resolve(self, value: str) -> Path:
        """A path as the manifest means it: relative to its folder, or `pkg://package/path`."""

        return resolve_path(value, self.base_dir)

    def expand(self, values: list[str]) -> list[Path]:
        """Paths and globs (sorted matches, `**` recursive), in the order given."""

        return expand_globs(values, self.base_dir)


@runtime_checkable
class CorpusSource(Protocol):
    """A kind of corpus: what it reads, what its content is, what it is called."""

    kind: ClassVar[str]  # the manifest key naming the kind, e.g. `text`
    lid_default: ClassVar[bool]  # whether the LID filter applies when the spec says nothing
    synthetic: ClassVar[bool]  # generated text: held-out coverage measures the generator

    def lines(self, place: CorpusPlace) -> Iterator[str]:
        """Non-empty stripped lines, streamed, uncapped (`read` applies `max_lines`)."""
        ...

    def files(self, place: CorpusPlace) -> list[Path]:
        """Every local file the lines come from: their digests are the corpus content key."""
        ...

    def named_paths(self, place: CorpusPlace) -> list[tuple[str, str]]:
        """(entry below the corpus, value) of every path the manifest must find on disk."""
        ...

    def expected_lines(self) -> int | None:
        """Lines `read` will yield when known up front (progress and ETA), else None."""
        ...

    def describe(self) -> str:
        """What the corpus is, for the model card and the catalog."""
        ...


class StrictSpec(BaseModel):
    """A spec mapping: unknown keys are errors (a misspelt key is never ignored), values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusBase(StrictSpec):
    """Fields every kind has. Subclasses add their key (the kind) and implement `lines`."""

    kind: ClassVar[str] = ""
    lid_default: ClassVar[bool] = True
    synthetic: ClassVar[bool] = False

    lid: bool | None = Field(default=None, description="fastText LID filter; default on, off for wordfreq")
    max_lines: int | None = Field(default=None, ge=1)
    max_line_bytes: int | None = Field(default=None, ge=64, le=1 << 30,
                                       description="longer lines are skipped with a counted warning (default 1 MiB)")

    @property
    def lid_applies(self) -> bool:
        return self.lid if self.lid is not None else self.lid_default

    @property
    def line_limit(self) -> int:
        from tasks.engine.counting.tokens import MAX_LINE_BYTES

        return self.max_line_bytes or MAX_LINE_BYTES

    def read(self, place: CorpusPlace) -> Iterator[str]:
        """The corpus's lines, capped at `max_lines`."""
        import itertools

        lines = self.lines(place)
        return itertools.islice(lines, self.max_lines) if self.max_lines else lines

    def lines(self, place: CorpusPlace) -> Iterator[str]:  # pragma: no cover - every kind overrides it
        raise NotImplementedError(f"corpus kind {self.kind!r} does not implement lines()")

    def files(self, place: CorpusPlace) -> list[Path]:
        return []

    def named_paths(self, place: CorpusPlace) -> list[tuple[str, str]]:
        return []

    def expected_lines(self) -> int | None:
        return self.max_lines

    def describe(self) -> str:
        return f"{self.kind} (real text)"


def skip_long(lines: Iterator[str], limit: int, source: str) -> Iterator[str]:
    """Rows longer than `limit` bytes are skipped with a counted warning (the tokenizer would
    need many times their size in memory)."""
    skipped = 0
    for line in lines:
        if len(line) * 4 > limit and len(line.encode("utf-8")) > limit:
            skipped += 1
            log.warning("%s: skipped a row longer than %d bytes (max_line_bytes); %d skipped so far", source, limit, skipped)
            continue
        yield line
