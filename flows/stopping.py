"""Clean stops for runs started from the command line.

Ctrl-C or SIGTERM: the flow is told to stop (tasks/engine/runtime/stopping.py) and stops at its next
safe point — within a counting batch, a surgery shard or a variant stage; nothing partial is
published. The flow run is then marked Cancelled, the temporary Prefect server (started here
in its own process group, so the terminal's Ctrl-C does not kill it under the run) is shut
down after the flow, and one message says how to resume. A second signal stops at once
(still safe: registry entries and caches are only ever renamed into place whole).

The flow runs in a worker thread so that this module, not Prefect's engine, owns SIGINT and
SIGTERM in the main thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tasks.engine.runtime.stopping import clear_stop, request_stop, stop_requested

log = logging.getLogger("trimworks.stop")
_received: list[int] = []


class RunStopped(Exception):
    """The run stopped on a signal; `signum` says which (exit code 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The server leaves its parent's process group (Ctrl-C in the terminal must not kill it
    under the run) but must still end when its parent is SIGKILLed."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def temporary_server() -> Iterator[Any]:
    """Prefect's temporary server, started here in its own process group, stopped on exit.
    Nothing when PREFECT_API_URL names a server."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        yield None
        return
    from prefect.server.api import server as server_module

    server = server_module.SubprocessASGIServer()  # the instance Prefect's client will use
    if not server.running:
        popen = subprocess.Popen
        kwargs: dict[str, Any] = {"process_group": 0}
        if sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _die_with_parent
        with _patched(server_module.subprocess, "Popen", functools.partial(popen, **kwargs)):
            server.start()
    try:
        yield server
    finally:
        if server is not None:
            drain_to_api()
            server.stop()


def drain_to_api(timeout: float = 10.0) -> None:
    """Ship the last log lines and events while the server is still up (at exit Prefect would
    try after the server is gone, then retry against a closed port)."""
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout)
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout)


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _on_signal(signum: int, _frame: Any) -> None:
    if _received:
        sys.stderr.write(f"\n{signal.Signals(signum).name} again: stopping now. Nothing partial is published; "
                         "rerun the same command to resume.\n")
        sys.stderr.flush()
        os._exit(128 + signum)
    _received.append(signum)
    request_stop()
    sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping at the next safe point "
                     "(the variant being built is dropped, nothing partial is published); send it again to stop now\n")
    sys.stderr.flush()


def mark_cancelled_if_stopped(flow: Any, flow_run: Any, state: Any) -> None:
    """on_crashed hook: a run the user stopped is Cancelled, not Crashed."""
    if not stop_requested():
        return
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Cancelled(message="stopped by the user (Ctrl-C or SIGTERM); "
                                                                  "nothing partial was published"), force=True)


def run_stoppable(fn: Callable[[], Any]) -> Any:
    """Run `fn` (a flow call) in a worker thread with this module handling SIGINT/SIGTERM.

    Returns fn's result (also when the run finished before a stop reached a safe point), or
    raises RunStopped after a requested stop (fn's own error otherwise)."""
    clear_stop()
    _received.clear()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with temporary_server():
            worker = threading.Thread(target=target, name="flow-run")
            worker.start()
            while worker.is_alive():
                worker.join(0.25)  # short joins: the main thread keeps receiving signals
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if "error" in outcome:
        if _received:
            raise RunStopped(_received[0])
        raise outcome["error"]
    return outcome.get("value")  # finished before the stop reached a safe point: nothing to stop
