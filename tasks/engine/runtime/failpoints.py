"""Fail points for crash tests (in the spirit of FreeBSD's fail points and etcd's gofail).

`TRIMWORKS_FAILPOINT=<name>` makes the process SIGKILL itself when it reaches that point,
so tests can kill a real run in the middle of counting, surgery or publishing and check
what a rerun finds. Unset (always, outside tests) a fail point is one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "TRIMWORKS_FAILPOINT"
POINTS = ("counting", "surgery", "publishing")


def failpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
