"""Clean stops with a real signal: Ctrl-C (SIGINT to the terminal's process group) or SIGTERM
(to the process, as a service manager sends it) ends a run in a few lines, the flow run is
Cancelled, nothing partial is published, the temporary server is gone, and the message says
how to resume. The builds run in worker processes (the product's default): the workers stop
too and none is left behind; one run on threads keeps that path covered."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import subjects
from tests.reliability.test_crash_resume import assert_registry_complete

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bases(tmp_path_factory, toy_model_session):
    return subjects.two_toy_bases(tmp_path_factory.mktemp("bases"), toy_model_session)


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in path.read_text() or proc.poll() is not None:
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}")


def group_members(pgid: int) -> str:
    return subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True, text=True).stdout


def living(ps_lines: str) -> str:
    """Processes still running (an exited one waits as <defunct> until init reaps it)."""
    return "\n".join(line for line in ps_lines.splitlines() if "<defunct>" not in line)


@pytest.mark.parametrize(("sig", "executor"), [(signal.SIGINT, "processes"), (signal.SIGTERM, "processes"),
                                               (signal.SIGTERM, "threads")],
                         ids=["ctrl-c", "sigterm", "sigterm-threads"])
def test_a_signal_stops_the_run_cleanly(tmp_path, bases, sig, executor):
    manifest = subjects.make_manifest(tmp_path, bases, multiples=[8, 16, 32, 64])  # 16 variants
    home = Path(os.environ.get("TRIMWORKS_TEST_PREFECT_HOME", tmp_path / "prefect-home"))
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    exe = Path(sys.executable).parent / "trimworks"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen([str(exe), "publish-all", str(manifest), "--executor", executor], env=env, stdout=o,
                                stderr=e, start_new_session=True)
        try:
            wait_for(err, "to build", proc)
            assert proc.poll() is None, err.read_text()[-3000:]
            before = len(err.read_text().splitlines())
            if sig == signal.SIGINT:
                os.killpg(proc.pid, sig)  # what the terminal does on Ctrl-C
            else:
                proc.send_signal(sig)
            rc = proc.wait(timeout=300)
        finally:
            end = time.monotonic() + 10  # the run has exited: whatever is left of its group goes away now or is an orphan
            while (with_group := living(group_members(proc.pid))) and time.monotonic() < end:
                time.sleep(0.2)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = err.read_text()
    after = text.splitlines()[before:]
    assert rc == 128 + sig, text[-3000:]
    assert "To resume, run the same command again" in text and f"trimworks publish-all {manifest}" in text
    assert "Traceback" not in text and "Error logging to API" not in text and "Connection refused" not in text, text[-3000:]
    assert len(after) <= 25, "\n".join(after)
    assert "Stopping temporary server" in text and "uvicorn" not in with_group  # shut down after the flow
    assert not with_group, with_group  # no worker process (nor anything else of the run) is left behind
    assert text.count("Starting temporary server") == 1  # the workers used the flow's server
    port = int(re.search(r"Starting temporary server on http://127.0.0.1:(\d+)", text).group(1))
    with pytest.raises(ConnectionRefusedError):  # it runs in its own process group: check it is really gone
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert_registry_complete(tmp_path / "published")  # nothing partial published
    builds = tmp_path / "work" / "builds"
    assert not builds.exists() or not [p for p in builds.iterdir() if not p.name.startswith(".")]
    db = sqlite3.connect(home / "prefect.db")
    (state,) = db.execute("select state_type from flow_run order by created desc limit 1").fetchone()
    assert state == "CANCELLED"


def test_a_killed_run_leaves_no_worker(tmp_path, bases):
    """SIGKILL to the flow process (no chance to clean up): its worker processes die with it."""
    manifest = subjects.make_manifest(tmp_path, bases, multiples=[8, 16, 32, 64])
    env = {**os.environ, "PREFECT_HOME": str(Path(os.environ.get("TRIMWORKS_TEST_PREFECT_HOME", tmp_path / "home")))}
    env.pop("PREFECT_API_URL", None)
    err = tmp_path / "err.txt"
    exe = Path(sys.executable).parent / "trimworks"
    with err.open("w") as e:
        proc = subprocess.Popen([str(exe), "publish-all", str(manifest), "--executor", "processes"], env=env,
                                stdout=subprocess.DEVNULL, stderr=e, start_new_session=True)
        try:
            wait_for(err, "to build", proc)
            end = time.monotonic() + 120
            while living(group_members(proc.pid)).count("multiprocessing.spawn") < 2 and time.monotonic() < end:
                time.sleep(0.2)
            workers = [line for line in living(group_members(proc.pid)).splitlines() if "multiprocessing.spawn" in line]
            assert len(workers) == 2 and proc.poll() is None, err.read_text()[-3000:]
            proc.kill()
            proc.wait(timeout=30)
            end = time.monotonic() + 15
            while (left := living(group_members(proc.pid))) and time.monotonic() < end:
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert not left, left
