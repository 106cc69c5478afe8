"""The benchmark's smoke mode runs in the suite, so `make bench` cannot rot. No timing is
asserted here (machines are noisy): only that every comparison ran and produced ratios."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.subjects import REPO


def test_bench_smoke_runs_and_reports_ratios():
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--smoke"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((REPO / "bench" / "results-smoke.json").read_text())
    names = [r["row"] for r in result["rows"]]
    assert any(n.startswith("1. counting") for n in names) and any(n.startswith("2. surgery") for n in names)
    assert any(n.startswith("3. hand-written") for n in names)
    for r in result["rows"]:
        assert r["ratio"]["median"] > 0 and r["target"]
    assert "comparison" in proc.stdout and "met" in proc.stdout
