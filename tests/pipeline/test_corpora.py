"""Every corpus kind a manifest can name, read from local data (no hub access)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tasks.pipeline.corpus.reader import LanguageCorpora, is_heldout, split_lines, wordfreq_sentences
from tasks.pipeline.corpus.sources import CorpusPlace
from tasks.engine.errors import CorpusError
from tasks.pipeline.manifest import DatasetsCorpus, ParquetCorpus, TextCorpus, WordfreqCorpus, load_manifest

LINES = [f"Phrase numéro {i} pour le corpus." for i in range(50)]


@pytest.fixture
def manifest(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "a.txt").write_text("\n".join(LINES[:25]) + "\n\n")
    (tmp_path / "b.txt").write_text("\n".join(LINES[25:]) + "\n")
    pq.write_table(pa.table({"text": LINES, "other": list(range(50))}), tmp_path / "fr.parquet")
    data = {"base_models": [{"id": "m", "source": {"local": "model"}, "license": "mit"}],
            "languages": {"fr": {"corpora": [{"text": ["*.txt"]}], "heldout": {"percent": 20}}},
            "subsets": [["fr"]], "multiples": [8], "lid": {"enabled": False}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    return load_manifest(tmp_path / "m.yaml")


def _place(m) -> CorpusPlace:
    return CorpusPlace("fr", m.base_dir)


def test_text_globs_parquet_and_caps(manifest):
    assert list(TextCorpus(text=["*.txt"]).read(_place(manifest))) == LINES
    assert list(ParquetCorpus(parquet=["fr.parquet"]).read(_place(manifest))) == LINES
    assert len(list(ParquetCorpus(parquet=["fr.parquet"], max_lines=7).read(_place(manifest)))) == 7
    with pytest.raises(CorpusError, match="no column 'texte'"):
        list(ParquetCorpus(parquet=["fr.parquet"], column="texte").read(_place(manifest)))


def test_datasets_local_file_and_saved_folder(manifest, tmp_path):
    import datasets

    assert list(DatasetsCorpus(datasets="fr.parquet").read(_place(manifest))) == LINES
    datasets.Dataset.from_dict({"text": LINES}).save_to_disk(str(tmp_path / "saved"))
    got = list(DatasetsCorpus(datasets="saved", streaming=False, max_lines=10).read(_place(manifest)))
    assert got == LINES[:10]
    with pytest.raises(CorpusError, match="datasets source 'no-such/dataset'"):
        list(DatasetsCorpus(datasets="no-such/dataset").read(_place(manifest)))


def test_wordfreq_is_deterministic_and_language_specific(manifest):
    a = list(WordfreqCorpus().read(_place(manifest)))
    assert a == wordfreq_sentences("fr", 20000, 5000, 0) and len(a) == 20000
    assert " les " in " ".join(a[:2000]) and a[:50] != wordfreq_sentences("de", 50, 5000, 0)
    with pytest.raises(CorpusError, match="no word list"):
        wordfreq_sentences("tlh", 5)


def test_train_and_heldout_split_is_a_stable_partition(manifest):
    train = [line for line, _ in split_lines(LanguageCorpora.of(manifest, "fr"), "train")]
    held = [line for line, _ in split_lines(LanguageCorpora.of(manifest, "fr"), "heldout")]
    assert sorted(train + held) == sorted(LINES) and not set(train) & set(held)
    assert held == [line for line in LINES if is_heldout(line, 20)] and 0 < len(held) < 25
