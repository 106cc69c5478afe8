"""Fuzzing manifests: anything a user can write gives a located validation error or a valid
manifest, never a traceback, and never a publish target outside the output folder."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.engine.errors import ManifestError
from tasks.pipeline.manifest import expand, load_manifest
from tasks.pipeline.publish.targets import LocalRegistry
from tests.subjects import MINIMAL_MANIFEST

BASE = MINIMAL_MANIFEST
KEYS = ["base_models", "languages", "subsets", "multiples", "selection", "lid", "publish", "work_dir", "output_dir",
        "id", "source", "local", "hub", "revision", "gguf", "license", "corpora", "text", "parquet", "datasets",
        "wordfreq", "lines", "heldout", "percent", "min_count", "coverage", "top_k", "target", "org",
        "name_template", "en", "fr", "xx", "zz-top", "../", "version"]
NASTY = ["../evil", "/etc/passwd", "{base}/../../x", "..", "{org}-{base}", "{langs}", "{multiple}", "{unknown}",
         "a b", "C:\\x", "~", "", "\x00", "😀", "{base}-{langs}-v{multiple}", "pkg://os/../../etc", "en", "fr", "de"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                    st.sampled_from(NASTY), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=12)


@st.composite
def mutated(draw):
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.lists(st.sampled_from(KEYS + [0, 1]), min_size=1, max_size=4))
        node = data
        for key in path[:-1]:
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
        last = path[-1]
        action = draw(st.sampled_from(["set", "delete"]))
        if isinstance(node, dict) and isinstance(last, str):
            if action == "delete":
                node.pop(last, None)
            else:
                node[last] = draw(values)
        elif isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = draw(values)
    if draw(st.booleans()):
        data["publish"] = {"name_template": draw(st.sampled_from(NASTY)), "org": draw(st.sampled_from(NASTY + ["ok"]))}
    return data


def _check(tmp: Path, text: str) -> None:
    (tmp / "model").mkdir(exist_ok=True)
    (tmp / "fr.txt").write_text("Bonjour\n")
    path = tmp / "manifest.yaml"
    path.write_text(text)
    try:
        m = load_manifest(path)
    except ManifestError as exc:
        msg = str(exc)
        assert str(path) in msg and ("invalid manifest" in msg or "YAML" in msg or "manifest" in msg)
        return
    registry = LocalRegistry(m.output_dir)
    for v in expand(m):
        target = registry.target(v)  # raises if it would leave the output folder
        assert m.output_dir.resolve() in target.parents


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_mutated_manifests_only_fail_with_located_errors(tmp_path, data):
    _check(tmp_path, yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_text_only_fails_with_located_errors(tmp_path, text):
    _check(tmp_path, text)
