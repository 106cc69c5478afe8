"""Row 1: counting tokens against the tokenizer's own batch encoder (its physical limit),
and the anchor of row 6 (200 k lines counted from scratch)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from bench.measure import Stats, interleaved, ratios, run_child
from bench.report import row


def _lines(text: str, max_lines: int) -> list[str]:
    return Path(text).read_text().splitlines()[:max_lines]


def raw_encode(tokenizer: str, text: str, max_lines: int) -> Callable[[], dict]:
    """The limit: the same tokenizer's encode_batch_fast over the same batches, results dropped."""
    from tasks.engine.counting.tokens import batched, load_plain_tokenizer

    lines = _lines(text, max_lines)

    def section() -> dict:
        tok = load_plain_tokenizer(Path(tokenizer))
        for b in batched(lines, 4096):
            tok.encode_batch_fast(b, add_special_tokens=False)
        return {}

    return section


def trimworks_count(tokenizer: str, text: str, max_lines: int) -> Callable[[], dict]:
    """trimworks' counting: encode and tally every token id."""
    from tasks.engine.counting.tokens import count_tokens

    lines = _lines(text, max_lines)

    def section() -> dict:
        return {"tokens": count_tokens(Path(tokenizer), lines, "bench").tokens}

    return section


def bench_counting(tok: Path, text: Path, label: str, reps: int, max_lines: int) -> list[dict]:
    out = []
    args = {"tokenizer": str(tok), "text": str(text), "max_lines": max_lines}
    for threads in (1, 2):
        env = {"RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true",
               "BENCH_CPUS": ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:threads])}
        res = interleaved(reps, raw=lambda: run_child("bench.counting:raw_encode", env, **args),
                          count=lambda: run_child("bench.counting:trimworks_count", env, **args))
        tokens = res["count"][0].extra["tokens"]
        r = ratios(res["raw"], res["count"])  # raw time / count time = count throughput / raw throughput
        out.append(row(
            f"1. counting ({label}, {threads} core{'s' if threads > 1 else ''})", r, ">= 0.80x of raw encode_batch",
            r.median >= 0.8,
            trimworks_tokens_per_s=Stats.of([tokens / s.seconds for s in res["count"]]).__dict__,
            raw_tokens_per_s=Stats.of([tokens / s.seconds for s in res["raw"]]).__dict__, tokens=tokens,
        ))
    return out


def bench_anchor(tok: Path, text: Path, per_variant_s: float | None) -> dict:
    """The published trimming of 5,526 models: ~9 min/model for 200 k texts, counting redone each time."""
    s = run_child("bench.counting:trimworks_count", {"BENCH_CPUS": ",".join(map(str, sorted(os.sched_getaffinity(0))))},
                  tokenizer=str(tok), text=str(text), max_lines=200_000)
    total = s.seconds + (per_variant_s or 0)
    return {"row": "6. anchor: one variant with 200 k lines counted from scratch (vs ~9 min/model published)",
            "ratio": {"median": 540 / total, "lo": None, "hi": None, "n": 1}, "target": "report (x faster than 9 min)",
            "met": None, "count_200k_lines_s": s.seconds, "build_per_variant_s": per_variant_s, "total_s": total}
