"""Surgery streams: peak memory tracks the largest tensor, not the model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
from safetensors.numpy import save_file

from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint


def _big_checkpoint(folder, n_layers=8, vocab=40_000, hidden=256):
    folder.mkdir()
    rng = np.random.default_rng(0)
    # ~41 MB embedding, 8 x ~41 MB other tensors split over two shards: ~370 MB in all.
    shard1 = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden), dtype=np.float32)}
    shard2 = {}
    for i in range(n_layers):
        # vocab + 1 columns: as big as the embedding, but not vocab-sized (the guard would refuse that)
        (shard1 if i < n_layers // 2 else shard2)[f"model.layers.{i}.w"] = rng.standard_normal((hidden, vocab + 1), dtype=np.float32)
    save_file(shard1, str(folder / "model-00001-of-00002.safetensors"), metadata={"format": "pt"})
    save_file(shard2, str(folder / "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    weight_map = {k: "model-00001-of-00002.safetensors" for k in shard1} | {k: "model-00002-of-00002.safetensors" for k in shard2}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": vocab}))
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_surgery_peak_memory_is_near_one_tensor(tmp_path):
    base = _big_checkpoint(tmp_path / "big")
    ckpt = LazyCheckpoint(base)
    total = sum(t.nbytes for t in ckpt.tensors.values())
    largest = max(t.nbytes for t in ckpt.tensors.values())
    script = textwrap.dedent(f"""
        import json, numpy as np
        from pathlib import Path
        from tasks.engine.checkpoint.model_folder import ModelFolder
        from tasks.engine.checkpoint.surgery import trim_weights
        base = ModelFolder(Path({str(base)!r}), json.loads(Path({str(base)!r}, "config.json").read_text()), Path("x"))
        kept = np.arange(0, 40_000, 3, dtype=np.int64)
        def hwm_kb():  # VmHWM belongs to this address space; ru_maxrss would inherit the parent's peak
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
        before = hwm_kb()
        out = Path({str(tmp_path / "out")!r}); out.mkdir()
        stats = trim_weights(base, out, kept)
        after = hwm_kb()
        print(json.dumps({{"before_kb": before, "after_kb": after, "params_after": stats.params_after}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = (res["after_kb"] - res["before_kb"]) * 1024
    # Read blocks (16 MiB) + the kept rows of the embedding; never the 352 MiB model.
    assert growth < 1.25 * largest + 32 * 2**20, (growth, largest, total)
    assert growth < total / 2
    print(f"surgery RSS growth {growth / 2**20:.0f} MiB; largest tensor {largest / 2**20:.0f} MiB; model {total / 2**20:.0f} MiB")
    out_ckpt = LazyCheckpoint(tmp_path / "out")
    assert out_ckpt.tensors["model.embed_tokens.weight"].shape == (len(range(0, 40_000, 3)), 256)
    # Non-vocab tensors are byte-identical.
    a = ckpt.load_numpy("model.layers.5.w")
    b = out_ckpt.load_numpy("model.layers.5.w")
    assert a.tobytes() == b.tobytes()
    emb_a = ckpt.load_numpy("model.embed_tokens.weight")
    emb_b = out_ckpt.load_numpy("model.embed_tokens.weight")
    assert emb_b.tobytes() == emb_a[::3].tobytes()


def test_scattered_rows_are_gathered_exactly(tmp_path):
    """Many runs of kept ids (the read-ahead path): the rows written are the base's, in order."""
    import io

    from tasks.engine.checkpoint.safetensors_io import SCATTERED_RUNS, row_runs, write_rows

    rng = np.random.default_rng(1)
    table = rng.standard_normal((3000, 12), dtype=np.float32)
    save_file({"model.embed_tokens.weight": table}, str(tmp_path / "model.safetensors"))
    info = LazyCheckpoint(tmp_path).tensors["model.embed_tokens.weight"]
    rows = np.sort(rng.choice(np.arange(5, 2990), size=900, replace=False))
    assert len(row_runs(rows)) > SCATTERED_RUNS
    out = io.BytesIO()
    write_rows(info, rows, out)
    assert np.array_equal(np.frombuffer(out.getvalue(), dtype=np.float32).reshape(-1, 12), table[rows])
