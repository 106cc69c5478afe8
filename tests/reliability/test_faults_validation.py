"""Validation faults (issue 12, 'Validation'): each input below was accepted before and
failed later (or published something wrong); now it is refused up front, located."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from tasks.engine.errors import ManifestError, ModelFolderError
from tasks.pipeline.manifest import MAX_MULTIPLE, language_code_problem, load_manifest
from tests.subjects import MINIMAL_MANIFEST


def write(tmp_path: Path, data: dict | str) -> Path:
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "fr.txt").write_text("Bonjour tout le monde.\n")
    path = tmp_path / "manifest.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def error_of(tmp_path: Path, data: dict | str) -> str:
    with pytest.raises(ManifestError) as exc:
        load_manifest(write(tmp_path, data))
    return str(exc.value)


@pytest.mark.parametrize("multiple", [100_000, 1_000_000_000, 10**30])
def test_huge_multiples_are_refused(tmp_path, multiple):
    data = copy.deepcopy(MINIMAL_MANIFEST)
    data["multiples"] = [8, multiple]
    msg = error_of(tmp_path, data)
    assert "multiples[1]" in msg and str(MAX_MULTIPLE) in msg.replace(",", "")


@pytest.mark.parametrize("revision", ["HEAD", "refs/heads/main", "main", "abc123de", "v1.0~1", "a" * 16])
def test_moving_or_short_hub_revisions_are_refused(tmp_path, revision):
    data = copy.deepcopy(MINIMAL_MANIFEST)
    data["base_models"] = [{"id": "m", "source": {"hub": "org/model", "revision": revision}, "license": "mit"}]
    msg = error_of(tmp_path, data)
    assert "base_models[0].source.revision" in msg and "40" in msg


def test_full_commits_and_tags_are_accepted(tmp_path):
    data = copy.deepcopy(MINIMAL_MANIFEST)
    data["base_models"] = [{"id": "a", "source": {"hub": "org/a", "revision": "0123456789abcdef0123456789abcdef01234567"}, "license": "mit"},
                           {"id": "b", "source": {"hub": "org/b", "revision": "v1.2.0"}, "license": "mit"}]
    load_manifest(write(tmp_path, data))


def test_duplicate_yaml_keys_are_errors(tmp_path):
    text = yaml.safe_dump(MINIMAL_MANIFEST) + "multiples: [16]\n"
    msg = error_of(tmp_path, text)
    assert "duplicate key 'multiples'" in msg and "line" in msg
    nested = yaml.safe_dump(MINIMAL_MANIFEST).replace("lid:\n  enabled: false\n", "lid:\n  enabled: false\n  enabled: true\n")
    assert "duplicate key 'enabled'" in error_of(tmp_path, nested)


@pytest.mark.parametrize("code", ["und", "zxx", "qaa", "qtz", "mul"])
def test_non_language_codes_are_refused(tmp_path, code):
    data = copy.deepcopy(MINIMAL_MANIFEST)
    data["languages"][code] = data["languages"].pop("fr")
    data["subsets"] = [["en"], ["en", code]]
    msg = error_of(tmp_path, data)
    assert f"languages" in msg and repr(code) in msg


def test_codes_the_lid_model_cannot_label_are_refused(tmp_path):
    data = copy.deepcopy(MINIMAL_MANIFEST)
    data["lid"] = {"enabled": True}
    data["languages"]["haw"] = data["languages"].pop("fr")  # Hawaiian: lid.176 has no label for it
    data["subsets"] = [["en"], ["en", "haw"]]
    msg = error_of(tmp_path, data)
    assert "languages.haw" in msg and "has no such label" in msg and "lid: false" in msg
    data["languages"]["haw"]["corpora"][0]["lid"] = False  # without the filter the code is fine
    load_manifest(write(tmp_path, data))
    assert language_code_problem("fr", {"__label__fr"}) is None  # the reusable check


def test_symlinked_tokenizer_is_refused_before_it_is_read(tmp_path, toy_model):
    from tasks.pipeline.production.base_models import base_identity

    outside = tmp_path / "elsewhere.json"
    outside.write_text((toy_model / "tokenizer.json").read_text())
    (toy_model / "tokenizer.json").unlink()
    os.symlink(outside, toy_model / "tokenizer.json")
    opened = []
    real_open = open

    def spy(file, *a, **k):
        opened.append(str(file))
        return real_open(file, *a, **k)

    import builtins

    builtins.open, saved = spy, builtins.open
    try:
        with pytest.raises(ModelFolderError, match="symlink points outside"):
            base_identity(toy_model)
    finally:
        builtins.open = saved
    assert not [p for p in opened if p.endswith("tokenizer.json") or p == str(outside)]


@pytest.mark.slow
def test_a_multiple_that_would_not_trim_fails_naming_the_base(tmp_path, bases, prefect_harness):
    from flows.publish_all import publish_all

    vocab = json.loads((bases[0] / "config.json").read_text())["vocab_size"]
    manifest = __import__("tests.subjects", fromlist=["make_manifest"]).make_manifest(
        tmp_path, bases, subsets=[["en"]], multiples=[8, 2048], lid={"enabled": False},
        base_models=[{"id": "toy-a", "source": {"local": str(bases[0])}, "license": "mit"}])
    summary = publish_all(manifest=str(manifest))
    assert summary["published"] == ["toy-a-en-v8"]
    err = summary["failed"]["toy-a-en-v2048"]
    assert "toy-a" in err and "would not trim" in err and f"{vocab:,}" in err
    assert not (tmp_path / "published" / "trimworks" / "toy-a-trimmed-en-v2048").exists()
