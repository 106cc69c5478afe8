"""Atomic, durable writes: a reader sees the old state or the complete new one, never a
partial file — after a crash, and after a power loss too: every file is fsynced before the
rename that publishes it, and the parent folder after the rename (the rename itself lives in
the folder's data, which the page cache holds until then)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path, "w") as fh:
        fh.write(text)


@contextlib.contextmanager
def atomic_folder(out_dir: Path, overwrite: bool = False, durable: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside `out_dir`; on success it replaces `out_dir` by rename.

    On any error the temp folder is removed, so no partial output is ever visible.
    `durable=False` skips the fsyncs, for a folder that a later durable rename publishes
    (a variant's staging folder: `LocalRegistry.publish` fsyncs it before its own rename).
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
        if durable:
            fsync_tree(tmp)  # every byte on disk before the folder can be seen under its name
        replace_folder(tmp, out_dir, out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if durable:
        fsync_dir(out_dir.parent)


def replace_folder(src: Path, dst: Path, trash: Path, between: Callable[[], None] | None = None) -> None:
    """Put the complete folder `src` at `dst` by rename: readers see the old folder, no
    folder, or the new one, never a partial one. An existing `dst` is first renamed to
    `trash` (same filesystem) and removed at the end; `between` runs after that rename
    (crash tests kill the process there)."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        os.replace(dst, trash)
    if between is not None:
        between()
    os.replace(src, dst)  # same filesystem by construction (callers stage beside `dst`)
    shutil.rmtree(trash, ignore_errors=True)


def fsync_dir(path: Path) -> None:
    """fsync a folder: makes the renames and creations inside it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every folder bottom-up (cheap for files already
    synced: only dirty pages are written)."""
    folder = Path(folder)
    dirs = []
    for root, _, files in os.walk(folder):
        dirs.append(root)
        for name in files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in reversed(dirs):
        fsync_dir(Path(d))


_FLUSHER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="trimworks-flush")


def flush_in_background(folder: Path) -> Future:
    """Start writing `folder`'s files to disk now, on a helper thread, so that the fsync before
    the rename that publishes it finds them written: the wait for the disk overlaps the work
    that follows (the proof, the checks, the card) instead of coming before it. Errors are
    dropped (the folder may be removed meanwhile): that later fsync is the one that counts."""
    def flush() -> None:
        with contextlib.suppress(OSError):
            fsync_tree(folder)

    return _FLUSHER.submit(flush)
