"""Measuring in child processes: wall time of a section and its peak RSS above baseline.

Each measurement runs in a fresh interpreter (`python -m bench.child module:function`), so
peaks are not inherited (ru_maxrss would carry the parent's across exec; VmHWM belongs to
the new address space) and caches do not leak between the sides of a comparison.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_MARK = "@@"


@dataclass
class Sample:
    seconds: float
    peak_bytes: int
    baseline_bytes: int
    extra: dict = field(default_factory=dict)
    log: str = ""  # the child's stdout and stderr

    @property
    def growth_bytes(self) -> int:
        return self.peak_bytes - self.baseline_bytes


def run_child(target: str, env: dict | None = None, timeout: int = 1800, **kwargs) -> Sample:
    """Measure one side of a comparison in a fresh interpreter: `python -m bench.child`.

    `target` ("bench.module:function") names a function that takes `kwargs` (JSON values),
    does its setup (imports, inputs: counted in the baseline) and returns the section to time;
    the section may return a dict of extra figures. `env`: variables to set (None: to remove)."""
    child_env = {**os.environ, **{k: v for k, v in (env or {}).items() if v is not None}}
    for k in [k for k, v in (env or {}).items() if v is None]:
        child_env.pop(k, None)
    proc = subprocess.run([sys.executable, "-m", "bench.child", target, json.dumps(kwargs)], capture_output=True,
                          text=True, timeout=timeout, env=child_env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {target} failed:\n{proc.stderr[-4000:]}")
    sample = parse_sample(proc.stdout)
    sample.log = proc.stdout + proc.stderr
    return sample


def parse_sample(stdout: str) -> Sample:
    """The child's report: the last line starting with RESULT_MARK."""
    line = next(l for l in stdout.splitlines()[::-1] if l.startswith(RESULT_MARK))
    d = json.loads(line[len(RESULT_MARK):])
    return Sample(d["seconds"], d["peak"], d.get("base", 0), d.get("extra", {}))


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
    p = Path(path)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(p)
