"""Hub faults on the loopback Hub-API server: 429 with Retry-After, 500s, a dropped
connection before and after a commit lands, a commit conflict — retried with backoff under
the concurrency limit, then published exactly once or recorded as failed, never stopping
the other variants. The token never leaks into logs, artifacts, cards or the catalog."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests import subjects
from tests.hub_server import Fault, HubServer

pytestmark = pytest.mark.slow
HF_TOKEN = "hf_RELIABILITY_secret_9f8e7d"


@pytest.fixture(autouse=True)
def _online_for_loopback(monkeypatch, prefect_harness):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the endpoint is 127.0.0.1


def test_hub_faults_are_retried_or_recorded(tmp_path, bases, caplog):
    from flows.publish_all import publish_all
    from prefect.client.orchestration import get_client

    with HubServer() as hub:
        doomed = "acme/toy-b-trimmed-en-fr-v8"
        # Two transient faults per recovering repo, within max_retries 3 whichever order the
        # commits come in (shared faults could all land on one variant and exhaust its retries).
        a1, a2, b1 = (f"/api/models/acme/toy-{v}/commit/" for v in ("a-trimmed-en-v8", "a-trimmed-en-fr-v8", "b-trimmed-en-v8"))
        hub.state.faults += [
            Fault(a1, status=429, times=1, retry_after="1"),
            Fault(a2, status=500, times=2),
            Fault(b1, drop_connection=True, times=1),  # dropped mid-upload: nothing landed
            Fault(a1, drop_connection=True, after_commit=True, times=1),  # landed, reply lost
            Fault(b1, status=409, times=1),  # a concurrent commit moved the branch
            Fault(f"/api/models/{doomed}/commit", status=409, times=1000),  # never recovers
        ]
        target = {"target": "hub", "org": "acme",
                  "hub": {"endpoint": hub.endpoint, "max_concurrency": 2, "max_retries": 3}}
        manifest = subjects.make_manifest(tmp_path, bases, publish=target, multiples=[8])
        with caplog.at_level("INFO"):
            summary = publish_all(manifest=str(manifest))
        assert list(summary["failed"]) == ["toy-b-en-fr-v8"], summary["failed"]
        assert "409" in summary["failed"]["toy-b-en-fr-v8"]
        assert sorted(summary["published"]) == ["toy-a-en-fr-v8", "toy-a-en-v8", "toy-b-en-v8"]
        for repo_id, repo in hub.state.repos.items():
            expected = 0 if repo_id == doomed else 1
            assert len(repo["commits"]) == expected, (repo_id, repo["commits"])  # exactly once
        assert hub.state.max_in_flight_commits <= 2
        assert all(f.times == 0 for f in hub.state.faults[:5]), "every transient fault was hit"

    catalog = {r["variant_id"]: r for r in pq.read_table(tmp_path / "published" / "catalog.parquet").to_pylist()}
    assert catalog["toy-b-en-fr-v8"]["status"] == "failed" and catalog["toy-a-en-v8"]["status"] == "published"

    # Secrets: nowhere in logs, Prefect artifacts, the catalog or the published files.
    assert HF_TOKEN not in caplog.text
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    assert artifacts and all(HF_TOKEN not in json.dumps(a.data, default=str) for a in artifacts)
    for path in tmp_path.rglob("*"):
        if path.is_file() and "prefect-home" not in str(path):
            assert HF_TOKEN.encode() not in path.read_bytes(), path
    for repo in hub.state.repos.values():
        assert all(HF_TOKEN.encode() not in content for content in repo["files"].values())
