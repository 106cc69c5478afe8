"""A polite stop: a flag set when the user asks a run to stop (Ctrl-C, SIGTERM), checked at
safe points (between counting batches, between shards in surgery, between a variant's
stages and before it is published). Nothing is ever half-published: a variant is either
renamed into the registry whole or not at all, so stopping at a check is always safe.
"""

from __future__ import annotations

import threading

_STOP = threading.Event()


class StopRequested(BaseException):
    """The user asked the run to stop. A BaseException, so the `except Exception` that turns
    a broken variant into a failed record lets it through: a stop is not a failure."""


def request_stop() -> None:
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


def clear_stop() -> None:
    _STOP.clear()


def check_stop() -> None:
    """Raise StopRequested if a stop was asked for (one flag read otherwise)."""
    if _STOP.is_set():
        raise StopRequested("stop requested")
