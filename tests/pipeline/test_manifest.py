"""Manifest validation: every bad entry gets the file, the entry path and what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.engine.errors import ManifestError
from tasks.pipeline.manifest import load_manifest
from tests.subjects import MINIMAL_MANIFEST

REPO = Path(__file__).resolve().parents[2]

GOOD = MINIMAL_MANIFEST


def write(tmp_path, data) -> Path:
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "fr.txt").write_text("Bonjour\n")
    p = tmp_path / "manifest.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def errors_of(tmp_path, data) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(write(tmp_path, data))
    msg = str(info.value)
    assert str(tmp_path / "manifest.yaml") in msg
    return msg


def test_default_and_example_manifests_validate():
    for path in [REPO / "manifests" / "default.yaml", *sorted((REPO / "manifests" / "examples").glob("*.yaml"))]:
        m = load_manifest(path)
        assert m.spec.base_models


def test_default_manifest_expands_to_twelve_variants():
    from tasks.pipeline.manifest import expand

    variants = expand(load_manifest(REPO / "manifests" / "default.yaml"))
    assert len(variants) == 12
    assert len({v.fingerprint for v in variants}) == 12
    assert len({v.id for v in variants}) == 12


def test_good_manifest_and_stable_fingerprints(tmp_path):
    from tasks.pipeline.manifest import expand

    m = load_manifest(write(tmp_path, GOOD))
    a, b = expand(m), expand(load_manifest(tmp_path / "manifest.yaml"))
    assert [v.fingerprint for v in a] == [v.fingerprint for v in b]
    assert [v.id for v in a] == ["m-en-v8", "m-en-v64", "m-en-fr-v8", "m-en-fr-v64"]
    changed = expand(m, {"m": "another-revision"})
    assert all(x.fingerprint != y.fingerprint for x, y in zip(a, changed))


@pytest.mark.parametrize(
    "patch, where, what",
    [
        (lambda d: d["languages"]["fr"]["corpora"].append({"txt": ["x"]}), "languages.fr.corpora[1]", "exactly one of: text, parquet"),
        (lambda d: d["languages"]["fr"]["corpora"].append({"text": ["fr.txt"], "colour": 1}), "languages.fr.corpora[1].colour", "unknown key"),
        (lambda d: d.update(colour="blue"), "colour", "unknown key"),
        (lambda d: d["languages"].update(xx={"corpora": [{"wordfreq": {}}]}), "languages", "unknown language code 'xx'"),
        (lambda d: d.update(multiples=[8, 0]), "multiples[1]", "from 1 to 65,536"),
        (lambda d: d.update(multiples=["8"]), "multiples[0]", "integer"),
        (lambda d: d.update(multiples=[8.5]), "multiples[0]", "integer"),
        (lambda d: d["languages"]["fr"]["corpora"].append({"text": ["missing.txt"]}), "languages.fr.corpora[1].text[0]", "does not exist"),
        (lambda d: d.update(subsets=[["en"], ["en"]]), "duplicate variant id", "m-en-v8"),
        (lambda d: d.update(multiples=[8, 8]), "duplicate variant id", "m-en-v8"),
        (lambda d: d.update(subsets=[["de"]]), "subsets[0]", "without corpora"),
        (lambda d: d.update(publish={"name_template": "../{base}-{langs}"}), "publish.name_template", "outside the output folder"),
        (lambda d: d.update(publish={"name_template": "{base}/{langs}"}), "publish.name_template", "outside the output folder"),
        (lambda d: d.update(publish={"name_template": "{base}-{user}"}), "publish.name_template", "unknown fields"),
        (lambda d: d.update(publish={"name_template": "same"}), "name_template", "several variants"),
        (lambda d: d["base_models"][0].update(source={"hub": "org/x", "revision": "main"}), "base_models[0].source.revision", "pin a commit"),
        (lambda d: d["base_models"][0].update(source={"local": "nope"}), "base_models[0].source.local", "does not exist"),
        (lambda d: d["base_models"][0].update(id="../evil"), "base_models[0].id", "letters, digits"),
        (lambda d: d.update(selection={"top_k": 100, "min_count": 2}), "selection", "top_k"),
    ],
)
def test_bad_entries_are_located(tmp_path, patch, where, what):
    import copy

    data = copy.deepcopy(GOOD)
    patch(data)
    msg = errors_of(tmp_path, data)
    assert where in msg and what in msg, msg


def test_not_yaml_or_not_mapping(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("base_models: [\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(ManifestError, match="YAML mapping"):
        load_manifest(p)


def test_a_multiple_is_checked_by_one_rule_at_both_doors(tmp_path):
    """The manifest and `trimworks trim` (the engine) refuse a multiple with the same sentence."""
    import copy

    from tasks.engine.errors import SelectionError
    from tasks.engine.selection.policy import SelectionPolicy, select_kept_ids

    data = copy.deepcopy(MINIMAL_MANIFEST)
    data["multiples"] = [0]
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ManifestError) as from_manifest:
        load_manifest(tmp_path / "m.yaml", check_files=False)
    with pytest.raises(SelectionError) as from_engine:
        select_kept_ids(None, [], SelectionPolicy(), 0)  # the multiple is checked before anything else
    assert str(from_engine.value) in str(from_manifest.value)
    assert "from 1 to 65,536" in str(from_engine.value)


@pytest.mark.parametrize("where", ["org", "base id", "name_template"])
def test_a_trailing_newline_in_a_name_is_refused(tmp_path, where):
    """`re.match` with `$` lets "acme\\n" through, and a folder with a newline in its name follows."""
    import copy

    data = copy.deepcopy(MINIMAL_MANIFEST)
    if where == "org":
        data["publish"] = {"org": "acme\n"}
    elif where == "base id":
        data["base_models"][0]["id"] = "m\n"
    else:
        data["publish"] = {"name_template": "{base}-trimmed-{langs}-v{multiple}\n"}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ManifestError):
        load_manifest(tmp_path / "m.yaml", check_files=False)

