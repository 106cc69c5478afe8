"""xxh3-128 digests of tensor bytes, read in blocks, remembered per process for base files.

The structural proof compares every copied tensor's digest with the base's. A base serves
many variants, so its digests are remembered (keyed by file, size, mtime, inode and byte
range: a rewritten file is read again). Surgery may fill the memo from the very read that
copies a tensor (`copy_and_remember`); the proof then reads only the variant's files.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import BinaryIO

import xxhash

from tasks.engine.safetensors_io import BLOCK_BYTES, TensorInfo, copy_bytes


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


def copy_and_remember(info: TensorInfo, out: BinaryIO) -> None:
    """Copy a base tensor's bytes into `out` and remember their digest from the same read.

    The first time: through one 16 MiB buffer, hashed on the way (xxh3 runs at ~8 GB/s, so
    this costs about the kernel copy), which saves the proof a second read of the base. Once
    the digest is known: the kernel copy."""
    key = _key(info)
    with _DIGESTS_LOCK:
        known = key in _DIGESTS
    if known:
        copy_bytes(info, out)
        return
    h = xxhash.xxh3_128()
    buf = memoryview(bytearray(min(BLOCK_BYTES, max(info.nbytes, 1))))
    fd = os.open(info.file, os.O_RDONLY)
    try:
        for block in _blocks(info, fd, buf):
            h.update(block)
            out.write(block)
    finally:
        os.close(fd)
    with _DIGESTS_LOCK:
        _DIGESTS[key] = h.hexdigest()


def tensor_digest(info: TensorInfo, buf: memoryview | None = None, remember: bool = False) -> tuple[str, int]:
    """xxh3-128 of a tensor's bytes, and how many bytes were read for it (0 if remembered).

    `remember` keys the digest by file, size, mtime and byte range: a base read once serves
    every variant of a run (a rewritten file has a new mtime, so it is read again)."""
    key = _key(info)
    if remember:
        with _DIGESTS_LOCK:
            if key in _DIGESTS:
                return _DIGESTS[key], 0
    buf = buf if buf is not None else memoryview(bytearray(min(BLOCK_BYTES, max(info.nbytes, 1))))
    h = xxhash.xxh3_128()
    fd = os.open(info.file, os.O_RDONLY)
    try:
        for block in _blocks(info, fd, buf):
            h.update(block)
    finally:
        os.close(fd)
    digest = h.hexdigest()
    if remember:
        with _DIGESTS_LOCK:
            _DIGESTS[key] = digest
    return digest, info.nbytes


def forget() -> None:
    """Drop every remembered digest (tests; a long-lived process that rewrote a base in place)."""
    with _DIGESTS_LOCK:
        _DIGESTS.clear()
