"""Atomic writes: a reader sees the old state or the complete new one, never a partial file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tasks.engine.errors import OutputExistsError


def _umask() -> int:
    """The process umask: from /proc on Linux (thread-safe), else by setting and restoring it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_mode(is_dir: bool = False) -> int:
    """What open()/mkdir() would give under the current umask (0644 / 0755 under umask 022).

    mkstemp and mkdtemp create 0600 / 0700 files and folders; renamed into the registry as
    such, another user or a web server could not read them."""
    return (0o777 if is_dir else 0o666) & ~_umask()


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, readable_mode())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path, "w") as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_folder(out_dir: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `out_dir`; on success it replaces `out_dir` by rename.

    On any error the temp folder is removed, so no partial output is ever visible.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(
            f"output folder {out_dir} already exists; pass --overwrite (overwrite=True) to replace it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
