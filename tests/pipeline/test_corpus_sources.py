"""The corpus-kind extension point (tasks/pipeline/corpus/sources/), proven by JSON Lines: a
`jsonl` corpus, plain or compressed, counts exactly what the same lines as a text corpus
count; its files are in the content key; its errors name file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml
import zstandard

from tasks.engine.counting.tokens import read_counts
from tasks.engine.errors import CorpusError, ManifestError
from tasks.pipeline.corpus.counts_cache import ensure_counts, expected_train_lines
from tasks.pipeline.corpus.identity import corpus_content_key, corpus_files
from tasks.pipeline.corpus.reader import LanguageCorpora
from tasks.pipeline.corpus.sources import SOURCES, CorpusPlace, CorpusSource, JsonlCorpus
from tasks.pipeline.evaluation.realtext import counting_corpus
from tasks.pipeline.manifest import WordfreqCorpus, load_manifest
from tests import subjects

# Quotes, backslashes, escapes and non-ASCII: what JSON encoding must give back unchanged.
ODD = ['Il a dit « non » puis "oui".', "C:\\chemin\\fichier — ok", "tab\tinside, émoji 🙂 and ZWJ 👩\u200d💻", "ünïcödé ½ ∞"]
LINES = subjects.wordfreq_sentences("fr", 300) + ODD


def _jsonl(lines: list[str]) -> bytes:
    rows = [json.dumps({"id": i, "text": line}, ensure_ascii=i % 2 == 0) for i, line in enumerate(lines)]
    return ("\n".join(rows[:10]) + "\n\n" + "\n".join(rows[10:]) + "\n").encode()  # a blank line is skipped


def _write(path: Path, lines: list[str]) -> Path:
    data = _jsonl(lines)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def _manifest(tmp: Path, languages: dict, **over) -> Path:
    (tmp / "model").mkdir(exist_ok=True)
    data = {"work_dir": str(tmp / "work"), "base_models": [{"id": "m", "source": {"local": "model"}, "license": "mit"}],
            "languages": languages, "subsets": [[code] for code in languages], "multiples": [8],
            "lid": {"enabled": False}} | over
    (tmp / "m.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    return tmp / "m.yaml"


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> Path:
    """A tiny byte-level BPE trained on the lines (what counting needs: a tokenizer.json)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(LINES, trainers.BpeTrainer(vocab_size=500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture
def files(tmp_path) -> Path:
    (tmp_path / "fr.txt").write_text("\n".join(LINES[:150]) + "\n\n" + "\n".join(LINES[150:]) + "\n", encoding="utf-8")
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "fr.jsonl", LINES)
    _write(tmp_path / "data" / "fr.jsonl.gz", LINES)
    _write(tmp_path / "data" / "fr.jsonl.zst", LINES)
    return tmp_path


def test_jsonl_plain_gz_and_zst_count_what_the_text_corpus_counts(files, tokenizer_json):
    """The real counting path (ensure_counts: held-out split, chunk counts, the cache) gives
    the same token counts for the same lines, whatever the container."""
    langs = {"fr": {"corpora": [{"text": ["fr.txt"]}]},
             "de": {"corpora": [{"jsonl": {"path": ["data/fr.jsonl"]}}]},
             "it": {"corpora": [{"jsonl": {"path": ["data/*.jsonl.gz"], "field": "text"}}]},
             "es": {"corpora": [{"jsonl": {"path": ["data/fr.jsonl.zst"]}}]}}
    m = load_manifest(_manifest(files, langs))
    assert isinstance(m.spec.languages["de"].corpora[0], JsonlCorpus)
    tok = tokenizer_json
    want = read_counts(ensure_counts(m, tok, "fr"))
    assert want.tokens > 1000
    for code in ("de", "it", "es"):
        got = read_counts(ensure_counts(m, tok, code))
        assert (got.counts == want.counts).all() and got.lines == want.lines, code
        assert got.lines < len(LINES)  # the held-out split was taken, as for text
    place = CorpusPlace("de", files)
    for name in ("fr.jsonl", "fr.jsonl.gz", "fr.jsonl.zst"):
        assert list(JsonlCorpus(jsonl={"path": [f"data/{name}"]}).read(place)) == LINES, name
    assert len(list(JsonlCorpus(jsonl={"path": ["data/*.jsonl*"]}, max_lines=5).read(place))) == 5


@pytest.mark.parametrize("name", ["fr.jsonl", "fr.jsonl.gz", "fr.jsonl.zst"])
def test_one_changed_line_changes_the_content_key(files, name):
    m = load_manifest(_manifest(files, {"fr": {"corpora": [{"jsonl": {"path": [f"data/{name}"]}}]}}))
    lc = LanguageCorpora.of(m, "fr")
    assert corpus_files(lc) == [files / "data" / name]
    before = corpus_content_key(m, "fr")
    assert corpus_content_key(m, "fr") == before  # stable
    _write(files / "data" / name, LINES[:100] + ["Une seule ligne a changé."] + LINES[101:])
    assert corpus_content_key(m, "fr") != before


@pytest.mark.parametrize(("row", "message"), [
    (b'{"text": "ok", ', r"bad\.jsonl:3: not valid JSON"),
    (b'{"body": "no text here"}', r"bad\.jsonl:3: no field 'text' \(fields: \['body'\]\); set `field:`"),
    (b'{"text": 42}', r"bad\.jsonl:3: field 'text' is int, not a string"),
    (b'{"text": null}', r"bad\.jsonl:3: field 'text' is null, not a string"),
    (b'["text", "in a list"]', r"bad\.jsonl:3: a JSON list, not an object"),
    (b'{"text": "caf\xe9"}', r"bad\.jsonl:3: invalid UTF-8"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "one"}\n{"text": "two"}\n' + row + b"\n")
    lines = JsonlCorpus(jsonl={"path": ["bad.jsonl"]}).read(CorpusPlace("fr", tmp_path))
    assert next(lines) == "one"  # streamed: the rows before the bad one are read
    with pytest.raises(CorpusError, match=message):
        list(lines)


@pytest.mark.parametrize("compress", [gzip.compress, lambda data: zstandard.ZstdCompressor().compress(data)], ids=["gz", "zst"])
def test_a_truncated_or_foreign_archive_is_an_error(tmp_path, compress):
    suffix = ".gz" if compress is gzip.compress else ".zst"
    whole = compress(_jsonl(LINES * 20))
    (tmp_path / f"cut.jsonl{suffix}").write_bytes(whole[: len(whole) // 2])
    (tmp_path / f"junk.jsonl{suffix}").write_bytes(b"not compressed at all\n" * 10)
    for name in ("cut", "junk"):
        with pytest.raises(CorpusError, match=rf"{name}\.jsonl\{suffix}: cannot decompress after line \d+"):
            list(JsonlCorpus(jsonl={"path": [f"{name}.jsonl{suffix}"]}).read(CorpusPlace("fr", tmp_path)))
    (tmp_path / f"two.jsonl{suffix}").write_bytes(whole + compress(_jsonl(["and one more frame"])))
    assert list(JsonlCorpus(jsonl={"path": [f"two.jsonl{suffix}"]}).read(CorpusPlace("fr", tmp_path))) == LINES * 20 + [
        "and one more frame"]  # concatenated members / frames are one stream


def test_another_field(tmp_path):
    (tmp_path / "body.jsonl").write_text('{"body": "  corps  ", "text": 1}\n{"body": ""}\n', encoding="utf-8")
    assert list(JsonlCorpus(jsonl={"path": ["body.jsonl"], "field": "body"}).read(CorpusPlace("fr", tmp_path))) == ["corps"]


def test_manifest_validates_jsonl_where_it_validates_every_kind(files):
    ok = {"fr": {"corpora": [{"jsonl": {"path": ["data/fr.jsonl"]}}]}}
    load_manifest(_manifest(files, ok))
    for corpus, where, what in [
        ({"jsonl": {"path": ["data/none.jsonl"]}}, "languages.fr.corpora[0].jsonl.path[0]", "does not exist"),
        ({"jsonl": {"path": ["data/*.jsonl.xz"]}}, "languages.fr.corpora[0].jsonl.path[0]", "no file matches"),
        ({"jsonl": {"path": ["data/fr.jsonl"], "colum": "x"}}, "languages.fr.corpora[0].jsonl.colum", "unknown key"),
        ({"jsonl": {"path": []}}, "languages.fr.corpora[0].jsonl.path", "at least 1 item"),
        ({"jsonl": {"path": ["data/fr.jsonl"]}, "text": ["fr.txt"]}, "languages.fr.corpora[0]", "exactly one of: text, parquet, datasets, wordfreq, jsonl"),
    ]:
        with pytest.raises(ManifestError) as err:
            load_manifest(_manifest(files, {"fr": {"corpora": [corpus]}}))
        assert f"{where}: " in str(err.value) and what in str(err.value), str(err.value)


def test_every_registered_kind_keeps_the_protocol():
    for kind, cls in SOURCES.items():
        assert cls.kind == kind
        spec = cls.model_validate({"jsonl": {"path": ["x"]}} if kind == "jsonl" else {kind: ["x"]} if kind in ("text", "parquet")
                                  else {kind: "x"} if kind == "datasets" else {})
        assert isinstance(spec, CorpusSource), kind
        assert isinstance(spec.describe(), str) and spec.lid_applies == cls.lid_default
    assert [k for k, c in SOURCES.items() if not c.lid_default] == ["wordfreq"]  # language-pure: no LID by default


def test_size_and_card_come_from_the_kind(files):
    m = load_manifest(_manifest(files, {
        "fr": {"corpora": [{"jsonl": {"path": ["data/fr.jsonl"]}, "max_lines": 100}, {"wordfreq": {"lines": 50}}]},
        "de": {"corpora": [{"jsonl": {"path": ["data/fr.jsonl"]}}]},
        "it": {"corpora": [{"wordfreq": {"lines": 50}, "max_lines": 20}], "heldout": {"percent": 50}}}))
    assert expected_train_lines(m, "fr") == 90 + 45 and expected_train_lines(m, "de") is None
    assert expected_train_lines(m, "it") == 10  # max_lines caps what wordfreq generates
    label, synthetic = counting_corpus(m, ["de"])
    assert label == "de: jsonl (real text)" and not synthetic
    label, synthetic = counting_corpus(m, ["fr"])
    assert label == "fr: jsonl (real text) + wordfreq pseudo-text (sentences, top 5,000 words, synthetic)" and synthetic
    assert not WordfreqCorpus().lid_applies


def test_a_parquet_column_that_is_not_text_is_refused_naming_the_text_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.pipeline.corpus.sources import ParquetCorpus

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": [1, 2], "tags": [["a"], ["b"]], "text": ["one line", "two"]}), path)
    place = CorpusPlace(language="en", base_dir=tmp_path)
    for column in ("id", "tags"):
        with pytest.raises(CorpusError, match=rf"rows.parquet: column '{column}' holds .*not text.*\['text'\]"):
            list(ParquetCorpus(parquet=[str(path)], column=column).lines(place))
    assert list(ParquetCorpus(parquet=[str(path)], column="text").lines(place)) == ["one line", "two"]


def test_a_local_datasets_spec_honours_its_split(tmp_path):
    import datasets

    from tasks.pipeline.corpus.sources import DatasetsCorpus

    place = CorpusPlace(language="en", base_dir=tmp_path)
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["train line"]}),
                          "validation": datasets.Dataset.from_dict({"text": ["validation line"]})}).save_to_disk(str(saved))
    assert list(DatasetsCorpus(datasets=str(saved), split="validation").lines(place)) == ["validation line"]
    with pytest.raises(CorpusError, match=r"no split 'test'"):
        list(DatasetsCorpus(datasets=str(saved), split="test").lines(place))
    single = tmp_path / "rows.jsonl"
    single.write_text("\n".join(json.dumps({"text": f"line {i}", "n": i}) for i in range(10)) + "\n")
    assert len(list(DatasetsCorpus(datasets=str(single)).lines(place))) == 10
    with pytest.raises(CorpusError, match=r"rows.jsonl.*split test.*Available splits: \['train'\]"):
        list(DatasetsCorpus(datasets=str(single), split="test").lines(place))  # one file is one split: train
    with pytest.raises(CorpusError, match=r"holds int values, not text"):
        list(DatasetsCorpus(datasets=str(single), column="n").lines(place))
