"""bench/README.md is generated from the committed results JSON: a hand edit or a stale table fails here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.readme import BENCH, main, render, results_files


def test_committed_bench_readme_is_what_the_results_give():
    committed = (BENCH / "README.md").read_text(encoding="utf-8")
    assert committed == render(), "bench/README.md is stale or hand-edited: run `python -m bench.readme`"


def test_a_changed_measurement_changes_the_readme(tmp_path: Path):
    for p in results_files():
        shutil.copy(p, tmp_path / p.name)
    data = json.loads((tmp_path / "results.json").read_text())
    data["rows"][0]["ratio"] = {"median": 0.123, "lo": 0.1, "hi": 0.2, "n": 3}
    (tmp_path / "results.json").write_text(json.dumps(data))
    text = render(tmp_path)
    assert text != render()
    assert f"| {data['rows'][0]['row']} | 0.12 [0.10–0.20] |" in text


def test_run_facts_are_shown_and_missing_ones_said(tmp_path: Path):
    (tmp_path / "results.json").write_text(json.dumps(
        {"date": "2030-01-02", "machine": "m68k, 1 core", "rows": [{"row": "1. x", "ratio": None, "target": "t", "met": True}]}))
    (tmp_path / "results-other.json").write_text(json.dumps([{"model": "a", "device": "cpu"}]))
    (tmp_path / "results-smoke.json").write_text(json.dumps({"rows": [{"row": "smoke row", "target": "", "met": None}]}))
    text = render(tmp_path)
    assert "date 2030-01-02; machine: m68k, 1 core" in text
    assert "date not recorded in this file; machine not recorded in this file" in text  # results-other.json
    assert "smoke row" not in text  # smoke runs measure nothing


def test_check_mode_says_whether_the_file_is_stale():
    assert main(["--check"]) == 0
