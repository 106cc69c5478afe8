"""Result rows and the printed table."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import subjects
from bench.measure import Stats

WORK = subjects.CACHE / "work"


def row(name: str, measured: Stats, target: str, met: bool | None, **details) -> dict:
    return {"row": name, "ratio": measured.__dict__, "target": target, "met": met, **details}


def fresh(path: Path) -> Path:
    """`path` removed (a side's output from the previous repetition)."""
    shutil.rmtree(path, ignore_errors=True)
    return path


def print_table(rows: list[dict]) -> None:
    print(f"\n{'comparison':<112} {'ratio median [min–max]':>26}  {'target':<28} met")
    print("-" * 175)
    for r in rows:
        ratio = r.get("ratio")
        if ratio and ratio.get("median") is not None:
            lo, hi = ratio.get("lo"), ratio.get("hi")
            text = f"{ratio['median']:.2f}x" + (f" [{lo:.2f}–{hi:.2f}]" if lo is not None else "")
        else:
            text = "–"
        met = {True: "yes", False: "NO", None: ""}[r.get("met")]
        print(f"{r['row'][:112]:<112} {text:>26}  {r['target']:<28} {met}")
        for key in ("why_not", "variants_per_hour", "seconds_per_variant", "run_peak_rss_bytes", "exact", "extrapolated_5000_overhead_s",
                    "per_variant_overhead_ms", "trimworks_tokens_per_s", "vocabtrimmer_exactness", "trimworks_exactness"):
            if key in r:
                val = r[key]
                if isinstance(val, dict) and "median" in val:
                    val = f"{val['median']:,.1f} [{val['lo']:,.1f}–{val['hi']:,.1f}]"
                elif isinstance(val, float):
                    val = f"{val:,.1f}"
                print(f"    {key}: {val}")
