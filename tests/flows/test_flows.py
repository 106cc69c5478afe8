"""The pipeline end to end on small subjects: publish-all, rerun, --force, one failing
variant among good ones, one-model regeneration, worker processes against threads, the Dask
runner, and the Hub target."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from tests import subjects
from tests.hub_server import Fault, HubServer

pytestmark = pytest.mark.slow
HF_TOKEN = "hf_TESTTOKEN_do_not_leak_4c1d"


@pytest.fixture(scope="module", autouse=True)
def _harness(prefect_harness):
    yield


@pytest.fixture(scope="module")
def bases(tmp_path_factory, toy_model_session):
    return subjects.two_toy_bases(tmp_path_factory.mktemp("bases"), toy_model_session)


make_manifest = subjects.make_manifest


def published_files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("model-vocab.safetensors")}


def test_publish_all_rerun_force_and_regenerate_one(tmp_path, bases):
    from flows.publish_all import build_variant, publish_all

    manifest = str(make_manifest(tmp_path, bases))
    summary = publish_all(manifest=manifest)
    assert len(summary["published"]) == 8 and not summary["failed"] and not summary["skipped"]
    # where the time went: thread seconds per build stage, summed over the run (and per variant on disk)
    stages = summary["stage_seconds"]
    assert set(stages) == {"select", "body", "rebuild", "write", "prove", "compare", "loss", "checks", "card", "publish"}, stages
    assert all(v >= 0 for v in stages.values()) and stages["write"] > 0 and stages["prove"] > 0
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        progress = [a for a in client.read_artifacts() if a.type == "progress"]
    assert any((a.description or "").startswith("counting en") and a.data == 100.0 for a in progress)
    assert any((a.description or "").startswith("variants built of 8") and a.data == 100.0 for a in progress)

    out = tmp_path / "published"
    folder = out / "trimworks" / "toy-a-trimmed-en-fr-v64"
    for name in ("README.md", "config.json", "tokenizer.json", "model.safetensors.index.json", "model-vocab.safetensors", "evaluation.json", "coverage.png"):
        assert (folder / name).exists(), name
    on_disk = json.loads((folder / "evaluation.json").read_text())["stage_seconds"]
    assert set(on_disk) == set(stages) - {"publish"}  # written before publishing
    # One body per base, shared by hard links: every variant of toy-a holds the same body inodes.
    by_base: dict[str, set] = {}
    for index in (out / "trimworks").glob("*/model.safetensors.index.json"):
        files = set(json.loads(index.read_text())["weight_map"].values()) - {"model-vocab.safetensors"}
        by_base.setdefault(index.parent.name.split("-trimmed-")[0], set()).update(
            (index.parent / f).stat().st_ino for f in files)
    assert set(by_base) == {"toy-a", "toy-b"} and all(len(inodes) == 1 for inodes in by_base.values()), by_base
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "tests/toy-a" and meta["license"] == "mit"
    assert meta["library_name"] == "transformers" and {"trimmed", "vocabulary-trimming"} <= set(meta["tags"])
    assert meta["language"] == ["en", "fr"] and meta["pipeline_tag"] == "text-generation"
    assert meta["model-index"][0]["results"]
    assert "Fidelity on held-out text" in card and "fingerprint" in card and "AutoModelForCausalLM" in card

    record = json.loads((folder / "evaluation.json").read_text())
    assert record["status"] == "published" and record["vocab_after"] % 64 == 0
    assert all(f["identity"] == 1.0 for f in record["fidelity"].values())
    assert record["loss_before"] is not None and record["output_max_abs_diff"] <= 1e-5

    catalog = pq.read_table(out / "catalog.parquet").to_pylist()
    assert len(catalog) == 8 and {r["status"] for r in catalog} == {"published"}
    assert (out / "catalog.md").exists() and len(list((out / "plots").glob("*.png"))) == 2
    # Counts once per (tokenizer, language): the two bases share a tokenizer.
    assert len(list((tmp_path / "work" / "counts").rglob("*.parquet"))) == 2

    before = published_files(out)
    again = publish_all(manifest=manifest)
    assert len(again["skipped"]) == 8 and not again["published"]
    assert published_files(out) == before  # nothing rewritten
    assert len(pq.read_table(out / "catalog.parquet")) == 8

    forced = publish_all(manifest=manifest, force=True)
    assert len(forced["published"]) == 8
    after_force = published_files(out)
    assert all(after_force[k] != before[k] for k in before)

    one = build_variant(manifest=manifest, variant_id="toy-b-en-v8")
    assert one["published"] == ["toy-b-en-v8"]
    after_one = published_files(out)
    changed = [k for k in after_one if after_one[k] != after_force[k]]
    assert changed == ["trimworks/toy-b-trimmed-en-v8/model-vocab.safetensors"]


def test_one_failing_variant_does_not_stop_the_others(tmp_path, bases):
    from flows.cli import app

    bad = tmp_path / "de.txt"
    bad.write_bytes(b"Guten Tag, wie geht es Ihnen heute?\n\xff\xfe kaputt\n")
    manifest = make_manifest(tmp_path, bases, subsets=[["en"], ["de"]], multiples=[8],
                             languages={"en": {"corpora": [{"wordfreq": {"lines": 300}}]},
                                        "de": {"corpora": [{"text": [str(bad)]}]}})
    result = CliRunner().invoke(app, ["publish-all", str(manifest)])
    assert result.exit_code == 1, result.output
    assert "failed 2" in result.stdout and "published 2" in result.stdout
    assert "de.txt:2: invalid UTF-8" in result.stderr
    catalog = {r["variant_id"]: r for r in pq.read_table(tmp_path / "published" / "catalog.parquet").to_pylist()}
    assert catalog["toy-a-de-v8"]["status"] == "failed" and "de.txt:2" in catalog["toy-a-de-v8"]["error"]
    assert catalog["toy-a-en-v8"]["status"] == "published"
    assert not (tmp_path / "published" / "trimworks" / "toy-a-trimmed-de-v8").exists()
    assert "Failures" in (tmp_path / "published" / "catalog.md").read_text()


def published_weights(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.safetensors"))}


def test_worker_processes_publish_what_threads_publish(tmp_path, bases, monkeypatch):
    """Two worker processes give the same weights as threads, build in processes other than the
    flow's, report their task runs to the flow's server, and compare outputs once per base: the
    flow picks the carrier (the first variant of each base), not a process-global."""
    import flows.steps
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.publish_all import run_publish_all
    from flows.workers import threads_per_worker

    pids = tmp_path / "build-pids.txt"
    real = flows.steps.build_and_publish

    def build_and_publish(*args, **kwargs):  # travels with the task (pickled by value) into a worker
        import torch

        with open(pids, "a") as f:
            f.write(f"{os.getpid()} {torch.get_num_threads()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(flows.steps, "build_and_publish", build_and_publish)
    weights, checks, build_pids, torch_threads = {}, {}, {}, {}
    for executor in ("threads", "processes"):
        (tmp_path / executor).mkdir()
        manifest = make_manifest(tmp_path / executor, bases, verify={"outputs": "auto", "outputs_sample": 0.0})
        summary = run_publish_all(str(manifest), executor=executor, workers=2)
        assert len(summary["published"]) == 8 and not summary["failed"], summary["failed"]
        out = tmp_path / executor / "published"
        weights[executor] = published_weights(out)
        checks[executor] = {p.parent.name: json.loads(p.read_text())["output_check"]
                            for p in (out / "trimworks").glob("*/evaluation.json")}
        witness = [tuple(map(int, line.split())) for line in pids.read_text().splitlines()]
        build_pids[executor] = [pid for pid, _threads in witness]
        torch_threads[executor] = {threads for _pid, threads in witness}
        pids.unlink()

    assert weights["threads"] and weights["processes"] == weights["threads"]
    assert build_pids["threads"] == [os.getpid()] * 8  # the witness works: threads build here
    assert len(build_pids["processes"]) == 8 and os.getpid() not in build_pids["processes"]
    # Each worker's torch gets its share of the cores, not one thread per core each.
    assert torch_threads["processes"] == {int(os.environ.get("OMP_NUM_THREADS") or threads_per_worker(2))}
    assert checks["processes"] == checks["threads"]
    compared = {k: v for k, v in checks["processes"].items() if v.startswith("compared")}
    assert set(compared) == {"toy-a-trimmed-en-v8", "toy-b-trimmed-en-v8"}, checks["processes"]
    assert all("first variant of this base and architecture" in v for v in compared.values())
    for name, why in checks["processes"].items():
        if name not in compared:
            base = name.split("-trimmed-")[0]
            assert why == f"not compared: {base}-en-v8 carried this base's output comparison in this run", (name, why)

    with get_client(sync_client=True) as client:  # the workers' task runs reached the flow's server
        (run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    builds = [t for t in task_runs if t.name.startswith("build-")]
    assert len(builds) == 4 and all(t.state.is_completed() for t in builds), [(t.name, t.state) for t in builds]


def test_dask_runner_on_local_cluster(tmp_path, bases):
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    from flows.publish_all import run_publish_all

    manifest = make_manifest(tmp_path, bases, base_models=[{"id": "toy-a", "source": {"local": str(bases[0])}, "license": "mit"}])
    os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # worker processes report to the test server
    try:
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
            summary = run_publish_all(str(manifest), dask_address=cluster.scheduler_address)
    finally:
        del os.environ["PREFECT_API_URL"]
    assert len(summary["published"]) == 4 and not summary["failed"]


def test_hub_target_on_loopback_server(tmp_path, bases, monkeypatch, caplog):
    from flows.publish_all import publish_all

    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the endpoint is 127.0.0.1
    with HubServer() as hub:
        hub.state.faults += [Fault("/commit/", status=429, times=1, retry_after="0"),
                             Fault("/commit/", status=503, times=1)]
        target = {"target": "hub", "org": "acme", "hub": {"endpoint": hub.endpoint, "max_concurrency": 1}}
        manifest = make_manifest(tmp_path, bases, publish=target, multiples=[8])
        with caplog.at_level("INFO"):
            summary = publish_all(manifest=str(manifest))
        assert len(summary["published"]) == 4 and not summary["failed"]
        assert set(hub.state.repos) == {"acme/toy-a-trimmed-en-v8", "acme/toy-a-trimmed-en-fr-v8",
                                        "acme/toy-b-trimmed-en-v8", "acme/toy-b-trimmed-en-fr-v8"}
        for repo in hub.state.repos.values():
            assert len(repo["commits"]) == 1  # one commit per variant, after the retried faults
            assert "fingerprint" in repo["commits"][0]["summary"]
            assert {"README.md", "model-vocab.safetensors", "model.safetensors.index.json", "tokenizer.json"} <= set(repo["files"])
        assert hub.state.max_in_flight_commits == 1  # the concurrency limit held
        api_calls = [r for r in hub.state.requests if r[1].startswith("/api/")]
        assert api_calls and all(r[2]["authorized"] for r in api_calls)  # every Hub API call carries the token
        # the large-file uploads go to the storage URLs the batch call handed out, which never see it
        assert not any(r[2]["authorized"] for r in hub.state.requests if r[1].startswith("/lfs-upload/"))

        again = publish_all(manifest=str(manifest))  # remote fingerprints match: nothing to do
        assert len(again["skipped"]) == 4
        assert all(len(r["commits"]) == 1 for r in hub.state.repos.values())

    # The token never appears in logs, cards, records, artifacts or the catalog.
    assert HF_TOKEN not in caplog.text
    for path in (tmp_path / "published").rglob("*"):
        if path.is_file():
            assert HF_TOKEN.encode() not in path.read_bytes(), path
    for repo in hub.state.repos.values():
        for name, content in repo["files"].items():
            assert HF_TOKEN.encode() not in content, name
