"""`license:` is a known id (issue 28). Before: any string was taken and written into every
card's metadata (`[<script>…](https://…)` included)."""

from __future__ import annotations

import copy

import pytest

from tasks.pipeline.manifest import load_manifest
from tests.reliability.test_faults_validation import error_of, write
from tests.subjects import MINIMAL_MANIFEST


def with_license(**fields) -> dict:
    data = copy.deepcopy(MINIMAL_MANIFEST)
    data["base_models"] = [{**data["base_models"][0], **fields}]
    return data


@pytest.mark.parametrize("value", ["[<script>x</script>](https://e.x)", "Apache 2", "proprietary", "", "mit\n"])
def test_an_unknown_license_is_a_validation_error_naming_the_entry(tmp_path, value):
    msg = error_of(tmp_path, with_license(license=value))
    assert "base_models[0].license" in msg and "unknown license" in msg, msg


def test_close_ids_are_suggested(tmp_path):
    assert "apache-2.0" in error_of(tmp_path, with_license(license="apache-2"))


@pytest.mark.parametrize("value, stored", [("apache-2.0", "apache-2.0"), ("MIT", "mit"), ("Apache-2.0", "apache-2.0"),
                                           ("llama3", "llama3"), ("gemma", "gemma"), ("cc-by-sa-4.0", "cc-by-sa-4.0")])
def test_hub_and_spdx_ids_are_accepted_as_the_hub_spells_them(tmp_path, value, stored):
    assert load_manifest(write(tmp_path, with_license(license=value))).spec.base_models[0].license == stored


def test_other_needs_a_name(tmp_path):
    assert "license_name" in error_of(tmp_path, with_license(license="other"))
    m = load_manifest(write(tmp_path, with_license(license="other", license_name="acme-model-license",
                                                   license_link="https://example.com/LICENSE")))
    assert m.spec.base_models[0].license_name == "acme-model-license"
    assert "license: other" in error_of(tmp_path, with_license(license="mit", license_name="acme"))


def test_other_reaches_the_card_metadata():
    from tasks.pipeline.report.card import render_card
    from tasks.pipeline.report.record import VariantRecord

    rec = VariantRecord(variant_id="m-en-v8", base="m", languages=["en"], multiple=8, repo_id="o/m-en-v8",
                        fingerprint="f" * 64, status="published")
    card = render_card(rec, "m", "m", "other", "gpt2", True, "{}", [], license_name="acme-model-license",
                       license_link="https://example.com/LICENSE")
    head = str(card).split("---")[1]
    assert "license: other" in head and "license_name: acme-model-license" in head
    assert "license_link: https://example.com/LICENSE" in head
