"""Publishing to the Hub the way the Hub takes files: `*.safetensors` through the LFS batch API
(upload, verify), on the loopback server. What the second and later variants of a base send:
with a store that deduplicates across repos (the Hub's content-addressed storage) only their
vocab shard, since the body file is the same bytes in every repo; with per-repo LFS, the body
again. LFS faults are retried, and a republished variant loses the files it no longer has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import subjects
from tests.hub_server import Fault, HubServer

HF_TOKEN = "hf_test_lfs_token_0123456789"


def _publish(tmp_path: Path, bases, hub: HubServer, monkeypatch) -> dict:
    import huggingface_hub.constants

    from flows.publish_all import publish_all

    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the endpoint is 127.0.0.1
    # The loopback server speaks Git LFS, not Xet (the chunk store the Hub uses when hf_xet is
    # installed, which deduplicates the same way the global scope here does).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    a, _ = bases
    target = {"target": "hub", "org": "acme", "hub": {"endpoint": hub.endpoint, "max_concurrency": 1}}
    manifest = subjects.make_manifest(tmp_path, bases, base_models=[{"id": "toy-a", "source": {"local": str(a)}, "license": "mit"}],
                                      publish=target, multiples=[8, 64])
    summary = publish_all(manifest=str(manifest))
    assert len(summary["published"]) == 4 and not summary["failed"], summary["failed"]
    return summary


def _body_and_vocab(hub: HubServer, repo: str) -> tuple[bytes, bytes]:
    files = hub.state.repos[repo]["files"]
    index = json.loads(files["model.safetensors.index.json"])
    body = sorted(set(index["weight_map"].values()) - {"model-vocab.safetensors"})
    return b"".join(files[f] for f in body), files["model-vocab.safetensors"]


@pytest.mark.parametrize("scope", ["global", "repo"])
def test_later_variants_of_a_base_send_only_their_rows(scope, tmp_path, bases, monkeypatch, prefect_harness):
    with HubServer() as hub:
        hub.state.lfs_scope = scope
        hub.state.faults += [Fault("/lfs-upload/", status=500, times=1), Fault("/lfs-verify/", status=503, times=1)]
        _publish(tmp_path, bases, hub, monkeypatch)
        repos = sorted(hub.state.repos)
        bodies = {repo: _body_and_vocab(hub, repo) for repo in repos}
        assert len({b for b, _ in bodies.values()}) == 1  # the same body bytes in every repo of the base
        sent = {repo: hub.state.uploaded_bytes(repo) for repo in repos}
        body_bytes = len(next(iter(bodies.values()))[0])
        first, *later = [r for r in dict.fromkeys(r for r, _, _ in hub.state.lfs_uploads)]
        for repo in repos:  # every safetensors file went through LFS, none inline
            assert all(not f.endswith(".safetensors") or f in {p for p in hub.state.repos[repo]["files"]}
                       for f in hub.state.repos[repo]["files"])
        print(f"\nLFS scope {scope}: bytes sent per repo {sent}, body {body_bytes}")
        if scope == "global":
            assert sum(1 for r, _, n in hub.state.lfs_uploads if n == body_bytes) == 1  # the body once, for 4 repos
            for repo in later:
                assert sent[repo] < sent[first] - body_bytes // 2  # its rows and small files, not the body
        else:
            assert sum(1 for r, _, n in hub.state.lfs_uploads if n == body_bytes) == 4  # plain per-repo LFS: each time
        puts = [p for m, p, _ in hub.state.requests if m == "PUT"]
        assert len(puts) == len(hub.state.lfs_uploads) + 1  # one failed upload, retried


def test_republishing_removes_files_the_variant_no_longer_has(tmp_path, bases, monkeypatch, prefect_harness):
    with HubServer() as hub:
        _publish(tmp_path, bases, hub, monkeypatch)
        repo = sorted(hub.state.repos)[0]
        hub.state.repos[repo]["files"]["pytorch_model.bin"] = b"old pickled weights"  # what an older version left
        from flows.publish_all import publish_all

        import yaml

        manifest = tmp_path / "manifest.yaml"  # a new version of every variant: another selection
        data = yaml.safe_load(manifest.read_text())
        data["selection"] = {"min_count": 3}
        manifest.write_text(yaml.safe_dump(data))
        summary = publish_all(manifest=str(manifest))
        assert not summary["failed"] and len(summary["published"]) == 4
        assert len(hub.state.repos[repo]["commits"]) == 2
        assert "pytorch_model.bin" not in hub.state.repos[repo]["files"]
        assert "model-vocab.safetensors" in hub.state.repos[repo]["files"]


def test_a_hub_repo_of_another_manifest_or_a_user_is_never_committed_to(tmp_path, bases, monkeypatch, prefect_harness):
    """Ownership on the Hub as in a local registry: a second manifest publishing the same repo
    names, and a repo a user filled, are refused with one line each; nothing is committed."""
    from flows.publish_all import publish_all

    (tmp_path / "first").mkdir()
    with HubServer() as hub:
        _publish(tmp_path / "first", bases, hub, monkeypatch)
        repo = sorted(hub.state.repos)[0]
        card = hub.state.repos[repo]["files"]["README.md"].decode()
        import re

        owner = re.search(r"^trimworks_owner: (\S+)$", card, re.M)
        assert owner and re.fullmatch(r"[0-9a-f]{16}", owner.group(1))  # a digest of the owner, not its local paths
        commits = {r: len(info["commits"]) for r, info in hub.state.repos.items()}
        second = tmp_path / "second"
        second.mkdir()
        a, _ = bases
        target = {"target": "hub", "org": "acme", "hub": {"endpoint": hub.endpoint, "max_concurrency": 1}}
        other = subjects.make_manifest(second, bases, base_models=[{"id": "toy-a", "source": {"local": str(a)}, "license": "mit"}],
                                       publish=target, multiples=[8, 64], selection={"min_count": 3})  # another version
        summary = publish_all(manifest=str(other))
        assert not summary["published"] and len(summary["failed"]) == 4
        assert all("was published by another manifest" in e and "nothing was committed" in e for e in summary["failed"].values())
        assert {r: len(info["commits"]) for r, info in hub.state.repos.items()} == commits
        # A repo a user filled before trimworks came: refused, left as it is.
        for r in list(hub.state.repos):
            hub.state.repos[r]["files"] = {"README.md": b"# my own model\n", "pytorch_model.bin": b"weights"}
        summary = publish_all(manifest=str(other))
        assert all("holds files trimworks did not publish" in e for e in summary["failed"].values()), summary["failed"]
        assert all(set(info["files"]) == {"README.md", "pytorch_model.bin"} for info in hub.state.repos.values())
