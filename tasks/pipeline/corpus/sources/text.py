"""`{text: [files or globs]}`: UTF-8 text files, one example per line.

Relative paths resolve against the manifest's folder; globs expand sorted (`**` recursive).
Lines longer than `max_line_bytes` are skipped, counted and warned about without ever being
held in memory (tasks/engine/counting/tokens.py `iter_text_file`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from tasks.pipeline.corpus.sources.base import CorpusBase, CorpusPlace


class TextCorpus(CorpusBase):
    kind = "text"

    text: list[str] = Field(description="UTF-8 text files or globs, one example per line")

    def lines(self, place: CorpusPlace) -> Iterator[str]:
        from tasks.engine.counting.tokens import iter_text_file

        limit = self.line_limit
        return (line for p in place.expand(self.text) for line in iter_text_file(p, limit))

    def files(self, place: CorpusPlace) -> list[Path]:
        return place.expand(self.text)

    def named_paths(self, place: CorpusPlace) -> list[tuple[str, str]]:
        return [(f"text[{k}]", v) for k, v in enumerate(self.text)]
