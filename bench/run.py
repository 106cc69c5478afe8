"""trimworks benchmarks: every stage against its physical limit and against what users would
do instead. Each comparison runs side by side in one process run (interleaved repetitions in
fresh child processes) and reports ratios: median [min–max] of the paired ratios.

    python -m bench.run            # make bench        (full: real shapes, >= 20 MB of text)
    python -m bench.run --smoke    # make bench-smoke  (tiny subjects; runs in the test suite)

Each row is a module (bench/counting.py, surgery.py, tools.py, orchestration.py,
end_to_end.py) whose sides are functions, run by import path in a child process
(`python -m bench.child bench.surgery:surgery '{...}'`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date

from bench import subjects
from bench.counting import bench_anchor, bench_counting
from bench.durable import bench_durable_surgery
from bench.end_to_end import bench_end_to_end
from bench.measure import REPO, dump
from bench.orchestration import bench_orchestration, bench_scale
from bench.report import WORK, print_table
from bench.surgery import bench_surgery, kept_ids
from bench.tools import bench_existing_tools

RESULTS = REPO / "bench" / "results.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", default="123456", help="which rows to run, e.g. 125 (merged into the results file); "
                    "7 (the 7B-shaped subject, ~45 GB of disk) runs only when named")
    args = ap.parse_args()
    smoke = args.smoke
    reps = args.reps or (1 if smoke else 3)
    WORK.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS.with_name("results-smoke.json") if smoke else RESULTS
    previous = json.loads(out_path.read_text()) if out_path.exists() and args.only != "123456" else {"rows": []}
    if "7" not in args.only:  # row 7 is measured on its own (`make bench-big`): keep its last result
        previous["rows"] = previous["rows"] + [r for r in (json.loads(out_path.read_text())["rows"] if out_path.exists() else [])
                                               if r["row"][0] == "7" and r not in previous["rows"]]
    if not smoke and os.environ.pop("PREFECT_API_URL", None):
        print("[bench] PREFECT_API_URL ignored: rows 5 and 6 measure runs on their temporary server", file=sys.stderr)
    if smoke and ("5" in args.only or "6" in args.only) and not os.environ.get("PREFECT_API_URL"):
        # Smoke mode measures nothing, it only runs every row: rows 5 and 6 share one Prefect
        # server (the caller's, when PREFECT_API_URL is set, as in the test suite) instead of
        # starting a temporary one per child (~15 s each on 2 cores). The at-scale row still
        # starts its own (bench_scale), as it measures the server's memory.
        from bench.prefect_server import SharedPrefectServer

        server = SharedPrefectServer()
        os.environ["PREFECT_API_URL"] = server.start(WORK / "prefect-home-smoke")
        try:
            return _rows(args, smoke, reps, out_path, previous)
        finally:
            server.stop()
            os.environ.pop("PREFECT_API_URL", None)
    return _rows(args, smoke, reps, out_path, previous)


def _rows(args: argparse.Namespace, smoke: bool, reps: int, out_path, previous: dict) -> int:
    rows: list[dict] = [r for r in previous["rows"] if r["row"][0] not in args.only]
    t0 = time.perf_counter()

    def save() -> None:  # after every row group: an interrupted run keeps what it measured
        rows.sort(key=lambda r: r["row"][:2])
        dump(out_path, {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                        f"Python {platform.python_version()}", "smoke": smoke, "reps": reps,
                        "seconds": time.perf_counter() - t0, "rows": rows})
        print(f"[bench] {len(rows)} rows measured, {time.perf_counter() - t0:.0f} s in", file=sys.stderr, flush=True)

    xlmr = subjects.xlmr_base_shaped(smoke)
    text = subjects.text_file("en", 1 if smoke else 20)
    if "1" in args.only:
        rows += bench_counting(xlmr / "tokenizer.json", text, "XLM-R Unigram 250k", reps, 10**9)
        qwen = subjects.qwen2_tokenizer() if not smoke else None
        if qwen:
            rows += bench_counting(qwen, text, "Qwen2 byte-level BPE 151k", reps, 10**9)
        if not smoke:  # chunk counting: one and five real tokenizers on 100 MB, in fresh processes
            from bench.chunk_counting import main as chunk_counting, table_rows

            rows += table_rows(chunk_counting(["--megabytes", "100"]))
        save()
    kept_path = kept_ids(xlmr, text, WORK / ("kept-smoke.npy" if smoke else "kept.npy"))
    if "2" in args.only or "3" in args.only:
        rows += bench_surgery(xlmr, kept_path, reps, "XLM-R-base-shaped" + (" (smoke)" if smoke else ""))
        rows += bench_durable_surgery(xlmr, kept_path, reps, "XLM-R-base-shaped" + (" (smoke)" if smoke else ""))
        save()
        qwen_model = subjects.qwen2_half_b_shaped() if not smoke else None
        if qwen_model:
            rows += bench_surgery(qwen_model, kept_ids(qwen_model, text, WORK / "kept-qwen2.npy"), reps,
                                  "Qwen2-0.5B-shaped (tied)")
            save()
    if "4" in args.only:  # smoke mode installs no venv: without one, only the trimworks side runs
        rows += bench_existing_tools(xlmr, text, reps, n_lines=5_000 if smoke else 200_000, install=not smoke)
        save()
    if "5" in args.only:
        rows += bench_orchestration(8 if smoke else 200, reps, expansion_n=400 if smoke else 5000, warm=not smoke)
        rows += bench_scale(16 if smoke else 2000)
        save()
    if "6" in args.only:
        e2e = bench_end_to_end(xlmr, smoke)
        rows += e2e
        if not smoke:
            rows.append(bench_anchor(xlmr / "tokenizer.json", text, e2e[-1]["seconds_per_variant"] if e2e else None))
        save()
    if "7" in args.only:
        from bench.big_model import bench_big_model

        rows += bench_big_model(reps=1, tiny=smoke)
        save()
    print_table(rows)
    print(f"\nwrote {out_path} in {time.perf_counter() - t0:.0f}s")
    if not smoke:  # smoke runs measure nothing: bench/README.md shows measured runs only
        from bench.readme import write_readme

        print(f"wrote {write_readme()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
