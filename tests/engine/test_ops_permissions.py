"""Readable outputs: everything trimworks writes is 0644 / 0755 under the usual umask
(mkstemp alone makes 0600, which another user or a web server cannot read)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tasks.engine.runtime.atomic import atomic_file, readable_mode, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_atomic_file_follows_umask(tmp_path, umask_022):
    write_text_atomic(tmp_path / "a" / "x.md", "hello")
    with atomic_file(tmp_path / "y.bin") as fh:
        fh.write(b"\0")
    assert stat.S_IMODE((tmp_path / "a" / "x.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "y.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    os.umask(0o077)
    assert readable_mode() == 0o600 and readable_mode(is_dir=True) == 0o700  # a strict umask is respected


def test_trimmed_model_folder_is_readable(tmp_path, toy_model, toy_lines, umask_022):
    from tasks.engine.counting.tokens import count_tokens, write_counts
    from tasks.engine.selection.policy import SelectionPolicy
    from tasks.engine.trim import trim_model

    counts = tmp_path / "en.parquet"
    write_counts(count_tokens(toy_model / "tokenizer.json", toy_lines[:300], "toy"), toy_model / "tokenizer.json", counts)
    out = tmp_path / "out"
    trim_model(toy_model, [counts], SelectionPolicy(min_count=1), 8, out)
    got = modes(out)
    bad = {p: oct(m) for p, m in got.items() if m != (0o755 if (out / p).is_dir() else 0o644)}
    assert not bad, bad
    assert stat.S_IMODE(counts.stat().st_mode) == 0o644
