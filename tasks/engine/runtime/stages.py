"""Where one variant's time goes: thread CPU seconds per named stage.

Thread time, not wall time: builds share cores with each other (and a worker with its
neighbours), so wall time per stage would measure the neighbours; the thread's own CPU seconds
say what each stage costs. The record of every variant carries them (`stage_seconds`), and the
end-to-end bench row sums them over a run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class StageClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.current: str | None = None  # the stage running now: where a failure happened

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start, outer = time.thread_time(), self.current
        self.current = name
        try:
            yield
            self.current = outer  # left as it was raised: the failing stage stays named
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.thread_time() - start

    def rounded(self, digits: int = 3) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.seconds.items()}


def stage(clock: StageClock | None, name: str) -> contextlib.AbstractContextManager:
    """`clock.stage(name)`, or nothing when no one is counting."""
    return clock.stage(name) if clock is not None else contextlib.nullcontext()
