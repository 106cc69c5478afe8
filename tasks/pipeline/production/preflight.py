"""Checks made once, before any variant is built: can the output folder be written, and is
there room for a variant on it? A read-only or full output gives one clear early message
instead of a raw OSError per built variant."""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)  # pragma: no cover


DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def output_error_message(exc: OSError, where: Path, what: str = "output folder") -> str:
    """One sentence for the OS errors a full, size-limited or read-only folder gives, naming
    the folder (`what`: which one it is, e.g. "work folder")."""
    folder = Path(where)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    setting = "work_dir" if what == "work folder" else "output_dir"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"disk full on {folder} ({exc.strerror}); nothing was left behind. "
                "Free space there (or set output_dir / work_dir elsewhere) and rerun")
    if exc.errno == errno.EFBIG:  # `ulimit -f`: the CLI ignores SIGXFSZ, so the write fails instead of killing it
        return (f"file size limit reached writing in {what} {folder} ({exc.strerror}); nothing was left behind. "
                "Raise the limit (ulimit -f unlimited) and rerun")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{what} {folder} is not writable ({exc.strerror}); nothing was built. "
                f"Make it writable or set {setting} elsewhere, then rerun")
    return f"cannot write to {folder}: {exc.strerror or exc}"


def output_problem(out_dir: Path, need_bytes: int = 0) -> str | None:
    """Why variants cannot be published into `out_dir` (None if they can): it cannot be
    created or written (probe file written and fsynced), or has less free space than
    `need_bytes` (the size of one variant's base weights, an upper bound of its output)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".trimworks-probe-{uuid.uuid4().hex[:8]}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return output_error_message(exc, out_dir)
    if need_bytes:
        free = shutil.disk_usage(out_dir).free
        if free < need_bytes:
            return (f"disk full on {out_dir}: {_human(free)} free, but one variant needs up to {_human(need_bytes)}; "
                    "nothing was built. Free space there (or set output_dir elsewhere) and rerun")
    return None


def weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
