"""Code safety: never remote code, never unpickling, never following symlinks out of a
model folder — at the pipeline level, where one unsafe base must not stop the others."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests import subjects

pytestmark = pytest.mark.slow


def test_trust_remote_code_is_never_enabled():
    import ast

    calls = []
    for path in [p for d in ("tasks", "flows") for p in (subjects.REPO / d).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_pretrained":
                kw = {k.arg: k.value for k in node.keywords}
                calls.append((path.name, kw))
                value = kw.get("trust_remote_code")
                assert value is None or (isinstance(value, ast.Constant) and value.value is False), path
    # The one place that loads arbitrary model folders says so explicitly.
    assert any(name == "outputs.py" and isinstance(kw.get("trust_remote_code"), ast.Constant) for name, kw in calls)


def test_unsafe_bases_fail_alone(tmp_path, bases, toy_model_session, prefect_harness):
    from flows.publish_all import publish_all

    good, _ = bases
    symlinked = tmp_path / "symlinked"
    shutil.copytree(toy_model_session, symlinked)
    (tmp_path / "outside.txt").write_text("secret")
    (symlinked / "notes.txt").symlink_to(tmp_path / "outside.txt")
    remote = tmp_path / "remote-code"
    shutil.copytree(toy_model_session, remote)
    cfg = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "evil.Model"}}))
    pickled = tmp_path / "pickled"
    shutil.copytree(toy_model_session, pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()

    manifest = subjects.make_manifest(
        tmp_path, bases, subsets=[["en"]], multiples=[8],
        base_models=[{"id": name, "source": {"local": str(path)}, "license": "mit"}
                     for name, path in [("good", good), ("symlinked", symlinked), ("remote", remote), ("pickled", pickled)]],
    )
    summary = publish_all(manifest=str(manifest))
    assert summary["published"] == ["good-en-v8"]
    assert "symlink points outside" in summary["failed"]["symlinked-en-v8"]
    assert "never runs remote code" in summary["failed"]["remote-en-v8"]
    assert "refuses pickles" in summary["failed"]["pickled-en-v8"] and "trimworks convert" in summary["failed"]["pickled-en-v8"]
