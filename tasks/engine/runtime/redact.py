"""One redaction step for every error text that can reach a log, artifact, card, record or
catalog: the Hub token (and anything that looks like one) never leaves the process.

A Hub server may echo request headers in its error body, so an exception message can hold
`Authorization: Bearer hf_…`. Known secret values are registered at the place they are read
(`register_secret`); pattern rules catch `hf_…` tokens, `Authorization` values and
`token=` assignments whoever wrote them.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "[REDACTED]"
_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_PATTERNS = [
    re.compile(r"\bhf_[A-Za-z0-9_\-]{6,}"),
    # Authorization: Bearer xxx / 'authorization': 'Bearer xxx' / Authorization=xxx
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?\s*(?:bearer|basic|token)?\s*)(?!\[REDACTED\])[^\s'\",}\]]+"),
    re.compile(r"(?i)\b(bearer\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/=\-]{6,}"),
    re.compile(r"(?i)(?<![A-Za-z0-9_])((?:hf_|hub_|access_|api_)?token['\"]?\s*[:=]\s*['\"]?)(?!\[REDACTED\])[^\s'\",}\]]{6,}"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret value (e.g. the Hub token read from HF_TOKEN or a Secret block)."""
    if value and len(value) >= 4:
        with _LOCK:
            _SECRETS.add(value)


def redact(text: object) -> str:
    """`text` with every registered secret and token-like value replaced by [REDACTED]."""
    out = str(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        out = out.replace(secret, MASK)
    for pattern in _PATTERNS:
        out = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, out)
    return out


class _RedactingFactory:
    """A LogRecord factory: every record (any logger, any handler: stderr, Prefect's API log
    handler, files) carries a redacted message and traceback before anyone formats it."""

    def __init__(self, inner):
        self.inner = inner
        self.trimworks_redaction = True

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the caller's bug; keep it visible
            message = str(record.msg)
        clean = redact(message)
        if clean != message:  # args stay as they are otherwise (some formatters read them)
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
            record.exc_info = None
        return record


def install_log_redaction() -> None:
    """Redact every log record of this process (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "trimworks_redaction", False):
        logging.setLogRecordFactory(_RedactingFactory(factory))
