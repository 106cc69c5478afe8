"""The `trimworks` command line, as a user would run it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from flows.cli import app
from tasks.engine.counting.tokens import read_counts

runner = CliRunner()


def test_count_trim_verify(toy_model, toy_lines, tmp_path):
    text = tmp_path / "en.txt"
    text.write_text("\n".join(toy_lines[:100]))
    held = tmp_path / "heldout.txt"
    held.write_text("\n".join(toy_lines[1000:1200]))
    counts = tmp_path / "en.parquet"
    r = runner.invoke(app, ["count", str(toy_model), "--text", str(text), "-o", str(counts)])
    assert r.exit_code == 0, r.output
    assert "100 lines" in r.output and "counted from chunk counts" in r.output
    direct = tmp_path / "en-direct.parquet"
    r = runner.invoke(app, ["count", str(toy_model), "--text", str(text), "-o", str(direct), "--method", "direct"])
    assert r.exit_code == 0 and "counted directly" in r.output, r.output
    fast, slow = read_counts(counts), read_counts(direct)
    assert fast.provenance["method"] == "chunks" and slow.provenance["method"] == "direct"
    assert (fast.counts == slow.counts).all() and fast.lines == slow.lines == 100
    r = runner.invoke(app, ["count", str(toy_model), "--text", str(text), "-o", str(direct), "--method", "fast"])
    assert r.exit_code == 2 and "use chunks or direct" in r.output
    out = tmp_path / "trimmed"
    r = runner.invoke(app, ["trim", str(toy_model), "--counts", str(counts), "--multiple", "64", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "vocab" in r.output and "smaller" in r.output
    vocab_size = json.loads((out / "config.json").read_text())["vocab_size"]
    assert vocab_size % 64 == 0 and vocab_size < 1200
    r = runner.invoke(app, ["verify", str(toy_model), str(out), "--text", str(held), "--sample", "2", "--exact-only"])  # toy text
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["languages"][0]["identical_covered_lines"] > 0
    r = runner.invoke(app, ["trim", str(toy_model), "--counts", str(counts), "-o", str(out)])
    assert r.exit_code == 2
    assert "already exists" in r.output


def test_bad_model_folder_message(tmp_path):
    r = runner.invoke(app, ["count", str(tmp_path / "nope"), "--text", "x.txt", "-o", str(tmp_path / "c.parquet")])
    assert r.exit_code == 2
    assert "does not exist" in r.output


def test_count_a_dataset_split_and_column_as_its_text_counts(toy_model, toy_lines, tmp_path):
    """`count --dataset NAME --split --field`, as peers take a corpus: the same counts as the same lines in a file."""
    import datasets

    from tasks.engine.counting.tokens import read_counts

    lines = toy_lines[:150]
    saved = tmp_path / "ds"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": ["unused"]}),
                          "validation": datasets.Dataset.from_dict({"body": lines})}).save_to_disk(str(saved))
    text = tmp_path / "lines.txt"
    text.write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["count", str(toy_model), "--dataset", str(saved), "--split", "validation", "--field", "body",
                            "-o", str(tmp_path / "ds.parquet")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["count", str(toy_model), "--text", str(text), "-o", str(tmp_path / "txt.parquet")])
    assert r.exit_code == 0, r.output
    from_ds, from_text = read_counts(tmp_path / "ds.parquet"), read_counts(tmp_path / "txt.parquet")
    assert (from_ds.counts == from_text.counts).all() and from_ds.lines == 150
    assert "split validation, column body" in from_ds.corpus
    r = runner.invoke(app, ["count", str(toy_model), "-o", str(tmp_path / "none.parquet")])
    assert r.exit_code == 2 and "--text FILE (repeatable) or --dataset NAME" in r.output


def test_trim_push_to_hub_creates_a_private_repo_with_the_folder(toy_model, toy_lines, tmp_path, monkeypatch):
    """`trim --push-to-hub ORG/NAME --private`, as peers push: one commit on the loopback Hub."""
    import huggingface_hub.constants

    from tests.hub_server import HubServer

    token = "hf_PUSHTOKEN_not_in_output_77"
    text = tmp_path / "en.txt"
    text.write_text("\n".join(toy_lines[:100]))
    r = runner.invoke(app, ["count", str(toy_model), "--text", str(text), "-o", str(tmp_path / "en.parquet")])
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the endpoint is 127.0.0.1
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", token)
        r = runner.invoke(app, ["trim", str(toy_model), "--counts", str(tmp_path / "en.parquet"), "-o", str(tmp_path / "out"),
                                "--push-to-hub", "acme/toy-en", "--private"])
        assert r.exit_code == 0, r.output
        repo = hub.state.repos["acme/toy-en"]
        assert repo["private"] and len(repo["commits"]) == 1
        local = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
        assert set(repo["files"]) == local and "model.safetensors" in local
        assert token not in r.output
        r = runner.invoke(app, ["trim", str(toy_model), "--counts", str(tmp_path / "en.parquet"), "-o", str(tmp_path / "o2"),
                                "--push-to-hub", "not-a-repo"])
        assert r.exit_code == 2 and "give the repo as ORG/NAME" in r.output


def test_trim_and_count_a_hub_id_at_a_revision(toy_model, toy_lines, tmp_path, monkeypatch):
    """`count`/`trim ORG/NAME --revision REV` as peers take a model: the revision (tag, branch,
    commit) is resolved to a commit, downloaded through huggingface_hub and recorded."""
    import huggingface_hub.constants
    from huggingface_hub import HfApi

    from tests.hub_server import HubServer

    text = tmp_path / "en.txt"
    text.write_text("\n".join(toy_lines[:100]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the endpoint is 127.0.0.1
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        api = HfApi(endpoint=hub.endpoint, token="hf_x")
        api.create_repo("acme/toy-base")
        first = api.upload_folder(folder_path=str(toy_model), repo_id="acme/toy-base").oid
        api.create_tag("acme/toy-base", tag="v1", revision=first)
        later = api.upload_file(path_or_fileobj=b"{}", path_in_repo="extra.json", repo_id="acme/toy-base").oid
        assert later != first

        r = runner.invoke(app, ["count", "acme/toy-base", "--revision", "v1", "--text", str(text), "-o", str(tmp_path / "c.parquet")])
        assert r.exit_code == 0, r.output
        assert f"acme/toy-base@v1: commit {first}" in r.output
        assert read_counts(tmp_path / "c.parquet").provenance["model"] == {"hub": "acme/toy-base", "revision": "v1", "commit": first}
        assert any(m == "HEAD" and "/resolve/" + first in path for m, path, _ in hub.state.requests)  # downloaded at the commit

        for i, (rev, commit) in enumerate(((["--revision", "v1"], first), ([], later), (["--revision", first], first))):
            out = tmp_path / f"out-{i}"
            r = runner.invoke(app, ["trim", "acme/toy-base", *rev, "--counts", str(tmp_path / "c.parquet"), "-o", str(out)])
            assert r.exit_code == 0, r.output
            record = json.loads((out / "trimworks.json").read_text())
            assert record["base_model"] == f"acme/toy-base@{commit}"
            assert record["provenance"]["hub"]["commit"] == commit
            assert (out / "model.safetensors").is_file()

        r = runner.invoke(app, ["trim", "acme/toy-base", "--revision", "nope", "--counts", str(tmp_path / "c.parquet"),
                                "-o", str(tmp_path / "o3")])
        assert r.exit_code == 2 and "acme/toy-base@nope" in r.output and "--revision" in r.output, r.output
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
        r = runner.invoke(app, ["count", "acme/missing", "--text", str(text), "-o", str(tmp_path / "m.parquet")])
        assert r.exit_code == 2 and "acme/missing@main" in r.output and "check the id" in r.output, r.output
    r = runner.invoke(app, ["count", str(toy_model), "--revision", "v1", "--text", str(text), "-o", str(tmp_path / "x.parquet")])
    assert r.exit_code == 2 and "is not a Hub id (ORG/NAME); --revision is for one" in r.output
    r = runner.invoke(app, ["count", "no/such/thing", "--text", str(text), "-o", str(tmp_path / "x.parquet")])
    assert r.exit_code == 2 and "does not exist" in r.output
