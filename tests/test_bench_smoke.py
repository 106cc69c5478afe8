"""The benchmark's smoke mode runs in the suite, so `make bench` cannot rot. No timing is
asserted here (machines are noisy): only that every comparison ran and produced ratios or
figures. Row 4 runs its trimworks side only unless vocabtrimmer's venv exists already
(smoke mode installs nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.report import WORK
from tests.subjects import CLI_SERVER, REPO


def test_bench_smoke_runs_and_reports_ratios():
    home = Path(os.environ.get("TRIMWORKS_TEST_PREFECT_HOME", WORK / "prefect-home-smoke"))
    env = {**os.environ, "PREFECT_API_URL": CLI_SERVER.start(home)}  # this worker's server for rows 5 and 6
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--smoke"], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((REPO / "bench" / "results-smoke.json").read_text())
    rows = {r["row"]: r for r in result["rows"]}
    for prefix in ("1. counting", "2. surgery", "3. hand-written", "4. vocabtrimmer", "4. hf-trim", "5. publish_all",
                   "5. publish_all at scale",
                   "6. end to end: default manifest", "6. end to end: XLM-R"):
        assert any(n.startswith(prefix) for n in rows), (prefix, list(rows))
    for r in rows.values():
        assert r["target"]
        if r["ratio"] is not None:
            assert r["ratio"]["median"] > 0
        elif r["row"].startswith("6."):
            assert r["variants"] == 1 and r["seconds"] > 0
        elif r["row"].startswith("5. publish_all at scale"):  # the flow on its temporary server, measured whole
            assert r["variants"] == 16 and r["met"] and r["database_locked_lines"] == 0
            assert r["server_peak_rss_bytes"] > 0 and r["run_peak_rss_bytes"] > r["flow_peak_rss_bytes"], r
        else:
            assert r["why_not"]
    vt = next(r for n, r in rows.items() if n.startswith("4. vocabtrimmer"))
    exact = vt["trimworks_exactness"]  # trimworks' own output, checked through token strings
    assert exact["lines_tokenized_identically_pct"] > 0 and exact["max_abs_logit_diff_float64"] < 1e-6, exact
    assert "comparison" in proc.stdout and "met" in proc.stdout
