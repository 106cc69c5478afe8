"""Rows 2 and 3: trimworks' surgery against a plain write of the same bytes (the I/O limit)
and against the hand-written transformers way (load, index_select, save)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.measure import Stats, interleaved, ratios, run_child
from bench.report import WORK, fresh, row


def kept_ids(model: Path, text: Path, out: Path) -> Path:
    """~30 k ids an English selection keeps (top_k 30,016, multiple 64), computed once."""
    if not out.exists():
        from tasks.engine.counting.tokens import count_tokens
        from tasks.engine.selection.policy import SelectionPolicy
        from tasks.engine.trim import select_for_model

        counts = count_tokens(model / "tokenizer.json", text.read_text().splitlines()[:200_000], "en")
        np.save(out, select_for_model(model, [counts], SelectionPolicy(top_k=30_016), 64).kept_ids)
    return out


def _inputs(base: str, kept: str):
    from tasks.engine.checkpoint.model_folder import inspect_model_folder

    return inspect_model_folder(Path(base)), np.load(kept)


def surgery(base: str, kept: str, out: str) -> Callable[[], dict]:
    """trimworks: stream the kept rows of vocab-sized tensors, byte-copy the rest."""
    from tasks.engine.checkpoint.surgery import trim_weights, write_configs

    folder, kept_ids_ = _inputs(base, kept)

    def section() -> dict:
        Path(out).mkdir()
        stats = trim_weights(folder, Path(out), kept_ids_)
        write_configs(folder, Path(out), kept_ids_)
        return {"bytes_after": stats.bytes_after, "largest": stats.largest_tensor_bytes}

    return section


def plain_write(base: str, kept: str, out: str, nbytes: int, fsync: bool = False) -> Callable[[], dict]:
    """The I/O limit: write as many bytes as the surgery writes, from one reused buffer
    (`fsync`: then make them durable, the limit of a durable write)."""
    from tasks.engine.runtime.atomic import fsync_dir

    _inputs(base, kept)  # the same baseline as the surgery side

    def section() -> dict:
        Path(out).mkdir()
        buf = memoryview(bytearray(16 << 20))
        left = nbytes
        with open(Path(out) / "blob", "wb") as fh:
            while left:
                n = min(len(buf), left)
                fh.write(buf[:n])
                left -= n
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if fsync:
            fsync_dir(Path(out))
            fsync_dir(Path(out).parent)
        return {}

    return section


def handwritten(base: str, kept: str, out: str, auto: str) -> Callable[[], dict]:
    """What a user writes with transformers: from_pretrained, index_select, save_pretrained
    (importing torch and transformers is part of its time, as it is for a user)."""
    folder, kept_ids_ = _inputs(base, kept)

    def section() -> dict:
        import torch
        import transformers

        model = getattr(transformers, auto).from_pretrained(str(folder.path))
        idx = torch.as_tensor(kept_ids_)
        with torch.no_grad():
            emb = model.get_input_embeddings()
            model.set_input_embeddings(torch.nn.Embedding.from_pretrained(emb.weight.index_select(0, idx).clone(), freeze=False))
            head = model.get_output_embeddings()
            new_head = torch.nn.Linear(head.in_features, len(idx), bias=head.bias is not None)
            new_head.weight = model.get_input_embeddings().weight
            if head.bias is not None:
                new_head.bias = torch.nn.Parameter(head.bias.index_select(0, idx).clone())
                model.lm_head.bias = new_head.bias
            model.set_output_embeddings(new_head)
        model.config.vocab_size = len(idx)
        model.save_pretrained(str(out))
        return {}

    return section


def bench_surgery(base: Path, kept_path: Path, reps: int, label: str) -> list[dict]:
    out = WORK / "surgery-out"
    auto = "AutoModelForCausalLM" if "CausalLM" in json.loads((base / "config.json").read_text())["architectures"][0] \
        else "AutoModelForMaskedLM"
    args = {"base": str(base), "kept": str(kept_path), "out": str(out)}
    probe = run_child("bench.surgery:surgery", **args)
    fresh(out)
    nbytes, largest = probe.extra["bytes_after"], probe.extra["largest"]

    def side(name: str, **more):
        def run():
            fresh(out)
            return run_child(f"bench.surgery:{name}", **args, **more)
        return run

    res = interleaved(reps, surgery=side("surgery"), plain=side("plain_write", nbytes=nbytes),
                      hand=side("handwritten", auto=auto))
    fresh(out)
    io = ratios(res["surgery"], res["plain"])
    growth = Stats.of([s.growth_bytes / largest for s in res["surgery"]])
    speed = ratios(res["hand"], res["surgery"])
    rss = ratios(res["surgery"], res["hand"], key=lambda s: s.growth_bytes)
    secs = Stats.of([s.seconds for s in res["surgery"]]).__dict__
    return [
        row(f"2. surgery vs plain write of the same bytes (I/O limit), {label}", io, "<= 1.50x", io.median <= 1.5,
            surgery_seconds=secs, bytes_written=nbytes),
        row(f"2. surgery peak RSS above baseline / largest tensor, {label}", growth, "<= 1.25x", growth.median <= 1.25,
            largest_tensor_bytes=largest, peak_growth_bytes=[s.growth_bytes for s in res["surgery"]]),
        row(f"3. hand-written (from_pretrained, index_select, save_pretrained) time / trimworks, {label}", speed,
            ">= 3.00x (trimworks faster)", speed.median >= 3.0,
            handwritten_seconds=Stats.of([s.seconds for s in res["hand"]]).__dict__, surgery_seconds=secs),
        row(f"3. trimworks peak RSS / hand-written peak RSS (above baseline), {label}", rss, "<= 0.30x", rss.median <= 0.3,
            handwritten_growth_bytes=[s.growth_bytes for s in res["hand"]]),
    ]
