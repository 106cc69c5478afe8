"""One side of a benchmark comparison, in this fresh interpreter:

    python -m bench.child bench.module:function '{"arg": ...}'

The function does its setup and returns the section to time; setup (imports, inputs) is
the baseline that the section's peak RSS is measured above. Prints one RESULT_MARK line."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

from bench.measure import RESULT_MARK


def peak_rss_bytes() -> int:
    """VmHWM: this address space's peak resident set (not inherited across exec)."""
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith("VmHWM")).split()[1]) * 1024


def main(argv: list[str]) -> None:
    target, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    cpus = os.environ.get("BENCH_CPUS")
    if cpus:  # 1 core means 1 core
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    module, _, name = target.partition(":")
    section = getattr(importlib.import_module(module), name)(**kwargs)
    base = peak_rss_bytes()
    t = time.perf_counter()
    extra = section() or {}
    dt = time.perf_counter() - t
    print(RESULT_MARK + json.dumps({"seconds": dt, "peak": peak_rss_bytes(), "base": base, "extra": extra}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
