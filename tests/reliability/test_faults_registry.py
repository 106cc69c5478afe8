"""One owner per published variant (issue 28). Before: with the work folder on another
filesystem, a second run sharing the registry cleared `published/.staging` at start-up and
the first run published variants holding only README.md, evaluation.json and coverage.png;
two manifests publishing the same variant names replaced each other's variants; a user's
folder at a variant's target was "missing" in `plan`, then deleted and replaced."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.pipeline.manifest import Variant
from tasks.pipeline.publish.targets import OWNER_SUFFIX, STAGING_DIR, LocalRegistry, files_damage
from tests import subjects
from tests.reliability.fsutil import tmpfs

VARIANT = "toy-en-v8"
FOLDER = Path("trimworks") / "toy-trimmed-en-v8"


def one_variant_manifest(root: Path, toy_model: Path, published: Path, **over) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return subjects.make_manifest(root, (toy_model, toy_model), subsets=[["en"]], multiples=[8], output_dir=str(published),
                                  base_models=[{"id": "toy", "source": {"local": str(toy_model)}, "license": "mit"}], **over)


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def a_variant(vid: str = VARIANT) -> Variant:
    return Variant(id=vid, base="toy", languages=("en",), multiple=8, repo_id=f"trimworks/{vid}", fingerprint="f" * 64)


@pytest.mark.slow
def test_two_manifests_never_replace_each_others_variants(tmp_path, toy_model, prefect_harness):
    from flows.publish_all import publish_all
    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.report.plan_report import CONFLICT, plan_report

    published = tmp_path / "published"
    first = one_variant_manifest(tmp_path / "a", toy_model, published)
    second = one_variant_manifest(tmp_path / "b", toy_model, published, selection={"min_count": 2})  # another fingerprint
    assert publish_all(manifest=str(first))["published"] == [VARIANT]
    before = tree_digest(published / FOLDER)
    owner = json.loads((published / FOLDER / "evaluation.json").read_text())["owner"]
    assert owner == {"manifest": str(first.resolve()), "work_dir": str((tmp_path / "a" / "work").resolve())}

    (status,) = plan_report(load_manifest(second), str(second)).statuses
    assert status.status == CONFLICT and str(first.resolve()) in status.detail and str(second.resolve()) in status.detail
    for force in (False, True):
        summary = publish_all(manifest=str(second), force=force)
        assert summary["published"] == [] and list(summary["failed"]) == [VARIANT], summary
        err = summary["failed"][VARIANT]
        assert "\n" not in err and str(first.resolve()) in err and str(second.resolve()) in err, err
        assert tree_digest(published / FOLDER) == before  # the first manifest's variant, untouched
    assert publish_all(manifest=str(first))["skipped"] == [VARIANT]  # and still its own, up to date


@pytest.mark.slow
def test_a_users_folder_at_a_target_is_a_conflict_and_never_deleted(tmp_path, toy_model, prefect_harness):
    from flows.publish_all import publish_all
    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.report.plan_report import CONFLICT, plan_report

    published = tmp_path / "published"
    manifest = one_variant_manifest(tmp_path, toy_model, published)
    mine = published / FOLDER
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own notes\n")
    (status,) = plan_report(load_manifest(manifest), str(manifest)).statuses
    assert status.status == CONFLICT and "a folder trimworks did not write" in status.detail, status
    for force in (False, True):
        summary = publish_all(manifest=str(manifest), force=force)
        assert list(summary["failed"]) == [VARIANT], summary
        assert "a folder trimworks did not write" in summary["failed"][VARIANT]
        assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
        assert (mine / "notes.txt").read_text() == "my own notes\n"


@pytest.mark.slow
def test_another_runs_start_up_leaves_a_live_runs_staging_alone(tmp_path, toy_model, prefect_harness, monkeypatch):
    """The work folder on another filesystem than the registry: builds are staged in the
    registry's `.staging`. A second run (its own work folder) starting meanwhile clears only
    what provably dead runs left there."""
    from flows.publish_all import publish_all
    from tasks.pipeline.production import build

    with tmpfs(tmp_path / "out") as out:
        published = out / "published"
        manifest = one_variant_manifest(tmp_path, toy_model, published)
        real_prove, cleared = build.prove_variant, []

        def prove_after_another_run_started(base_dir, staging, *args, **kwargs):
            assert Path(staging).is_relative_to(published / STAGING_DIR)  # staged in the registry
            cleared.extend(LocalRegistry(published).clean_stale(tmp_path / "other-work" / "locks"))
            return real_prove(base_dir, staging, *args, **kwargs)

        monkeypatch.setattr(build, "prove_variant", prove_after_another_run_started)
        summary = publish_all(manifest=str(manifest))
        assert summary["published"] == [VARIANT] and not summary["failed"], summary
        assert cleared == []
        record = json.loads((published / FOLDER / "evaluation.json").read_text())
        assert files_damage(published / FOLDER, record) is None
        assert (published / FOLDER / "model-vocab.safetensors").is_file()
        assert not any((published / STAGING_DIR).iterdir())  # its own staging went with it


def test_staging_is_cleared_only_once_its_owner_is_dead(tmp_path):
    registry = LocalRegistry(tmp_path / "published", {"manifest": "/a.yaml", "work_dir": "/a"})
    with registry.claim_staging(a_variant()) as mine:
        mine.mkdir()
        (mine / "model.safetensors").write_bytes(b"x" * 100)
        assert LocalRegistry(tmp_path / "published").clean_stale(tmp_path / "locks") == []  # alive: this process
        assert (mine / "model.safetensors").exists()
    assert not any((tmp_path / "published" / STAGING_DIR).iterdir())

    # A run killed mid-build (SIGKILL: no cleanup of its own) is provably dead: its lock went with it.
    code = ("import sys, time; from pathlib import Path; from tasks.pipeline.publish.targets import LocalRegistry;"
            "from tests.reliability.test_faults_registry import a_variant;"
            f"cm = LocalRegistry(Path({str(tmp_path / 'published')!r})).claim_staging(a_variant('toy-en-v64'));"
            "f = cm.__enter__(); f.mkdir(); (f / 'w').write_bytes(b'1'); print(f, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        theirs = Path(proc.stdout.readline().strip())
        assert theirs.is_dir() and (theirs.parent / f"{theirs.name}{OWNER_SUFFIX}").is_file()
        assert registry.clean_stale(tmp_path / "locks") == []  # alive in another process
        assert theirs.is_dir()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert registry.clean_stale(tmp_path / "locks") == [theirs]
    assert not any((tmp_path / "published" / STAGING_DIR).iterdir())  # folder, owner record and lock

    # Killed between its owner record and its folder: the records alone go too, once it is dead.
    staging = tmp_path / "published" / STAGING_DIR
    (staging / f"toy-en-v8.99999999-00000000{OWNER_SUFFIX}").write_text(
        json.dumps({"pid": 2**22 + 12345, "host": __import__("socket").gethostname()}))
    registry.clean_stale(tmp_path / "locks")
    assert not any(staging.iterdir())


def test_a_staging_claim_of_another_host_is_never_judged_here(tmp_path):
    staging = tmp_path / "published" / STAGING_DIR
    (staging / "toy-en-v8.elsewhere-1-00000000").mkdir(parents=True)
    (staging / f"toy-en-v8.elsewhere-1-00000000{OWNER_SUFFIX}").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert LocalRegistry(tmp_path / "published").clean_stale(tmp_path / "locks") == []
    assert (staging / "toy-en-v8.elsewhere-1-00000000").is_dir()
    legacy = staging / "toy-en-v64"  # an older trimworks' staging: no owner record, no lock
    legacy.mkdir()
    assert LocalRegistry(tmp_path / "published").clean_stale(tmp_path / "locks") == []
    old = time.time() - 2 * 86400
    os.utime(legacy, (old, old))
    assert LocalRegistry(tmp_path / "published").clean_stale(tmp_path / "locks") == [legacy]


def test_swap_folders_of_a_live_run_are_left_alone(tmp_path):
    """`.replaced-*` (the old variant during a swap) and `.incoming-*` name their maker: another
    run, whatever its work folder (its own variant locks are all free), removes them only once
    that process is gone."""
    from tasks.pipeline.publish.targets import host_tag, process_tag

    root = tmp_path / "published"
    live = root / f".replaced-{process_tag()}-0badf00d-toy-en-v8"
    dead = root / f".incoming-h{host_tag()}-{2**22 + 12345}-deadbeef-toy-en-v64"
    other_host = "000000" if host_tag() != "000000" else "111111"
    elsewhere = root / f".replaced-h{other_host}-1-0badf00d-toy-en-v8"
    legacy = root / ".incoming-toy-en-v8-deadbeef"  # an older trimworks': the variant-lock rule
    for p in (live, dead, elsewhere, legacy):
        p.mkdir(parents=True)
    assert sorted(LocalRegistry(root).clean_stale(tmp_path / "other-locks")) == sorted([dead, legacy])
    assert live.is_dir() and elsewhere.is_dir()
