"""Progress lines a person can read on long stages: how far, how fast, how long to go."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

EVERY_ENV = "TRIMWORKS_PROGRESS_SECONDS"  # how often a long stage logs its progress line (default 5)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(what: str, done: int, total: int | None, elapsed: float, unit: str) -> str:
    """'counting fr: 120,000/200,000 lines (60%), 35,400 lines/s, ETA 0:02' (no ETA without a total)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    rate_s = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"
    if total:
        eta = f", ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else ""
        return f"{what}: {done:,}/{total:,} {unit} ({100 * done / total:.0f}%), {rate_s} {unit}/s{eta}"
    return f"{what}: {done:,} {unit}, {rate_s} {unit}/s, {_duration(elapsed)} so far"


class RateLog:
    """Calls `emit(line)` at most every `every` seconds (default: $TRIMWORKS_PROGRESS_SECONDS or 5),
    and on `final`, with rate and ETA."""

    def __init__(self, what: str, unit: str, emit: Callable[[str], None], total: int | None = None,
                 every: float | None = None, clock: Callable[[], float] = time.monotonic):
        if every is None:
            every = float(os.environ.get(EVERY_ENV) or 5.0)
        self.what, self.unit, self.emit, self.total, self.every, self.clock = what, unit, emit, total, every, clock
        self.start = clock()
        self.last = self.start

    def update(self, done: int, final: bool = False) -> None:
        now = self.clock()
        if final or now - self.last >= self.every:
            self.last = now
            self.emit(progress_line(self.what, done, self.total, now - self.start, self.unit))
