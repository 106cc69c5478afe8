"""A Prefect API server started once and shared by many `trimworks` runs: the smoke bench's
rows 5 and 6 (bench/run.py) and the test suite's CLI runs (tests/subjects.py `run_cli`).
"""

from __future__ import annotations

from pathlib import Path


class SharedPrefectServer:
    """One Prefect API server shared by many CLI runs (the test suite's CLI runs that do not
    test the temporary server itself; the smoke bench's rows 5 and 6): each
    `trimworks publish-all` would otherwise start its own (~12 s on a loaded 2-core machine,
    most of it importing the server). The same command Prefect's SubprocessASGIServer runs,
    started here with an explicit environment: that class takes its settings from the
    caller's context, which in a worker running `prefect_test_harness` would point the
    server at the harness's database."""

    def __init__(self) -> None:
        import threading

        self.proc = None
        self.log = None
        self.url: str | None = None
        self._lock = threading.Lock()  # two CLI runs started at once (tests/reliability) share one server

    def start(self, home: Path, timeout: float = 180) -> str:
        with self._lock:
            return self._start(home, timeout)

    def _start(self, home: Path, timeout: float) -> str:
        import os
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

        if self.url and self.proc is not None and self.proc.poll() is None:
            return self.url
        self.stop()  # a server that died is replaced
        import prefect

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
        env.pop("PREFECT_API_URL", None)
        home.mkdir(parents=True, exist_ok=True)
        log = self.log = (home / f"shared-server-{port}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
             "--lifespan", "on"], env=env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}/api"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the shared Prefect server exited with {self.proc.returncode}: {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        self.url = url
                        return url
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the shared Prefect server did not answer in {timeout:.0f} s: {log.name}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - a server that ignores SIGTERM is killed
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()
        self.proc, self.log, self.url = None, None, None
