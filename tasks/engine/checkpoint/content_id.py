"""Content identity: streamed sha256 digests of files, cached by (path, size, mtime, inode).

A fingerprint must follow what a file holds, not its name: a repaired or changed base model
(or corpus) must rebuild what was made from it. Hashing is streamed (1 MiB blocks, memory
flat whatever the size), and a digest is reused while the file's stat key is unchanged, so
a rerun does not rehash gigabytes of unchanged weights. A file that changes while it is
hashed is an error, never a digest of a mix of old and new bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from tasks.engine.errors import TrimworksError

_LOCK = threading.Lock()


class ChangedWhileReadingError(TrimworksError):
    """A file changed (size, mtime or inode) while it was being read."""


def stat_key(path: Path) -> tuple[int, int, int]:
    """(size, mtime_ns, inode): changes whenever the file is rewritten, truncated or replaced."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def check_unchanged(path: Path, before: tuple[int, int, int], what: str = "read") -> None:
    try:
        after = stat_key(path)
    except OSError as exc:
        raise ChangedWhileReadingError(f"{path}: disappeared while it was being {what} ({exc.strerror})") from exc
    if after != before:
        raise ChangedWhileReadingError(
            f"{path}: changed while it was being {what} (size {before[0]} -> {after[0]} bytes); "
            "nothing was kept from it. Rerun once the file is no longer being written"
        )


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (memory flat)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class DigestCache:
    """sha256 per file, remembered in a small JSON file keyed by path and stat key."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self._data: dict[str, str] | None = None
        self._dirty = False

    def _load(self) -> dict[str, str]:
        if self._data is None:
            self._data = {}
            if self.path is not None:
                with contextlib.suppress(OSError, ValueError):
                    data = json.loads(self.path.read_text())
                    if isinstance(data, dict):
                        self._data = {str(k): str(v) for k, v in data.items()}
        return self._data

    def digest(self, path: Path) -> str:
        path = Path(path).resolve()
        before = stat_key(path)
        key = f"{path}|{before[0]}|{before[1]}|{before[2]}"
        with _LOCK:
            hit = self._load().get(key)
        if hit:
            return hit
        digest = sha256_file(path)
        check_unchanged(path, before, "hashed")
        with _LOCK:
            data = self._load()
            for old in [k for k in data if k.startswith(f"{path}|")]:
                del data[old]  # one entry per path: the cache does not grow with every rewrite
            data[key] = digest
            self._dirty = True
        return digest

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        from tasks.engine.runtime.atomic import write_text_atomic

        with _LOCK:
            # Merge with what another process may have saved meanwhile (last writer wins per key).
            merged: dict[str, str] = {}
            with contextlib.suppress(OSError, ValueError):
                merged = json.loads(self.path.read_text())
            merged.update(self._data or {})
            write_text_atomic(self.path, json.dumps(merged, sort_keys=True))
            self._dirty = False


def file_digest(path: Path, cache: Path | None = None) -> str:
    """Streamed sha256 of one file (reused from `cache` while its stat key is unchanged)."""
    c = DigestCache(cache)
    d = c.digest(path)
    c.save()
    return d


def digests(paths: Iterable[Path], cache: Path | None = None) -> dict[str, str]:
    c = DigestCache(cache)
    out = {str(p): c.digest(p) for p in paths}
    c.save()
    return out


def model_content_files(folder: Path) -> list[Path]:
    """Every file a trimmed variant is made from: weights, index, configs, tokenizer files and
    extra modules (hidden entries such as a download cache and the README are not inputs)."""
    folder = Path(folder)
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or rel.as_posix() == "README.md":
            continue
        if p.is_file():
            out.append(p)
    return out


def folder_identity(folder: Path, cache: Path | None = None) -> str:
    """sha256 over (relative name, content digest) of every input file of a model folder.
    Symlinks that leave the folder are refused before anything is read."""
    from tasks.engine.checkpoint.model_folder import check_no_escaping_symlinks

    folder = Path(folder)
    check_no_escaping_symlinks(folder)
    c = DigestCache(cache)
    h = hashlib.sha256()
    for p in model_content_files(folder):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0" + c.digest(p).encode() + b"\n")
    c.save()
    return h.hexdigest()
