"""`{jsonl: {path: [files or globs], field: text}}`: JSON Lines, one JSON object per line,
the example in a string field.

    languages:
      fr:
        corpora:
          - jsonl: {path: [data/fr/*.jsonl.gz], field: text}

Paths resolve against the manifest's folder and may be globs (sorted, `**` recursive), as
for `text` and `parquet`. Files ending in `.gz` or `.zst` are decompressed as they stream
(gzip, Zstandard); any other file is read as plain `.jsonl`. Blank lines are skipped. A line
that is not valid JSON, not an object, lacks the field or holds a non-string in it is an
error naming the file and line: a corpus is never silently thinned. The field's text is
stripped (an empty one is skipped) and, like a Parquet row, may span several lines. The
content key digests the files as stored (compressed bytes).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pydantic import Field

from tasks.engine.errors import CorpusError
from tasks.pipeline.corpus.sources.base import CorpusBase, CorpusPlace, StrictSpec, log


class JsonlSpec(StrictSpec):
    path: list[str] = Field(min_length=1, description="JSON Lines files or globs (.jsonl, .jsonl.gz, .jsonl.zst)")
    field: str = Field(default="text", min_length=1, description="the key of each object holding the text")


class JsonlCorpus(CorpusBase):
    kind = "jsonl"

    jsonl: JsonlSpec

    def lines(self, place: CorpusPlace) -> Iterator[str]:
        limit = self.line_limit
        return (text for p in place.expand(self.jsonl.path) for text in iter_jsonl(p, self.jsonl.field, limit))

    def files(self, place: CorpusPlace) -> list[Path]:
        return place.expand(self.jsonl.path)

    def named_paths(self, place: CorpusPlace) -> list[tuple[str, str]]:
        return [(f"jsonl.path[{k}]", v) for k, v in enumerate(self.jsonl.path)]


def open_stream(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed as they are read when it ends in .gz or .zst."""
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.suffix == ".zst":
        return io.BufferedReader(ZstdStream(path))
    return path.open("rb")


class ZstdStream(io.RawIOBase):
    """A .zst file's decompressed bytes, every frame in turn (pzstd, `cat a.zst b.zst`).

    zstandard's own stream reader ends silently when the file ends inside a frame; a
    truncated corpus must be an error, so frames are tracked here."""

    READ = 1 << 16  # compressed bytes per step: the decompressed output stays modest

    def __init__(self, path: Path):
        import zstandard

        self._error = zstandard.ZstdError
        self._file = path.open("rb")
        self._zstd = zstandard.ZstdDecompressor()
        self._frame = self._zstd.decompressobj()
        self._in_frame = False  # bytes of an unfinished frame were fed
        self._out = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        while not self._out:
            data = self._file.read(self.READ)
            if not data:
                if self._in_frame:
                    raise EOFError("the file ends inside a Zstandard frame (truncated)")
                return 0
            self._out = self._decompress(data)
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        try:
            while data:
                if self._frame.eof:
                    self._frame = self._zstd.decompressobj()
                out.append(self._frame.decompress(data))
                self._in_frame = not self._frame.eof
                data = self._frame.unused_data if self._frame.eof else b""
        except self._error as exc:
            raise ValueError(f"not Zstandard data ({exc})") from exc
        return b"".join(out)

    def close(self) -> None:
        self._file.close()
        super().close()


def iter_jsonl(path: Path, field: str, max_line_bytes: int) -> Iterator[str]:
    """The stripped, non-empty `field` of each object in one JSON Lines file, streamed.

    The text of a line longer than `max_line_bytes` is skipped with a counted warning, read
    in bounded pieces and never held whole (its JSON is not checked)."""
    path = Path(path)
    try:
        fh = open_stream(path)
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open corpus file ({exc.strerror})") from exc
    lineno, skipped = 0, 0
    with fh:
        try:
            while raw := fh.readline(max_line_bytes + 1):
                lineno += 1
                if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                    while (rest := fh.readline(max_line_bytes + 1)) and not rest.endswith(b"\n"):
                        pass  # drain the long line in bounded pieces
                    skipped += 1
                    log.warning("%s:%d: skipped a line longer than %d bytes (max_line_bytes); %d skipped in this file so far",
                                path, lineno, max_line_bytes, skipped)
                    continue
                if raw.strip():
                    text = _field(raw, field, f"{path}:{lineno}")
                    if text := text.strip():
                        yield text
        except CorpusError:
            raise
        except (OSError, EOFError, ValueError) as exc:  # a corrupt or truncated .gz / .zst
            raise CorpusError(f"{path}: cannot decompress after line {lineno} ({exc}); check the file is complete") from exc


def _field(raw: bytes, field: str, where: str) -> str:
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{where}: invalid UTF-8 at byte {exc.start} of the line; JSON Lines must be UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object") from exc
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: a JSON {type(obj).__name__}, not an object; each line must be one JSON object")
    if field not in obj:
        raise CorpusError(f"{where}: no field {field!r} (fields: {sorted(obj)[:10]}); set `field:` to the one holding the text")
    value = obj[field]
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise CorpusError(f"{where}: field {field!r} is {kind}, not a string")
    return value
