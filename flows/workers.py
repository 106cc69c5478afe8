"""Local task runners: worker processes (the default) or threads, for the per-variant work.

A variant's build is mostly Python holding the GIL, so threads share one core's worth of it;
worker processes let variants per hour grow with cores. `WorkerProcesses` is Prefect's
ProcessPoolTaskRunner (spawn) plus what a run here needs:

* **the flow's API.** On Prefect's temporary server (no PREFECT_API_URL) a worker would start
  a temporary server of its own (~40 s each) and its task runs would never reach the flow's
  server: every submission carries the running server's URL in its settings.
* **clean stops.** A stop requested in the flow process (Ctrl-C, SIGTERM: flows/stopping.py)
  is passed on to the workers as SIGTERM, which a worker turns into the same polite stop
  (tasks/engine/runtime/stopping.py): the variant in hand is dropped at its next safe point,
  nothing partial is published. Workers ignore SIGINT, so the terminal's Ctrl-C to the whole
  process group is decided by the flow process alone. A worker dies with the flow process
  (PR_SET_PDEATHSIG SIGKILL) when that is killed: none is left behind.
* **no signal during start-up.** All workers start when the runner starts, from a thread that
  blocks SIGINT and SIGTERM; a worker inherits the blocked mask and unblocks it once its
  handlers are in place. A signal that arrives while a worker still imports waits for the
  handler instead of killing the worker (a broken pool would fail every variant).
* **one core's worth of BLAS each.** A worker's torch (the output comparison, the loss) runs on
  cores / workers intra-op threads (OMP/MKL_NUM_THREADS set before torch is imported there):
  two workers each starting a thread per core would double-book the cores, and each
  comparison ran half as fast.
* **bounded memory.** Each variant hands its free heap back (tasks/engine/runtime/heap.py, after
  every build_and_publish). Workers are not recycled: `max_tasks_per_child` can leave a
  CPython 3.11 pool with no worker and its queue hung (python/cpython gh-115634).

Tasks still take and return paths, ids and records, never tensors (flows/steps.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from tasks.engine.runtime.stopping import StopRequested, request_stop, stop_requested

Executor = Literal["processes", "threads"]
EXECUTORS: tuple[str, ...] = ("processes", "threads")
EXECUTOR_ENV = "TRIMWORKS_EXECUTOR"  # the default executor where none is given (the product's: processes)
PR_SET_PDEATHSIG = 1
_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_IN_WORKER = False  # set by _worker_started in a worker process
STOPPED = "stopped by the user (Ctrl-C or SIGTERM); nothing partial was published"
P = ParamSpec("P")
R = TypeVar("R")


def cancel_on_stop(fn: Callable[P, R]) -> Callable[P, R]:
    """For a task body: in a worker, a requested stop ends the task run Cancelled, not Crashed.

    A stop is a StopRequested, a BaseException; Prefect's process runner passes only
    Exceptions from a worker back (a BaseException kills its result thread and the run hangs),
    so in a worker the task returns a Cancelled state instead and the flow turns it back
    into a stop (`raise_if_stopped`). On threads the exception travels as before."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except StopRequested:
            if not in_worker():  # a call by name: a by-value pickled closure would see a stale global
                raise
            from prefect.states import Cancelled

            return Cancelled(message=STOPPED)  # type: ignore[return-value]

    return run


def in_worker() -> bool:
    """Whether this process is a worker of a WorkerProcesses pool."""
    return _IN_WORKER


def raise_if_stopped(exc: BaseException) -> None:
    """In the flow, after a task's result raised: StopRequested when the run is stopping (or a
    worker was told to stop: the whole run stops), so a stop never reads as a failure."""
    if STOPPED in str(exc):
        request_stop()
    if stop_requested():
        raise StopRequested("stop requested") from None


def default_executor() -> Executor:
    """TRIMWORKS_EXECUTOR if set (processes | threads), else processes."""
    value = os.environ.get(EXECUTOR_ENV, "processes").strip().lower() or "processes"
    if value not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={value!r}: use one of {', '.join(EXECUTORS)}")
    return value  # type: ignore[return-value]


def local_task_runner(executor: str | None = None, workers: int = 2) -> TaskRunner:
    """Worker processes or threads on this machine, `workers` of them."""
    executor = executor or default_executor()
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    return WorkerProcesses(max_workers=workers) if executor == "processes" else ThreadPoolTaskRunner(max_workers=workers)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Intra-op threads for one worker's torch: the cores shared out, at least one."""
    return max(1, usable_cores() // max(1, workers))


BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _worker_started(parent_pid: int, torch_threads: int = 1) -> None:
    """In each worker, once, before its first task (its main thread; SIGINT/SIGTERM blocked)."""
    global _IN_WORKER
    _IN_WORKER = True
    for name in BLAS_THREAD_VARIABLES:  # before torch's first import in this (spawned) process
        os.environ.setdefault(name, str(torch_threads))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the flow process died before the death signal was armed
        os._exit(1)
    with contextlib.suppress(Exception):  # logging is a nicety: never a reason for a broken pool
        from flows.console import quiet_routine_task_ends

        quiet_routine_task_ends()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the flow process decides; it passes a stop on as SIGTERM
    signal.signal(signal.SIGTERM, _stop_on_signal)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # a pending SIGTERM is handled now


def _stop_on_signal(_signum: int, _frame: Any) -> None:
    request_stop()


def _warm_up() -> int:
    """The first call a worker runs: the build code's imports, while the flow prepares."""
    import tasks.pipeline.production.build  # noqa: F401

    return os.getpid()


class WorkerProcesses(ProcessPoolTaskRunner):
    """ProcessPoolTaskRunner whose workers use the flow's API and stop with the flow (above)."""

    def __init__(self, max_workers: int | None = None):
        super().__init__(max_workers=max_workers, initializer=_worker_started,
                         initargs=(os.getpid(), threads_per_worker(max_workers or 1)))
        self._worker_settings: Any = None
        self._closing: threading.Event | None = None
        self._watcher: threading.Thread | None = None

    def duplicate(self) -> TaskRunner:  # type: ignore[override]
        # Prefect enters a duplicate of the flow's runner in every worker, for each task; a
        # pool of pools would be wasted there (the build tasks submit nothing): threads.
        if in_worker():
            return ThreadPoolTaskRunner(max_workers=1)
        return type(self)(max_workers=self._max_workers)

    def __enter__(self):
        # The process that starts the pool is the workers' parent.
        self._initargs = (os.getpid(), threads_per_worker(self._max_workers))
        self._worker_settings = settings_with_flow_api()
        super().__enter__()
        try:
            self._start_workers()
        except Exception:
            super().__exit__(*sys.exc_info())
            raise
        self._closing = threading.Event()
        self._watcher = threading.Thread(target=self._pass_stop_on, name="trimworks-worker-stop", daemon=True)
        self._watcher.start()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self._closing = self._watcher = None
        super().__exit__(exc_type, exc_value, traceback)

    def submit(self, task, parameters, wait_for=None, dependencies=None):  # type: ignore[override]
        if self._worker_settings is None:
            return super().submit(task, parameters, wait_for=wait_for, dependencies=dependencies)
        from prefect.context import SettingsContext, get_settings_context

        # The serialized settings (and the environment built from them) are what a worker's
        # task engine connects with: they carry the flow's API URL.
        with SettingsContext(profile=get_settings_context().profile, settings=self._worker_settings):
            return super().submit(task, parameters, wait_for=wait_for, dependencies=dependencies)

    def worker_pids(self) -> list[int]:
        executor = self._executor
        return list(getattr(executor, "_processes", None) or {}) if executor is not None else []

    def _start_workers(self) -> None:
        """Every worker now, with SIGINT/SIGTERM blocked in this thread so that they inherit it."""
        executor = self._executor
        if executor is None:
            return
        blocked = hasattr(signal, "pthread_sigmask")
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) if blocked else None
        try:
            for _ in range(self._max_workers):  # each submit finds no idle worker: one spawn each
                executor.submit(_warm_up)
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _pass_stop_on(self) -> None:
        told: set[int] = set()
        closing = self._closing
        while closing is not None and not closing.wait(0.2):
            if not stop_requested():
                continue
            for pid in set(self.worker_pids()) - told:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
                told.add(pid)


def settings_with_flow_api() -> Any:
    """The current Prefect settings plus the temporary server's URL, when the flow runs on
    Prefect's temporary server in this process; None when the settings already name an API
    (or no server runs here: nothing to pass on)."""
    from prefect.settings import PREFECT_API_URL, get_current_settings

    if PREFECT_API_URL.value():
        return None
    if "prefect.server.api.server" not in sys.modules:  # the temporary server was never started here
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's client started (one per process)
    if not server.running:
        return None
    return get_current_settings().copy_with_update(updates={PREFECT_API_URL: server.api_url})

