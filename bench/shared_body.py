"""Bench row 8: twenty variants of one Qwen2-7B-shaped bf16 base in the shared layout.

    python -m bench.shared_body             # ~15 GB subject (shared with row 7), ~45 GB free disk
    python -m bench.shared_body --tiny      # Qwen2's vocabulary, 2 tiny layers: the code path in a minute

Ten language subsets (wordfreq text of 10 languages, counted once with the real Qwen2 tokenizer
and cached) × multiples 8 and 64 = 20 variants, built the way the pipeline builds them: the
base's body written and proved once into a store, then per variant select -> rebuild the
tokenizer -> vocab shard + hard-linked body -> the streamed proof resting on the proved body,
then `sync`. The baseline is one plain buffered copy of the base (every file, then `sync`),
each side after the page cache is dropped (as root).

Targets: the whole run <= 2 x one plain copy of the base; registry bytes on disk (each inode
once) <= body + 20 x the mean vocab shard x 1.05; every variant proved; peak RSS <= 1 GB.
Writes bench/results-shared-body.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

from bench import big_model, subjects
from bench.measure import Stats, dump, run_child

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results-shared-body.json"
LANGS = ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "ru", "cs"]
MULTIPLES = (8, 64)
COUNT_LINES = 20_000
GB = 1e9


def counts_per_language(base: Path, work: Path) -> dict[str, str]:
    """One counts table per language (cached): 20 k wordfreq lines through the base's tokenizer."""
    from tasks.engine.counting.tokens import count_tokens, write_counts

    work.mkdir(parents=True, exist_ok=True)
    out = {}
    for lang in LANGS:
        path = work / f"{lang}-{COUNT_LINES // 1000}k.parquet"
        if not path.exists():
            lines = subjects.text_file(lang, 3).read_text().splitlines()[:COUNT_LINES]
            write_counts(count_tokens(base / "tokenizer.json", lines, f"bench {lang}"), base / "tokenizer.json", path)
        out[lang] = str(path)
    return out


def run_side(base: str, counts: dict, store: str, registry: str, heldout: str):
    """The pipeline's work for 20 variants of one base, in the shared layout, then sync."""
    import transformers  # noqa: F401 - imports are per process, not per variant: a pipeline worker has them

    from tasks.engine.checkpoint.body import body_tensors, ensure_body
    from tasks.engine.selection.policy import SelectionPolicy
    from tasks.engine.trim import apply_selection, select_for_model
    from tasks.engine.verify.proof import prove_variant

    lines = [x for x in Path(heldout).read_text().splitlines() if x][:200]

    def section() -> dict:
        split: dict[str, float] = {"body": 0.0, "select": 0.0, "write": 0.0, "prove": 0.0, "sync": 0.0}
        t = time.perf_counter()
        body = ensure_body(Path(base), Path(store), body_tensors(Path(base)), identity="bench qwen2-7b-shaped")
        split["body"] = time.perf_counter() - t
        variants, proof_bytes = [], 0
        for lang in LANGS:
            for multiple in MULTIPLES:
                t = time.perf_counter()
                sel = select_for_model(Path(base), [Path(counts[lang])], SelectionPolicy(min_count=2), multiple)
                split["select"] += time.perf_counter() - t
                t = time.perf_counter()
                out = Path(registry) / f"{lang}-v{multiple}"
                res = apply_selection(Path(base), sel, out, layout="shared", body=body, remember_base_digests=True,
                                      durable=False)
                split["write"] += time.perf_counter() - t
                t = time.perf_counter()
                proof = prove_variant(Path(base), out, {lang: lines}, body=body)
                split["prove"] += time.perf_counter() - t
                assert proof.passed, proof.failures()
                proof_bytes += proof.bytes_read
                variants.append({"variant": out.name, "vocab_after": sel.size, "own_bytes": res.surgery.own_bytes,
                                 "placed": res.surgery.body_placed})
        t = time.perf_counter()
        os.sync()
        split["sync"] = time.perf_counter() - t
        return {"split_s": split, "variants": variants, "proof_bytes_read": proof_bytes, "body_bytes": body.file_bytes,
                "body_digest": body.digest}

    return section


def bench_shared_body(tiny: bool = False) -> list[dict]:
    if tiny:
        big_model.SUBJECT, big_model.WORK = subjects.CACHE / "qwen2-vocab-tiny", subjects.CACHE / "big-model-work-tiny"
        big_model.HIDDEN, big_model.INTER, big_model.LAYERS, big_model.HEADS, big_model.KV_HEADS = 64, 128, 2, 4, 2
    global RESULTS
    if tiny:
        RESULTS = RESULTS.with_name("results-shared-body-tiny.json")
    if subjects.qwen2_tokenizer() is None:
        print("row 8 skipped: ../shared/data/tokenizers/gguf (the Qwen2 tokenizer) is absent")
        return []
    base_bytes = big_model.subject_bytes()
    need = (0 if (big_model.SUBJECT / "config.json").exists() else base_bytes) + 2 * base_bytes + 2 * GB
    free = shutil.disk_usage(subjects.CACHE.parent).free
    if free < need:
        print(f"row 8 skipped: needs {need / GB:.1f} GB free, has {free / GB:.1f} GB")
        return []
    base = big_model.build_subject()
    work = big_model.WORK / "shared-body"
    counts = counts_per_language(base, work / "counts")
    heldout = work / "heldout-en.txt"
    heldout.write_text("\n".join(subjects.text_file("en", 3).read_text().splitlines()[COUNT_LINES:COUNT_LINES + 500]) + "\n")
    store, registry, copy = work / "bodies", work / "registry", work / "copy"
    try:
        for p in (store, registry, copy):
            shutil.rmtree(p, ignore_errors=True)
        cold = big_model.drop_page_cache()
        plain = run_child("bench.big_model:copy_side", timeout=3600, src=str(base), dst=str(copy), kernel=False)
        shutil.rmtree(copy, ignore_errors=True)
        cold = big_model.drop_page_cache() and cold
        side = run_child("bench.shared_body:run_side", timeout=7200, base=str(base), counts=counts, store=str(store),
                         registry=str(registry), heldout=str(heldout))
        from tasks.pipeline.report.disk_usage import disk_usage

        on_disk = disk_usage(registry)  # the variants: body files are links to the store's
        with_store = disk_usage(work, skip_hidden=False)
        stored = disk_usage(store)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(registry, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
    x = side.extra
    n = len(x["variants"])
    vocab_mean = sum(v["own_bytes"] for v in x["variants"]) / n
    disk_target = x["body_bytes"] + n * vocab_mean * 1.05
    ratio = side.seconds / plain.seconds
    rows = [
        {"row": f"8. {n} variants of a Qwen2-7B-shaped bf16 base ({base_bytes / GB:.1f} GB), shared layout: "
                "whole run / one plain copy of the base", "ratio": Stats.of([ratio]).__dict__, "target": "≤ 2.00", "met": ratio <= 2.0,
         "run_s": side.seconds, "plain_copy_s": plain.seconds, "split_s": x["split_s"],
         "per_variant_s": (side.seconds - x["split_s"]["body"]) / n, "proof_bytes_read": x["proof_bytes_read"]},
        {"row": "8. same, registry bytes on disk / (body + 20 × mean vocab shard)",
         "ratio": Stats.of([on_disk.disk_bytes / (x["body_bytes"] + n * vocab_mean)]).__dict__, "target": "≤ 1.05",
         "met": on_disk.disk_bytes <= disk_target, "registry_logical_bytes": on_disk.logical_bytes,
         "registry_disk_bytes": on_disk.disk_bytes, "store_disk_bytes": stored.disk_bytes,
         "work_disk_bytes": with_store.disk_bytes, "body_bytes": x["body_bytes"], "mean_vocab_shard_bytes": vocab_mean},
        {"row": "8. same, peak RSS of the trimworks process (GB)", "ratio": Stats.of([side.peak_bytes / GB]).__dict__,
         "target": "≤ 1.00 GB",
         "met": side.peak_bytes / GB <= 1.0},
    ]
    dump(RESULTS, {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GB:.0f} GB RAM, Python {platform.python_version()}",
                   "page_cache_dropped_before_each_side": cold, "variants": x["variants"], "rows": rows})
    for r in rows:
        print(f"{r['row']}: {r['ratio']['median']:.2f}  target {r['target']}  {'met' if r['met'] else 'NOT met'}")
    print(f"run {side.seconds:.1f}s {x['split_s']}; plain copy {plain.seconds:.1f}s; "
          f"registry {on_disk.line()}; wrote {RESULTS}")
    if not tiny:
        from bench.readme import write_readme

        print(f"wrote {write_readme()}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="Qwen2's vocabulary, 2 tiny layers: the code path in a minute")
    args = ap.parse_args()
    bench_shared_body(tiny=args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
