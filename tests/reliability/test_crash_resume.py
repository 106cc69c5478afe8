"""Kill a real run (SIGKILL) during counting, surgery and publishing; rerun; the registry
ends up byte-identical to a run that never crashed, each variant published exactly once,
and no partial folder is ever visible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.engine.runtime.failpoints import ENV, POINTS
from tests import subjects

pytestmark = pytest.mark.slow
SMALL = {"subsets": [["en"], ["en", "fr"]], "multiples": [8]}


def one_base_manifest(tmp: Path, bases) -> Path:
    a, _ = bases
    return subjects.make_manifest(tmp, bases, base_models=[{"id": "toy-a", "source": {"local": str(a)}, "license": "mit"}], **SMALL)


def weights_by_variant(published: Path) -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(published.rglob("model-vocab.safetensors"))}


def assert_registry_complete(published: Path) -> None:
    org = published / "trimworks"
    if not org.exists():
        return
    for entry in org.iterdir():
        assert not entry.name.startswith("."), f"temp folder visible in the registry: {entry}"
        for name in ("README.md", "model.safetensors.index.json", "model-vocab.safetensors", "tokenizer.json", "config.json", "evaluation.json"):
            assert (entry / name).is_file(), f"partial folder in the registry: {entry} lacks {name}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bases):
    tmp = tmp_path_factory.mktemp("reference")
    manifest = one_base_manifest(tmp, bases)
    rc, out, err = subjects.run_cli(["publish-all", str(manifest)], tmp)
    assert rc == 0, err[-3000:]
    hashes = weights_by_variant(tmp / "published")
    assert len(hashes) == 2
    return hashes


@pytest.mark.parametrize("point", POINTS)
def test_crash_then_rerun_gives_identical_registry(tmp_path, bases, reference, point):
    manifest = one_base_manifest(tmp_path, bases)
    rc, out, err = subjects.run_cli(["publish-all", str(manifest)], tmp_path, env={ENV: point})
    assert rc == -9, f"the run should have been killed at {point}: rc={rc}\n{err[-2000:]}"
    assert_registry_complete(tmp_path / "published")
    for table in (tmp_path / "work").rglob("*.parquet"):
        pq.read_table(table)  # no partial counts table is ever left behind
    if point == "counting":
        assert not list((tmp_path / "work").rglob("*.parquet"))
    if point in ("surgery", "publishing"):
        assert len(weights_by_variant(tmp_path / "published")) < 2

    rc, out, err = subjects.run_cli(["publish-all", str(manifest)], tmp_path)
    assert rc == 0, err[-3000:]
    assert_registry_complete(tmp_path / "published")
    assert weights_by_variant(tmp_path / "published") == reference  # byte-identical weights
    records = [json.loads(p.read_text()) for p in (tmp_path / "published").rglob("evaluation.json")]
    assert sorted(r["variant_id"] for r in records) == ["toy-a-en-fr-v8", "toy-a-en-v8"]  # exactly once each
    assert not [p for p in (tmp_path / "work" / "builds").iterdir() if not p.name.startswith(".") or "tmp" in p.name]


def test_two_concurrent_runs_publish_each_variant_once(tmp_path, bases):
    import concurrent.futures as cf

    manifest = one_base_manifest(tmp_path, bases)
    with cf.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: subjects.run_cli(["publish-all", str(manifest)], tmp_path), range(2)))
    for rc, out, err in runs:
        assert rc == 0, err[-3000:]
    published = [int(out.split("published ")[1].split(",")[0]) for _, out, _ in runs]
    assert sum(published) == 2, [out for _, out, _ in runs]  # each variant built by exactly one run
    assert_registry_complete(tmp_path / "published")
    tables = list((tmp_path / "work" / "counts").rglob("*.parquet"))
    assert len(tables) == 2 and all(pq.read_table(t).num_rows > 0 for t in tables)
