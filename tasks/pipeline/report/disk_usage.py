"""How much a registry holds, logically and on disk: variants share their base's body by hard
links, so the bytes on disk count each inode once while the logical size counts every file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DiskUsage:
    files: int
    logical_bytes: int  # what `du --apparent-size` of every variant added up would say
    disk_bytes: int  # each inode once (hard-linked bodies counted once)

    @property
    def shared_ratio(self) -> float:
        return self.logical_bytes / self.disk_bytes if self.disk_bytes else 1.0

    def line(self) -> str:
        return (f"{self.files:,} files, {human_bytes(self.logical_bytes)} logical, {human_bytes(self.disk_bytes)} on disk"
                + (f" ({self.shared_ratio:.1f}x shared)" if self.disk_bytes and self.shared_ratio > 1.05 else ""))


def disk_usage(root: Path, skip_hidden: bool = False) -> DiskUsage:
    """Walk `root` (not following links). `skip_hidden`: leave out dot-folders at the top
    (staging, incoming, the body store) to measure published variants only."""
    files = logical = disk = 0
    seen: set[tuple[int, int]] = set()
    root = Path(root)
    if not root.is_dir():
        return DiskUsage(0, 0, 0)
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_hidden and Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            files += 1
            logical += st.st_size
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                disk += st.st_blocks * 512 if st.st_blocks else st.st_size
    return DiskUsage(files, logical, disk)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"
