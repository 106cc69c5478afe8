"""Filesystem faults (issue 12), on real filesystems (tmpfs mounts). Before: with the output
on another filesystem, `--force` failed every variant with EXDEV; a full output disk left
partial `.incoming-*` folders that no rerun removed, a raw `shutil.Error`, and a crash at the
catalog; a read-only output built every variant, then raised raw `OSError 30`s and a
traceback at the catalog."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests import subjects
from tests.reliability.fsutil import remount, tmpfs

pytestmark = pytest.mark.slow
TEMP_PREFIXES = (".incoming-", ".replaced-", ".staging", ".trimworks-probe")


def leftovers(published) -> list[str]:
    out = [p.name for p in published.iterdir() if p.name.startswith(TEMP_PREFIXES) and not (p.name == ".staging" and not any(p.iterdir()))]
    org = published / "trimworks"
    return out + ([p.name for p in org.iterdir() if p.name.startswith(".")] if org.exists() else [])


def assert_complete(published) -> None:
    for entry in (published / "trimworks").iterdir():
        for name in ("README.md", "model.safetensors.index.json", "model-vocab.safetensors", "tokenizer.json", "config.json", "evaluation.json"):
            assert (entry / name).is_file(), f"{entry} lacks {name}"


def test_force_swaps_on_the_output_filesystem_and_stale_temp_folders_go(tmp_path, bases, prefect_harness):
    from flows.publish_all import publish_all

    with tmpfs(tmp_path / "out") as out:
        published = out / "published"
        manifest = subjects.make_manifest(tmp_path, bases, output_dir=str(published), multiples=[8])
        first = publish_all(manifest=str(manifest))
        assert len(first["published"]) == 4 and not first["failed"], first["failed"]
        # What a killed run leaves: a partial incoming copy and a swapped-out old folder.
        for stale in (".incoming-toy-a-en-v8-deadbeef", ".replaced-toy-b-en-v8-0badf00d"):
            (published / stale).mkdir()
            (published / stale / "model.safetensors").write_bytes(b"partial")
        forced = publish_all(manifest=str(manifest), force=True)
        assert len(forced["published"]) == 4 and not forced["failed"], forced["failed"]  # before: EXDEV for each
        assert leftovers(published) == []
        assert_complete(published)


def test_full_output_disk_fails_cleanly_and_the_catalog_is_written(tmp_path, bases, prefect_harness):
    from flows.publish_all import publish_all

    with tmpfs(tmp_path / "out", size="900k") as out:
        published = out / "published"
        manifest = subjects.make_manifest(tmp_path, bases, output_dir=str(published), multiples=[8])
        summary = publish_all(manifest=str(manifest))
        assert summary["failed"], "the disk should have filled up"
        for err in summary["failed"].values():
            assert "disk full" in err and "Free space" in err and "nothing was left behind" in err, err
        assert leftovers(published) == []  # nothing partial, no .incoming-* left behind
        if (published / "trimworks").exists():
            assert_complete(published)
        catalog = summary["catalog"]
        assert catalog is not None  # in the output folder, or in work_dir when even that was full
        rows = {r["variant_id"]: r["status"] for r in pq.read_table(catalog).to_pylist()}
        assert len(rows) == 4 and {v for v, s in rows.items() if s == "failed"} == set(summary["failed"]), rows

        remount(out, "size=64m")  # space freed: a rerun finishes the job and leaves nothing stale
        rerun = publish_all(manifest=str(manifest))
        assert not rerun["failed"], rerun["failed"]
        assert leftovers(published) == []
        assert_complete(published)


def test_read_only_output_gives_one_early_message(tmp_path, bases, prefect_harness):
    from flows.publish_all import publish_all

    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        manifest = subjects.make_manifest(tmp_path, bases, output_dir=str(ro / "published"), multiples=[8])
        summary = publish_all(manifest=str(manifest))  # before: a traceback at the catalog
    errors = set(summary["failed"].values())
    assert len(summary["failed"]) == 4 and len(errors) == 1, errors  # one message, for every variant
    (err,) = errors
    assert "not writable" in err and "Read-only file system" in err and "nothing was built" in err
    assert not (tmp_path / "work" / "builds").exists() or not any((tmp_path / "work" / "builds").iterdir())
    assert summary["catalog"] == str(tmp_path / "work" / "catalog" / "catalog.parquet")
    assert json.dumps(pq.read_table(summary["catalog"]).to_pylist()).count("not writable") == 4
