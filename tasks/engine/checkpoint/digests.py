"""xxh3-128 digests of tensor bytes, read in blocks, remembered per process for base files.

The structural proof compares every copied tensor's digest with the base's. A base serves
many variants, so its digests are remembered (keyed by file, size, mtime, inode and byte
range: a rewritten file is read again). Surgery fills the memo while it copies a tensor
(`copy_and_remember`, a background read the page cache shares with the copy); the proof
then reads only the variant's files.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import xxhash

from tasks.engine.checkpoint.safetensors_io import BLOCK_BYTES, TensorInfo, copy_bytes


def _blocks(info: TensorInfo, fd: int, buf: memoryview, start: int = 0, length: int | None = None) -> Iterator[memoryview]:
    """The bytes [start, start+length) of a tensor, in buffer-sized blocks."""
    offset = info.start + start
    left = info.nbytes - start if length is None else length
    while left:
        n = os.preadv(fd, [buf[: min(len(buf), left)]], offset)
        if n <= 0:
            raise OSError(f"{info.file}: unexpected end of file in tensor {info.name!r}")
        yield buf[:n]
        offset, left = offset + n, left - n


_DIGESTS: dict[tuple, str] = {}
_DIGESTS_LOCK = threading.Lock()


def _key(info: TensorInfo) -> tuple:
    st = os.stat(info.file)
    return (str(info.file), st.st_size, st.st_mtime_ns, st.st_ino, info.start, info.end)


def copy_and_remember(info: TensorInfo, out: BinaryIO, uncache: bool = False) -> None:
    """Copy a base tensor's bytes into `out` (the kernel copy) while a background thread
    digests the same base bytes, which saves the proof a second read of the base.

    The digesting thread reads the range the copy is reading, so the disk serves it once (the
    other read finds it in the page cache); hashing runs beside the copy, not in its path
    (hashing in the copy's own buffered loop took 57 s for a 7B's copied tensors, this 42 s). The
    digest is of the base file's bytes; the proof reads the output itself and compares.
    `uncache`: drop the tensor's base pages from the page cache once copied and digested
    (for a base too big to stay cached, see `too_big_to_cache`)."""
    key = _key(info)
    with _DIGESTS_LOCK:
        pending = None
        if key not in _DIGESTS and key not in _PENDING:
            pending = _PENDING[key] = _hasher().submit(_digest_into_memo, info, key)
    copy_bytes(info, out)
    if pending is not None and uncache:
        pending.add_done_callback(lambda _f: _drop_from_page_cache(info))


def _drop_from_page_cache(info: TensorInfo) -> None:
    """Copied and digested: the base's pages are not needed again soon. Read twice (copy and
    digest), the kernel would otherwise keep them over the variant just written, which the
    proof reads next (a 7B variant's proof then read it back from disk: 10.9 s, 2.8 s from memory)."""
    try:
        fd = os.open(info.file, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, info.start, info.nbytes, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):  # advice only
        pass
    finally:
        os.close(fd)


def too_big_to_cache(nbytes: int) -> bool:
    """A base over a quarter of physical memory does not stay in the page cache across variants anyway."""
    try:
        return nbytes > os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return False


_PENDING: dict[tuple, Future] = {}
_HASHER: ThreadPoolExecutor | None = None
_BUF = threading.local()


def _hasher() -> ThreadPoolExecutor:
    global _HASHER
    if _HASHER is None:  # called under _DIGESTS_LOCK
        _HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="base-digest")
    return _HASHER


def thread_buffer() -> memoryview:
    """This thread's 16 MiB read buffer, allocated once (threads of long-lived pools reuse it)."""
    buf = getattr(_BUF, "buf", None)
    if buf is None:
        buf = _BUF.buf = memoryview(bytearray(BLOCK_BYTES))
    return buf


def _digest_into_memo(info: TensorInfo, key: tuple) -> str:
    try:
        digest = _read_digest(info, thread_buffer())
    finally:
        with _DIGESTS_LOCK:
            _PENDING.pop(key, None)
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
    return digest


def _read_digest(info: TensorInfo, buf: memoryview) -> str:
    h = xxhash.xxh3_128()
    fd = os.open(info.file, os.O_RDONLY)
    try:
        for block in _blocks(info, fd, buf):
            h.update(block)
    finally:
        os.close(fd)
    return h.hexdigest()


def tensor_digest(info: TensorInfo, buf: memoryview | None = None, remember: bool = False) -> tuple[str, int]:
    """xxh3-128 of a tensor's bytes, and how many bytes were read for it (0 if remembered).

    `remember` keys the digest by file, size, mtime and byte range: a base read once serves
    every variant of a run (a rewritten file has a new mtime, so it is read again). A digest
    that surgery's background thread is still computing is waited for."""
    key = _key(info)
    if remember:
        with _DIGESTS_LOCK:
            known, pending = _DIGESTS.get(key), _PENDING.get(key)
        if known is not None:
            return known, 0
        if pending is not None:
            try:
                return pending.result(), 0
            except Exception:  # noqa: BLE001 - e.g. an I/O error there: read it here, raising here
                pass
    buf = buf if buf is not None else memoryview(bytearray(min(BLOCK_BYTES, max(info.nbytes, 1))))
    digest = _read_digest(info, buf)
    if remember:
        with _DIGESTS_LOCK:
            _DIGESTS[key] = digest
    return digest, info.nbytes


def forget() -> None:
    """Drop every remembered digest (tests; a long-lived process that rewrote a base in place)."""
    with _DIGESTS_LOCK:
        pending = list(_PENDING.values())
    for f in pending:  # let a background digest finish before forgetting, or it lands after
        f.exception()
    with _DIGESTS_LOCK:
        _DIGESTS.clear()
