"""`{datasets: name or local path, config, split, column, streaming}`: a Hugging Face
`datasets` source: a folder saved with `save_to_disk`, a local data file (parquet, json,
jsonl, csv, txt), or a Hub dataset name (streamed by default).

Only local files are part of the content key; a Hub dataset is named by its spec alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from tasks.engine.errors import CorpusError
from tasks.pipeline.corpus.sources.base import CorpusBase, CorpusPlace, skip_long


class DatasetsCorpus(CorpusBase):
    kind = "datasets"

    datasets: str = Field(description="local dataset folder/file or a hub dataset name")
    config: str | None = None
    split: str = "train"
    column: str = "text"
    streaming: bool = True

    def lines(self, place: CorpusPlace) -> Iterator[str]:
        return skip_long(self._rows(place), self.line_limit, self.datasets)

    def files(self, place: CorpusPlace) -> list[Path]:
        local = place.resolve(self.datasets)
        if local.is_file():
            return [local]
        if local.is_dir():
            return sorted(p for p in local.rglob("*") if p.is_file())
        return []

    def named_paths(self, place: CorpusPlace) -> list[tuple[str, str]]:
        # A name that looks like a path, or exists as one, must exist; else it is a Hub name.
        local = self.datasets.startswith((".", "/", "pkg://")) or place.resolve(self.datasets).exists()
        return [("datasets", self.datasets)] if local else []

    def _rows(self, place: CorpusPlace) -> Iterator[str]:
        import datasets

        local = place.resolve(self.datasets)
        try:
            if local.is_dir() and ((local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists()):
                ds = datasets.load_from_disk(str(local))
                if isinstance(ds, datasets.DatasetDict):
                    if self.split not in ds:
                        raise CorpusError(f"{local}: no split {self.split!r} (splits: {sorted(ds)}); set `split:`")
                    ds = ds[self.split]
                elif self.split != "train":
                    raise CorpusError(f"{local}: a saved Dataset has no splits, so split {self.split!r} cannot be "
                                      "honoured; drop `split:` or save a DatasetDict")
            elif local.exists():
                builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text"}.get(local.suffix)
                if builder is None:
                    raise CorpusError(f"{local}: not a data file trimworks reads (.parquet, .jsonl, .json, .csv, .txt) "
                                      "nor a folder saved with save_to_disk (dataset_info.json or dataset_dict.json)")
                # One data file is one split, "train": another `split` is an error naming the source.
                ds = datasets.load_dataset(builder, data_files={"train": str(local)}, split=self.split, streaming=self.streaming)
            else:
                ds = datasets.load_dataset(self.datasets, self.config, split=self.split, streaming=self.streaming)
        except CorpusError:
            raise
        except Exception as exc:  # noqa: BLE001 - datasets raises many types; the user needs the source
            raise CorpusError(f"datasets source {self.datasets!r} (config {self.config}, split {self.split}): {exc}") from exc
        for row in ds:
            text = row.get(self.column)
            if text is not None and not isinstance(text, str):
                raise CorpusError(f"datasets source {self.datasets!r}: column {self.column!r} holds "
                                  f"{type(text).__name__} values, not text; set `column:` to a text column")
            if text and (text := text.strip()):
                yield text
