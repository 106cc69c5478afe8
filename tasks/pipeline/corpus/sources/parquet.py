"""`{parquet: [files or globs], column: text}`: one example per row of a string column,
read in record batches (memory is one batch, whatever the file size)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tasks.engine.errors import CorpusError
from tasks.pipeline.corpus.sources.base import CorpusBase, CorpusPlace, skip_long


class ParquetCorpus(CorpusBase):
    kind = "parquet"

    parquet: list[str]
    column: str = "text"

    def lines(self, place: CorpusPlace) -> Iterator[str]:
        return skip_long(iter_parquet(place.expand(self.parquet), self.column), self.line_limit, f"{self.parquet}")

    def files(self, place: CorpusPlace) -> list[Path]:
        return place.expand(self.parquet)

    def named_paths(self, place: CorpusPlace) -> list[tuple[str, str]]:
        return [(f"parquet[{k}]", v) for k, v in enumerate(self.parquet)]


def iter_parquet(paths: list[Path], column: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for p in paths:
        try:
            pf = pq.ParquetFile(p)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            raise CorpusError(f"{p}: not a readable Parquet file ({exc})") from exc
        if column not in pf.schema_arrow.names:
            raise CorpusError(f"{p}: no column {column!r} (columns: {pf.schema_arrow.names}); set `column:`")
        kind = pf.schema_arrow.field(column).type
        value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
        if not (pa.types.is_string(value_kind) or pa.types.is_large_string(value_kind)):
            text_columns = [f.name for f in pf.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
            raise CorpusError(f"{p}: column {column!r} holds {kind}, not text (counting its str() would count "
                              f"digits and brackets); set `column:` to a string column ({text_columns or 'none here'})")
        for batch in pf.iter_batches(columns=[column], batch_size=8192):
            for text in batch.column(0).to_pylist():
                if text and (text := text.strip()):
                    yield text
