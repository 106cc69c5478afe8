"""Bench row 2, durability: what fsyncing a variant before it is published costs.

Surgery followed by the fsyncs the pipeline now makes before a variant's folder is renamed
into the registry (every file, then the folders) against a plain buffered write of the same
bytes that is fsynced too — the physical limit of a durable write. Also reported: durable
surgery / surgery without fsync (the price of durability itself). Self-contained so it can
be wired into bench/run.py (or its row-2 module) with one line:

    rows += bench_durable_surgery(xlmr, kept_path, reps, label, WORK)

    python -m bench.durable BASE_DIR KEPT_IDS.npy [--reps 3]   # standalone
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench.measure import Stats, interleaved, ratios, run_child

SETUP = """
import json, os, numpy as np
from pathlib import Path
from tasks.engine.atomic import fsync_dir, fsync_tree
from tasks.engine.model_folder import inspect_model_folder
from tasks.engine.surgery import trim_weights, write_configs
base = inspect_model_folder(Path({base!r}))
kept = np.load({kept!r})
out = Path({out!r})
"""
SURGERY = """
out.mkdir()
stats = trim_weights(base, out, kept)
write_configs(base, out, kept)
extra["bytes_after"] = stats.bytes_after
"""
DURABLE = SURGERY + """
fsync_tree(out)
fsync_dir(out.parent)
"""
PLAIN_FSYNCED = """
out.mkdir()
buf = memoryview(bytearray(16 << 20))
left = {nbytes}
with open(out / "blob", "wb") as fh:
    while left:
        n = min(len(buf), left)
        fh.write(buf[:n])
        left -= n
    fh.flush()
    os.fsync(fh.fileno())
fsync_dir(out)
fsync_dir(out.parent)
"""


def bench_durable_surgery(base: Path, kept_path: Path, reps: int, label: str, work: Path) -> list[dict]:
    out = Path(work) / "durable-out"
    setup = SETUP.format(base=str(base), kept=str(kept_path), out=str(out))

    def fresh():
        shutil.rmtree(out, ignore_errors=True)

    fresh()
    nbytes = run_child(setup, SURGERY).extra["bytes_after"]
    sides = {}
    for name, section in (("durable", DURABLE), ("plain_fsynced", PLAIN_FSYNCED.format(nbytes=nbytes)), ("surgery", SURGERY)):
        def side(section=section):
            fresh()
            return run_child(setup, section)
        sides[name] = side
    res = interleaved(reps, **sides)
    fresh()
    io = ratios(res["durable"], res["plain_fsynced"])
    cost = ratios(res["durable"], res["surgery"])
    secs = {k: Stats.of([s.seconds for s in v]).__dict__ for k, v in res.items()}
    return [
        {"row": f"2. durable surgery (fsync before publish) / plain write + fsync of the same bytes, {label}",
         "ratio": io.__dict__, "target": "<= 1.50x", "met": io.median <= 1.5, "seconds": secs, "bytes_written": nbytes},
        {"row": f"2. durable surgery / surgery without fsync (cost of durability), {label}",
         "ratio": cost.__dict__, "target": "report", "met": None, "seconds": secs},
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("base", type=Path)
    ap.add_argument("kept", type=Path)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".cache" / "work")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(json.dumps(bench_durable_surgery(args.base, args.kept, args.reps, args.base.name, args.work), indent=2))
