"""Resources: a model bigger than the process's memory cap still trims (surgery streams),
and a full disk during surgery leaves nothing partial and says so clearly."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import save_file

from tasks.engine.counting.tokens import count_tokens, write_counts
from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint
from tests import subjects

pytestmark = pytest.mark.slow


def big_gpt2_folder(folder, toy_model, hidden=4096, layers=8):
    """GPT-2 key names and a real tokenizer, ~300 MB of weights: bigger than the cap below."""
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(toy_model / name, folder / name)
    cfg = json.loads((toy_model / "config.json").read_text())
    cfg.update(n_embd=hidden, n_layer=layers, n_inner=2048)  # shapes the load check expects (c_fc below)
    (folder / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    vocab = cfg["vocab_size"]
    save_file({"transformer.wte.weight": rng.standard_normal((vocab, hidden), dtype=np.float32)},
              str(folder / "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    layers_ = {f"transformer.h.{i}.mlp.c_fc.weight": rng.standard_normal((hidden, 2048), dtype=np.float32) for i in range(layers)}
    save_file(layers_, str(folder / "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    weight_map = {"transformer.wte.weight": "model-00001-of-00002.safetensors"} | {k: "model-00002-of-00002.safetensors" for k in layers_}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def test_model_bigger_than_memory_cap_still_trims(tmp_path, toy_model_session, toy_lines):
    base = big_gpt2_folder(tmp_path / "big", toy_model_session)
    model_bytes = sum(t.nbytes for t in LazyCheckpoint(base).tensors.values())
    counts = write_counts(count_tokens(base / "tokenizer.json", toy_lines[:300], "en"), base / "tokenizer.json", tmp_path / "en.parquet")
    cap_headroom = 160 << 20
    assert model_bytes > 1.5 * cap_headroom
    script = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from tasks.engine.selection.policy import SelectionPolicy
        from tasks.engine.trim import trim_model
        # Libraries are mapped before the cap: it bounds the trim's own memory. (The load check
        # after surgery builds the model on the meta device: no weights in memory.)
        import torch, transformers
        from transformers import GPT2LMHeadModel

        def vm_bytes():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024

        cap = vm_bytes() + {cap_headroom}
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        try:
            bytearray({model_bytes})  # the whole model would not fit under the cap
            raise SystemExit("cap too loose for this test")
        except MemoryError:
            pass
        result = trim_model(Path({str(base)!r}), [Path({str(counts)!r})], SelectionPolicy(), 64, Path({str(tmp_path / "out")!r}))
        print("kept", result.selection.size)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = int(proc.stdout.split("kept")[1])
    out = LazyCheckpoint(tmp_path / "out")
    assert out.tensors["transformer.wte.weight"].shape == (kept, 4096)
    assert out.tensors["transformer.h.3.mlp.c_fc.weight"].shape == (4096, 2048)


def test_disk_full_during_surgery_fails_the_variant_cleanly(tmp_path, bases, monkeypatch, prefect_harness):
    from flows.publish_all import publish_all

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tasks.engine.checkpoint.surgery.copy_bytes", disk_full)
    monkeypatch.setattr("tasks.engine.checkpoint.surgery.copy_and_remember", disk_full)  # the pipeline's copy (digests for the proof)
    monkeypatch.setattr("tasks.engine.checkpoint.body.copy_bytes", disk_full)  # the shared body's shards
    monkeypatch.setattr("tasks.engine.checkpoint.body.copy_and_remember", disk_full)
    manifest = subjects.make_manifest(tmp_path, bases, subsets=[["en"]], multiples=[8])
    summary = publish_all(manifest=str(manifest))
    assert set(summary["failed"]) == {"toy-a-en-v8", "toy-b-en-v8"}
    for error in summary["failed"].values():
        assert "disk full" in error and "nothing was left behind" in error and "Free space" in error
    assert not (tmp_path / "published" / "trimworks").exists()
    for folder in (tmp_path / "work" / "builds", tmp_path / "work" / "bodies", tmp_path / "published" / ".bodies"):
        left = [p for p in folder.iterdir() if p.suffix != ".lock"] if folder.exists() else []
        assert not left, left  # no staging, no half-written body (lock files are the store's own)
