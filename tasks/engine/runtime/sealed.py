"""Caches that carry their own digest: what a cache file or folder held when it was written,
recorded beside it, and checked when it is read.

A cache (counts and chunk tables, a converted base) is reused without being made again, so
damage to it (a flipped bit that still decodes, a truncated file, a changed weight) would
otherwise be taken as input: a different kept set under the same fingerprint, or a "new"
base rebuilding good variants. A file's seal is `<file>.xxh3` (size and xxh3-128 of its
bytes, read in full on every check: counts tables are small). A folder's seal is a hidden
`.trimworks-sealed.json` listing every file with size, mtime and digest: a check stats each
file and reads only those whose mtime moved (a multi-GB base is not reread on every run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import xxhash

from tasks.engine.runtime.atomic import write_text_atomic

FILE_SEAL_SUFFIX = ".xxh3"
FOLDER_SEAL = ".trimworks-sealed.json"
UNSEALED = "no digest was recorded for it"  # a cache an older trimworks wrote


def xxh3_file(path: Path) -> str:
    """xxh3-128 of a file's bytes, read in blocks (memory flat)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, xxhash.xxh3_128).hexdigest()


def seal_path(path: Path) -> Path:
    return Path(str(path) + FILE_SEAL_SUFFIX)


def seal_file(path: Path) -> None:
    """Record the size and digest of a cache file just written (after its atomic rename)."""
    path = Path(path)
    write_text_atomic(seal_path(path), json.dumps({"size": path.stat().st_size, "xxh3_128": xxh3_file(path)}))


def file_seal_problem(path: Path) -> str | None:
    """What is wrong with a sealed cache file (None: whole); `UNSEALED` when it has no seal."""
    path = Path(path)
    try:
        seal = json.loads(seal_path(path).read_text())
    except FileNotFoundError:
        return UNSEALED
    except (OSError, ValueError) as exc:
        return f"its digest record is unreadable ({exc})"
    try:
        size = path.stat().st_size
        if not isinstance(seal, dict) or size != seal.get("size"):
            return f"it is {size:,} bytes, {seal.get('size') if isinstance(seal, dict) else '?'} when written"
        if xxh3_file(path) != seal.get("xxh3_128"):
            return "its bytes differ from those written (digest mismatch)"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    return None


def discard_file(path: Path) -> None:
    """Remove a damaged cache file and its seal (the caller rebuilds it)."""
    for p in (Path(path), seal_path(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _folder_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def seal_folder(folder: Path, extra: dict | None = None) -> None:
    """Record every (non-hidden) file of a cache folder: size, mtime and digest (`extra`:
    what the folder was made from, kept in the seal)."""
    folder = Path(folder)
    files = {}
    for p in _folder_files(folder):
        st = p.stat()
        files[p.relative_to(folder).as_posix()] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "xxh3_128": xxh3_file(p)}
    write_text_atomic(folder / FOLDER_SEAL, json.dumps({"files": files, **(extra or {})}, indent=1))


def read_folder_seal(folder: Path) -> dict | None:
    try:
        seal = json.loads((Path(folder) / FOLDER_SEAL).read_text())
    except (OSError, ValueError):
        return None
    return seal if isinstance(seal, dict) and isinstance(seal.get("files"), dict) else None


def folder_seal_problem(folder: Path) -> str | None:
    """What is wrong with a sealed cache folder (None: whole): a file missing, added, of
    another size, or (mtime moved) with other bytes. `UNSEALED` when it has no seal."""
    folder = Path(folder)
    seal = read_folder_seal(folder)
    if seal is None:
        return UNSEALED
    recorded: dict = seal["files"]
    present = {p.relative_to(folder).as_posix(): p for p in _folder_files(folder)}
    for name in sorted(set(present) - set(recorded)):
        return f"{name} was not written by the conversion"
    for name, want in recorded.items():
        p = present.get(name)
        if p is None:
            return f"{name} is missing"
        try:
            st = os.stat(p)
            if st.st_size != want.get("size"):
                return f"{name} is {st.st_size:,} bytes, {want.get('size')} when written"
            if st.st_mtime_ns != want.get("mtime_ns") and xxh3_file(p) != want.get("xxh3_128"):
                return f"{name}'s bytes differ from those written (digest mismatch)"
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
    return None
