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


def descendant_peaks(root: int | None = None) -> list[dict]:
    """VmHWM of every live process below `root` (default: this one): the temporary Prefect
    server a flow starts is a child, and a run's memory is the flow's plus the server's."""
    root = root or os.getpid()
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    below, frontier = [], [root]
    while frontier:
        kids = [pid for pid, ppid in parents.items() if ppid in frontier]
        below += kids
        frontier = kids
    out = []
    for pid in below:
        try:
            with open(f"/proc/{pid}/status") as fh:
                hwm = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM")), 0)
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out.append({"pid": pid, "cmd": cmd[:200], "peak": hwm})
    return out


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
