"""Process-wide defaults for running Prefect offline and quietly. Import before prefect."""

import os

_DEFAULTS = {
    # No telemetry from Prefect's embedded server or the Hub client.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # Our own module loggers show up in flow-run logs.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "trimworks",
    # The embedded temporary server can be slow to start on a loaded 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "TOKENIZERS_PARALLELISM": "true",
    # The temporary server Prefect starts when no PREFECT_API_URL is set would evaluate
    # automations and store every event: work a batch run never reads, which cost ~20 % of a
    # tiny variant's build time (bench row 5). Task and flow runs, logs and artifacts are
    # still recorded. Set these to true (or use a real server) to get automations back.
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    # tasks/ loggers also run outside flows (CLI, tests): no warning when there is no flow run.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # Third-party progress bars (GGUF conversion, shard writing, downloads) would interleave
    # with the run's log lines; the run logs its own progress with rate and ETA.
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
for key, value in _DEFAULTS.items():
    os.environ.setdefault(key, value)

# Every log record of the process (stderr, Prefect's API log handler) is redacted: no Hub
# token or Authorization value leaves through a log line or a traceback.
from tasks.engine.runtime.redact import install_log_redaction  # noqa: E402

install_log_redaction()

# The project's own lines (counting progress with rate and ETA, per-variant outcomes) at
# Prefect's log level. Prefect gives the extra loggers its API handler but no level, so they
# would inherit the root's WARNING and every INFO line would be dropped, on the console and in
# the flow run's logs. Prefect's logging config names only its own loggers and keeps existing
# ones, so this holds in every entry point that imports flows (CLI, deployments, workers).
import logging  # noqa: E402

logging.getLogger("trimworks").setLevel(os.environ.get("PREFECT_LOGGING_LEVEL", "INFO").upper())

