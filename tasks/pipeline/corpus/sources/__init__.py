"""Corpus kinds: the registry mapping a manifest's corpus key to the module that reads it.

Adding a kind is one module here (its pydantic spec, subclassing `CorpusBase` and keeping
the `CorpusSource` protocol) plus its line in `SOURCES`. The manifest's corpus union, the
error that lists the kinds, and every reader, fingerprint and card follow from this mapping.
"""

from __future__ import annotations

from tasks.pipeline.corpus.sources.base import CorpusBase, CorpusPlace, CorpusSource
from tasks.pipeline.corpus.sources.datasets import DatasetsCorpus
from tasks.pipeline.corpus.sources.jsonl import JsonlCorpus, JsonlSpec
from tasks.pipeline.corpus.sources.parquet import ParquetCorpus
from tasks.pipeline.corpus.sources.text import TextCorpus
from tasks.pipeline.corpus.sources.wordfreq import WordfreqCorpus, WordfreqSpec

# kind (the manifest key) -> its spec; the order is the order error messages list them in.
SOURCES: dict[str, type[CorpusBase]] = {
    cls.kind: cls for cls in (TextCorpus, ParquetCorpus, DatasetsCorpus, WordfreqCorpus, JsonlCorpus)
}

__all__ = ["SOURCES", "CorpusBase", "CorpusPlace", "CorpusSource", "DatasetsCorpus", "JsonlCorpus", "JsonlSpec",
           "ParquetCorpus", "TextCorpus", "WordfreqCorpus", "WordfreqSpec"]
