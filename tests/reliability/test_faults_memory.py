"""Bounded memory on hostile corpora (issue 12). Before: one 200 MB line took more than
10 GB before it was killed (3.2 GB for a 20 MB line): the whole line was read, decoded and
tokenized at once. Now lines are read at most max_line_bytes at a time; longer ones are
skipped with a counted warning."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tasks.engine.counting.tokens import iter_text_file

pytestmark = pytest.mark.slow


def test_a_200mb_line_is_skipped_under_an_address_space_cap(tmp_path, toy_model_session):
    corpus = tmp_path / "hostile.txt"
    with corpus.open("wb") as fh:
        fh.write(b"The first line is fine.\n")
        block = b"abcdefgh " * (1 << 17)  # ~1.1 MB, no newline
        for _ in range(180):
            fh.write(block)
        fh.write(b"\nThe last line is fine too.\n")
    assert corpus.stat().st_size > 200_000_000
    headroom = 300 << 20  # below what reading and decoding the line at once needs (2x its size), let alone tokenizing it
    script = textwrap.dedent(f"""
        import os, resource
        from pathlib import Path
        from tasks.engine.counting.tokens import count_tokens, iter_text_file

        def vm_bytes():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024

        from tokenizers import Tokenizer
        Tokenizer.from_file({str(toy_model_session / "tokenizer.json")!r}).encode_batch(["warm up the thread pool"])
        cap = vm_bytes() + {headroom}
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        try:
            bytearray(2 * {corpus.stat().st_size})  # the line read and decoded would not fit under the cap
            raise SystemExit("cap too loose for this test")
        except MemoryError:
            pass
        counts = count_tokens(Path({str(toy_model_session / "tokenizer.json")!r}), iter_text_file(Path({str(corpus)!r})), "hostile")
        print("lines", counts.lines)
    """)
    env = {"MALLOC_ARENA_MAX": "2", "RAYON_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    import os

    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lines 2" in proc.stdout
    assert "skipped a line longer than" in proc.stderr and "hostile.txt:2" in proc.stderr


def test_line_limit_is_configurable_and_counted(tmp_path, caplog):
    f = tmp_path / "c.txt"
    f.write_text("short\n" + "x" * 500 + "\nalso short\n" + "y" * 300)
    with caplog.at_level("WARNING"):
        assert list(iter_text_file(f, max_line_bytes=200)) == ["short", "also short"]
    assert "2 line(s) longer than 200 bytes were skipped" in caplog.text
    assert list(iter_text_file(f, max_line_bytes=1000))[1] == "x" * 500
