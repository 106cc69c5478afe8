"""`trimworks` command line: the engine usable alone, and the pipeline's entry points.

One module per command group: engine (one model folder), pipeline (a manifest), reports,
schedule. Each registers its commands on the one app in `app.py`.
"""

from __future__ import annotations

import logging
import signal
import sys

from flows.cli import engine, pipeline, reports, schedule  # noqa: F401  (register the commands)
from flows.cli.app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry
    from tasks.engine.runtime.redact import install_log_redaction

    install_log_redaction()
    if hasattr(signal, "SIGXFSZ"):  # `ulimit -f`: a write past it fails with EFBIG (one line) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from flows.console import CLI_HANDLER

    for handler in logging.getLogger().handlers:
        setattr(handler, CLI_HANDLER, True)  # runs swap it for Prefect's console format
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()
