"""Hub faults (issue 12). Before: a server that echoes the Authorization header in its error
body put the token on stderr, in Prefect logs, artifacts and the catalog; an unreachable
endpoint was not retried (huggingface_hub raises its bundled `httpx2.ConnectError`, which is
no `httpx.TransportError`) and crashed the whole flow at the pre-build fingerprint check."""

from __future__ import annotations

import json
import socket
import threading

import pyarrow.parquet as pq
import pytest

from tasks.engine.runtime.redact import redact, register_secret
from tasks.pipeline.publish.targets import is_transport_error, with_retries
from tests import subjects
from tests.hub_server import Fault, HubServer

HF_TOKEN = "hf_FAULTS_echoed_secret_4b3a21"


@pytest.fixture
def loopback_only(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # loopback / .invalid only


@pytest.fixture
def online(monkeypatch, loopback_only, prefect_harness):
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)


def hub_manifest(tmp_path, bases, endpoint: str, retries: int = 1):
    return subjects.make_manifest(
        tmp_path, bases, multiples=[8], subsets=[["en"]], lid={"enabled": False},
        publish={"target": "hub", "org": "acme", "hub": {"endpoint": endpoint, "max_retries": retries}})


def test_redaction_rules():
    register_secret("s3cr3t-value-xyz")
    text = ("401: {'Authorization': 'Bearer hf_abcdefghijkl', 'user-agent': 'x'} token=abcdef123456 "
            "authorization: Bearer zzzzzzzz s3cr3t-value-xyz")
    out = redact(text)
    for leaked in ("hf_abcdefghijkl", "abcdef123456", "zzzzzzzz", "s3cr3t-value-xyz"):
        assert leaked not in out
    assert "user-agent" in out and "[REDACTED]" in out


@pytest.mark.slow
def test_a_server_echoing_headers_never_leaks_the_token(tmp_path, bases, online, caplog):
    from flows.publish_all import publish_all
    from prefect.client.orchestration import get_client

    with HubServer() as hub:
        hub.state.faults.append(Fault("/commit/", status=400, times=1000, echo_headers=True))
        manifest = hub_manifest(tmp_path, bases, hub.endpoint, retries=0)
        with caplog.at_level("INFO"):
            state = publish_all(manifest=str(manifest), return_state=True)
    summary, run_id = state.result(), state.state_details.flow_run_id
    assert set(summary["failed"]) == {"toy-a-en-v8", "toy-b-en-v8"}
    assert all("request headers were" in e and "[REDACTED]" in e for e in summary["failed"].values()), summary["failed"]
    assert HF_TOKEN not in caplog.text and HF_TOKEN not in json.dumps(summary)
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # log rows reach the API asynchronously: read them all
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:  # the shared test server holds other runs' rows too
        artifacts = client.read_artifacts()
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)
    assert artifacts and all(HF_TOKEN not in json.dumps(a.data, default=str) for a in artifacts)
    assert logs and all(HF_TOKEN not in log.message for log in logs)
    assert any("request headers were" in log.message for log in logs)  # the error itself is kept
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert HF_TOKEN.encode() not in path.read_bytes(), path
    catalog = pq.read_table(tmp_path / "published" / "catalog.parquet").to_pylist()
    assert all("[REDACTED]" in r["error"] for r in catalog)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_connection_refused_dns_and_timeouts_are_retried(loopback_only):
    import httpx
    from huggingface_hub import HfApi

    for endpoint in (f"http://127.0.0.1:{closed_port()}", "http://trimworks-no-such-host.invalid"):
        attempts = []

        def call():
            attempts.append(1)
            return HfApi(endpoint=endpoint, token="hf_x1234567").model_info("a/b")

        with pytest.raises(Exception) as exc:
            with_retries(call, "probe", max_retries=2, base_delay=0.01)
        assert is_transport_error(exc.value), repr(exc.value)
        assert len(attempts) == 3, (endpoint, exc.value)  # retried like a 5xx
    import httpx2

    for timeout in (httpx.ReadTimeout("slow"), httpx2.ConnectTimeout("slow"), TimeoutError("slow")):
        assert is_transport_error(timeout)
    assert not is_transport_error(ValueError("not a network error"))


@pytest.mark.slow
def test_an_unreachable_hub_fails_the_variants_not_the_run(tmp_path, bases, online):
    from flows.publish_all import publish_all

    manifest = hub_manifest(tmp_path, bases, f"http://127.0.0.1:{closed_port()}", retries=1)
    summary = publish_all(manifest=str(manifest))  # before: the flow crashed here
    assert set(summary["failed"]) == {"toy-a-en-v8", "toy-b-en-v8"}
    assert all("ConnectError" in e and "Connection refused" in e for e in summary["failed"].values()), summary["failed"]
    catalog = {r["variant_id"]: r for r in pq.read_table(tmp_path / "published" / "catalog.parquet").to_pylist()}
    assert {r["status"] for r in catalog.values()} == {"failed"}


def test_hub_bases_are_keyed_by_full_commit_checked_and_recorded(tmp_path, monkeypatch):
    """Tags resolve to a commit (recorded); two revisions sharing 16 characters get two
    folders; a downloaded LFS file whose sha256 differs from the Hub's is refused."""
    import hashlib
    from types import SimpleNamespace

    import huggingface_hub

    from tasks.engine.errors import ModelFolderError
    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.production.base_models import hub_commit_of, materialize_base

    weights = b"weights" * 100
    good = hashlib.sha256(weights).hexdigest()
    state = {"sha": good}
    c1, c2 = "1234567890abcdef" + "a" * 24, "1234567890abcdef" + "b" * 24

    def download(repo, revision, local_dir, allow_patterns, **hub):
        from pathlib import Path

        Path(local_dir).mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "config.json").write_text(json.dumps({"revision": revision}))
        (Path(local_dir) / "model.safetensors").write_bytes(weights)

    class Api:
        endpoint, token = "https://hub.invalid", None

        def list_repo_refs(self, repo):
            return SimpleNamespace(branches=[SimpleNamespace(name="main")],
                                   tags=[SimpleNamespace(name="v1.0", target_commit=c2)])

        def model_info(self, repo, revision, files_metadata):
            return SimpleNamespace(siblings=[SimpleNamespace(rfilename="model.safetensors", lfs=SimpleNamespace(sha256=state["sha"])),
                                             SimpleNamespace(rfilename="config.json", lfs=None)])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: Api())
    data = dict(subjects.MINIMAL_MANIFEST, work_dir=str(tmp_path / "work"), base_models=[
        {"id": "a", "source": {"hub": "org/m", "revision": c1}, "license": "mit"},
        {"id": "b", "source": {"hub": "org/m", "revision": "v1.0"}, "license": "mit"},
        {"id": "c", "source": {"hub": "org/m", "revision": "main"}, "license": "mit"}])
    (tmp_path / "m.yaml").write_text(json.dumps({**data, "base_models": data["base_models"][:2]}))
    m = load_manifest(tmp_path / "m.yaml", check_files=False)
    a, b = materialize_base(m, m.base("a")), materialize_base(m, m.base("b"))
    assert a != b and a.name.endswith(c1) and b.name.endswith(c2)
    assert hub_commit_of(b) == c2 and json.loads((b / "config.json").read_text())["revision"] == c2
    state["sha"] = "0" * 64  # the Hub says otherwise: the download is corrupt
    (tmp_path / "m2.yaml").write_text(json.dumps({**data, "work_dir": str(tmp_path / "work2"), "base_models": data["base_models"][:1]}))
    m2 = load_manifest(tmp_path / "m2.yaml", check_files=False)
    with pytest.raises(ModelFolderError, match="differs from the Hub"):
        materialize_base(m2, m2.base("a"))


@pytest.mark.parametrize("header,expected", [("86400", 0.05), ("inf", None), ("nan", None), ("-5", None),
                                             ("soon", None), ("0.01", 0.01)])
def test_retry_after_is_bounded_and_bad_values_fall_back_to_backoff(header, expected, monkeypatch):
    """A server asking for a day (or for inf, nan, a negative or a word) never stalls a run."""
    from tasks.pipeline.publish import targets

    class Response:
        status_code = 429
        headers = {"Retry-After": header}

    class Busy(Exception):
        response = Response()

    slept, real_sleep, here = [], targets.time.sleep, threading.get_ident()
    # time.sleep is the process's: another test's leftover thread (a server, an upload) sleeps too.
    monkeypatch.setattr(targets.time, "sleep", lambda s: slept.append(s) if threading.get_ident() == here else real_sleep(s))
    monkeypatch.setattr(targets.random, "random", lambda: 1.0)  # the backoff's jitter at its top: base_delay
    attempts = []

    def call():
        attempts.append(1)
        if len(attempts) == 1:
            raise Busy()
        return "ok"

    assert with_retries(call, "probe", max_retries=1, base_delay=0.02, max_delay=0.05) == "ok"
    assert slept == [expected if expected is not None else 0.02], slept
