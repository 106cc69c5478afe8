"""The command line's log format for runs: Prefect's own (time, level, flow/task run name), one
line per event a person needs; routine "Finished in state Completed()" lines of tasks stay in
Prefect's API log (and UI) but not on the console."""

from __future__ import annotations

import logging


CLI_HANDLER = "_trimworks_cli"  # marks the handler flows.cli.main installs for the engine commands


class _RoutineTaskEnd(logging.Filter):
    """Drops the routine task-end lines, and keeps only the first line of the temporary server's
    start-up message (its second is advice about running a dedicated server, not about this run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "prefect.task_runs" and record.getMessage() == "Finished in state Completed()":
            return False
        if record.name == "prefect" and isinstance(record.msg, str) and record.msg.startswith("Starting temporary server"):
            record.msg, record.args = record.msg.split("\n", 1)[0], ()
        return True


class _LocatedErrorsWithoutTraceback:
    """Log-record factory: a TrimworksError is a located one-line message for a person (a full
    work folder, a broken base), so Prefect's records of it carry no traceback. A factory, not a
    handler filter: Prefect may set its handlers up again in a worker process."""

    trimworks_located = True

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        import sys

        from tasks.engine.errors import TrimworksError

        record = self.inner(*args, **kwargs)
        # The redacting factory (tasks/engine/runtime/redact.py) may have turned exc_info into text
        # already: the exception is then the one being handled.
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1] if record.exc_text else None
        if isinstance(exc, TrimworksError) and record.name.startswith("prefect"):
            record.exc_info, record.exc_text = None, None
        return record


def _quiet_located_errors() -> None:
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "trimworks_located", False):
        logging.setLogRecordFactory(_LocatedErrorsWithoutTraceback(factory))


def use_prefect_console() -> None:
    """Let Prefect's logging set-up own the console (it steps aside when the root logger
    already has a handler, as the CLI's engine commands install one)."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, CLI_HANDLER, False)]
    if not ours:
        return  # not the console script (e.g. the app invoked in-process by tests): leave logging alone
    _quiet_located_errors()
    for h in ours:
        root.removeHandler(h)
    from flows import runtime  # noqa: F401 - environment defaults before Prefect reads them
    from prefect.logging.configuration import setup_logging

    setup_logging(incremental=False)
    for h in root.handlers:
        if not any(isinstance(f, _RoutineTaskEnd) for f in h.filters):
            h.addFilter(_RoutineTaskEnd())
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_routine_task_ends() -> None:
    """In a worker process: Prefect's logging set up now, without the routine task-end lines
    (the flow process's console shows the same lines as a run on threads)."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    _quiet_located_errors()
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, _RoutineTaskEnd) for f in h.filters):
            h.addFilter(_RoutineTaskEnd())
