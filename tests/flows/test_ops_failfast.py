"""Fail fast on mistakes: typo'd variant ids refused before Prefect starts (case-insensitive
suggestions); language codes normalised and checked against the LID model's labels."""

from __future__ import annotations

import copy
import time

import pytest
import yaml

from tasks.engine.errors import ManifestError
from tasks.pipeline.corpus.languages import lid_code, lid_model_labels, normalize_language
from tasks.pipeline.manifest import DEFAULT_LID_MODEL, expand, load_manifest
from tasks.pipeline.production.variant_ids import check_variant_ids, suggestions
from tests import subjects

IDS = [f"{b}-{langs}-v{m}" for b in ("all-MiniLM-L6-v2", "SmolLM2-135M-Instruct") for langs in ("en", "en-fr", "de") for m in (8, 64)]


def write(tmp_path, data):
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "fr.txt").write_text("Bonjour tout le monde\n")
    p = tmp_path / "manifest.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("code,want", [("fra", "fr"), ("FR", "fr"), ("deu", "de"), ("ger", "de"), ("pt-br", "pt_BR"),
                                       ("PT_BR", "pt_BR"), ("pt_BR", "pt_BR"), ("ast", "ast"), ("zh_CN", "zh_CN"), ("iw", "he")])
def test_normalize_language(code, want):
    assert normalize_language(code) == want


def test_codes_are_normalised_in_the_manifest(tmp_path):
    data = copy.deepcopy(subjects.MINIMAL_MANIFEST)
    data["languages"] = {"eng": data["languages"]["en"], "fra": data["languages"]["fr"], "pt-br": {"corpora": [{"wordfreq": {"lines": 5}}]}}
    data["subsets"] = [["eng"], ["ENG", "fra"], ["pt_br"]]
    m = load_manifest(write(tmp_path, data))
    assert sorted(m.spec.languages) == ["en", "fr", "pt_BR"]
    assert [v.id for v in expand(m) if v.multiple == 8] == ["m-en-v8", "m-en-fr-v8", "m-pt_BR-v8"]


def test_the_same_language_twice_is_one_clear_error(tmp_path):
    data = copy.deepcopy(subjects.MINIMAL_MANIFEST)
    data["languages"]["fra"] = data["languages"]["fr"]
    with pytest.raises(ManifestError, match="'fr' and 'fra' are the same language"):
        load_manifest(write(tmp_path, data))


def test_lid_labels_read_from_the_model_file():
    path = load_manifest(subjects.REPO / "manifests" / "default.yaml").resolve(DEFAULT_LID_MODEL)
    labels = lid_model_labels(path)
    assert len(labels) == 176 and {"en", "fr", "de", "pt", "no", "ast", "zh"} <= labels
    import fasttext

    fasttext.FastText.eprint = lambda *a, **k: None
    assert labels == {lab.removeprefix("__label__") for lab in fasttext.load_model(str(path)).get_labels()}
    assert lid_code("pt_BR") == "pt" and lid_code("nb") == "no"


def test_a_language_the_lid_model_cannot_recognise_fails_validation(tmp_path):
    data = copy.deepcopy(subjects.MINIMAL_MANIFEST)
    data["lid"] = {"enabled": True}
    data["languages"]["zul"] = {"corpora": [{"text": ["fr.txt"]}]}  # isiZulu: valid ISO 639, no lid.176 label
    data["languages"]["fra"] = data["languages"].pop("fr")
    data["subsets"] = [["en"], ["zul"], ["fra"]]
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, data))
    msg = str(info.value)
    assert "languages.zu: label 'zu' unknown" in msg and "lid: false" in msg
    assert "languages.fr" not in msg and "languages.en" not in msg  # fra is known once normalised; en is wordfreq (no LID)
    data["languages"]["zul"]["corpora"][0]["lid"] = False
    assert "zu" in load_manifest(write(tmp_path, data)).spec.languages  # the way out the message names


def test_suggestions_ignore_case():
    assert suggestions("smollm2-de-v64", IDS)[0] == "SmolLM2-135M-Instruct-de-v64"
    assert suggestions("SMOLLM2-135M-INSTRUCT-DE-V64", IDS) == ["SmolLM2-135M-Instruct-de-v64"]
    assert suggestions("all-minilm-de-v64", IDS)[0] == "all-MiniLM-L6-v2-de-v64"
    with pytest.raises(ManifestError, match="did you mean SmolLM2-135M-Instruct-de-v64"):
        check_variant_ids(["smollm2-de-v64"], IDS, "m.yaml")
    check_variant_ids(["SmolLM2-135M-Instruct-de-v64"], IDS, "m.yaml")


def test_cli_refuses_an_unknown_variant_before_prefect_starts(tmp_path, toy_model_session):
    bases = (toy_model_session, toy_model_session)
    manifest = subjects.make_manifest(tmp_path, bases, base_models=[{"id": "Toy-A", "source": {"local": str(toy_model_session)}, "license": "mit"}])
    start = time.monotonic()
    rc, out, err = subjects.run_cli(["build", "toy-a-en-V8", "--manifest", str(manifest)], tmp_path)
    took = time.monotonic() - start
    assert rc == 2, err
    assert "did you mean Toy-A-en-v8" in err
    assert "Traceback" not in err and "prefect" not in (out + err).lower()  # Prefect never started
    assert not (tmp_path / "work").exists()  # no base was materialised, nothing counted
    assert len(err.strip().splitlines()) <= 4, err
    print(f"refused in {took:.1f} s")


def test_an_unwritable_prefect_home_is_one_line_before_prefect_starts(tmp_path, toy_model_session):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where PREFECT_HOME's parent should be")
    bases = subjects.two_toy_bases(tmp_path / "bases", toy_model_session)
    manifest = subjects.make_manifest(tmp_path, bases)
    rc, out, err = subjects.run_cli(["publish-all", str(manifest)], tmp_path, env={"PREFECT_HOME": str(blocker / "home")})
    assert rc == 2, err
    assert err.startswith("error: Prefect's home") and "Set PREFECT_HOME to a writable folder" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
