"""Bench row 2, durability: what fsyncing a variant before it is published costs.

Surgery followed by the fsyncs the pipeline makes before a variant's folder is renamed into
the registry (every file, then the folders), against a plain buffered write of the same
bytes that is fsynced too — the physical limit of a durable write. Also reported: durable
surgery / surgery without fsync (the price of durability itself). Each side is a function
run in a fresh interpreter by import path (`bench.child`), like the other rows.

    python -m bench.durable BASE_DIR KEPT_IDS.npy [--reps 3]   # standalone
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from bench.measure import Stats, interleaved, ratios, run_child
from bench.report import WORK, fresh, row
from bench.surgery import surgery


def durable_surgery(base: str, kept: str, out: str) -> Callable[[], dict]:
    """Surgery, then every file and folder fsynced (what publishing now does)."""
    from tasks.engine.runtime.atomic import fsync_dir, fsync_tree

    plain = surgery(base, kept, out)

    def section() -> dict:
        figures = plain()
        fsync_tree(Path(out))
        fsync_dir(Path(out).parent)
        return figures

    return section


def bench_durable_surgery(base: Path, kept_path: Path, reps: int, label: str, work: Path = WORK) -> list[dict]:
    out = Path(work) / "durable-out"
    args = {"base": str(base), "kept": str(kept_path), "out": str(out)}
    fresh(out)
    nbytes = run_child("bench.surgery:surgery", **args).extra["bytes_after"]

    def side(target: str, **more):
        def run():
            fresh(out)
            return run_child(target, **args, **more)
        return run

    res = interleaved(reps, durable=side("bench.durable:durable_surgery"),
                      plain_fsynced=side("bench.surgery:plain_write", nbytes=nbytes, fsync=True),
                      surgery=side("bench.surgery:surgery"))
    fresh(out)
    io = ratios(res["durable"], res["plain_fsynced"])
    cost = ratios(res["durable"], res["surgery"])
    secs = {k: Stats.of([s.seconds for s in v]).__dict__ for k, v in res.items()}
    return [
        row(f"2. durable surgery (fsync before publish) / plain write + fsync of the same bytes, {label}", io,
            "<= 1.50x", io.median <= 1.5, seconds=secs, bytes_written=nbytes),
        row(f"2. durable surgery / surgery without fsync (cost of durability), {label}", cost, "report", None,
            seconds=secs),
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("base", type=Path)
    ap.add_argument("kept", type=Path)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    print(json.dumps(bench_durable_surgery(a.base, a.kept, a.reps, a.base.name), indent=2))
