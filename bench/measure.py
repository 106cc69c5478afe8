"""Measuring in child processes: wall time of a section and its peak RSS above baseline.

Each measurement runs in a fresh interpreter, so peaks are not inherited (ru_maxrss would
carry the parent's across exec; VmHWM belongs to the new address space) and caches do not
leak between the sides of a comparison.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

CHILD_PRELUDE = """
import json, time, sys
def _hwm():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024
"""


@dataclass
class Sample:
    seconds: float
    peak_bytes: int
    baseline_bytes: int
    extra: dict = field(default_factory=dict)

    @property
    def growth_bytes(self) -> int:
        return self.peak_bytes - self.baseline_bytes


def run_child(setup: str, section: str, env: dict | None = None, timeout: int = 1800) -> Sample:
    """Run `setup` (imports; counted as baseline), then time `section`; `section` may set `extra`."""
    code = CHILD_PRELUDE + textwrap.dedent(setup) + textwrap.dedent("""
        extra = {}
        _base = _hwm()
        _t = time.perf_counter()
    """) + textwrap.dedent(section) + textwrap.dedent("""
        _dt = time.perf_counter() - _t
        print("@@" + json.dumps({"seconds": _dt, "peak": _hwm(), "base": _base, "extra": extra}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-4000:]}")
    line = next(l for l in proc.stdout.splitlines()[::-1] if l.startswith("@@"))
    d = json.loads(line[2:])
    return Sample(d["seconds"], d["peak"], d["base"], d["extra"])


@dataclass
class Stats:
    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, xs: list[float]) -> "Stats":
        return cls(statistics.median(xs), min(xs), max(xs), len(xs))

    def fmt(self, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
        return f"{self.median * scale:.{digits}f}{unit} [{self.lo * scale:.{digits}f}–{self.hi * scale:.{digits}f}]"


def interleaved(reps: int, **sides) -> dict[str, list[Sample]]:
    """Run the sides of a comparison alternately (A B A B ...), so drift hits both alike."""
    out: dict[str, list[Sample]] = {k: [] for k in sides}
    for _ in range(reps):
        for name, fn in sides.items():
            out[name].append(fn())
    return out


def ratios(a: list[Sample], b: list[Sample], key=lambda s: s.seconds) -> Stats:
    """Per-repetition ratio a/b (paired by repetition)."""
    return Stats.of([key(x) / key(y) for x, y in zip(a, b, strict=True)])


def dump(path, obj) -> None:
    from pathlib import Path

    p = Path(path)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(p)
