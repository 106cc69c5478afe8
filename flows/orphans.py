"""No orphans: the temporary Prefect server dies with the process that started it, and flow
runs of a killed process are marked crashed at the next start.

Prefect starts its temporary server (`SubprocessASGIServer`) as a plain child process; when
the parent is SIGKILLed nothing stops it, and it keeps listening (and its flow runs stay
RUNNING in the database) forever. Here the child asks the kernel for SIGTERM when its parent
dies (`PR_SET_PDEATHSIG`, Linux, via ctypes prctl) and gets its own process group; a run
lease file per flow run lets the next start find runs whose process is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
import types
from pathlib import Path

log = logging.getLogger("trimworks.orphans")
PR_SET_PDEATHSIG = 1
LEASES = "runs"


def _die_with_parent(parent_pid: int) -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def guard_temporary_server() -> bool:
    """Make Prefect's temporary server a child that dies with this process (idempotent).
    Returns whether the guard is active (Linux only). With PREFECT_API_URL set there is no
    temporary server, and the server's modules (~4 s of imports) are not loaded."""
    if not sys.platform.startswith("linux"):
        return False
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return False
    from prefect.server.api import server as srv

    if getattr(srv.subprocess, "trimworks_guard", False):
        return True
    real = srv.subprocess

    def popen(*args, **kwargs):
        # The parent-death signal follows the thread that forks; only the main thread lives
        # as long as the process, so other threads get a process group and the atexit stop.
        if threading.current_thread() is threading.main_thread():
            parent = os.getpid()
            kwargs.setdefault("preexec_fn", lambda: _die_with_parent(parent))
        return real.Popen(*args, **kwargs)

    proxy = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
    proxy.Popen = popen
    proxy.trimworks_guard = True
    srv.subprocess = proxy
    return True


# --- run leases: which flow runs belong to a live process -------------------------------
def hold_lease(work_dir: Path, flow_run_id: str) -> Path:
    folder = Path(work_dir) / LEASES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{flow_run_id}.json"
    path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "flow_run_id": flow_run_id}))
    return path


def release_lease(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            Path(path).unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_leases(work_dir: Path) -> list[tuple[Path, str]]:
    """(lease file, flow run id) of runs on this host whose process is gone."""
    folder = Path(work_dir) / LEASES
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("host") == socket.gethostname() and not _alive(int(data.get("pid", 0))):
            out.append((path, str(data.get("flow_run_id"))))
    return out


def mark_crashed_runs(work_dir: Path) -> list[str]:
    """Mark the flow runs of killed processes Crashed (they stay RUNNING otherwise)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    marked = []
    leases = dead_leases(work_dir)
    if not leases:
        return marked
    with get_client(sync_client=True) as client:
        for path, run_id in leases:
            try:
                run = client.read_flow_run(run_id)
                if run.state is None or not run.state.is_final():
                    client.set_flow_run_state(run_id, Crashed(message="the process running it was killed"), force=True)
                    marked.append(run_id)
            except Exception as exc:  # noqa: BLE001 - another server/database: nothing to mark here
                log.debug("could not mark flow run %s crashed: %s", run_id, exc)
            release_lease(path)
    if marked:
        log.warning("marked %d flow run(s) of killed runs as crashed: %s", len(marked), marked)
    return marked
