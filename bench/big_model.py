"""Bench row 7: a Qwen2-7B-shaped bf16 checkpoint trimmed to 32,768 tokens and proved, end to end.

    python -m bench.big_model            # ~15 GB subject (cached in bench/.cache), ~45 GB free disk needed
    python -m bench.big_model --reps 2

The subject has Qwen2-7B's shapes (vocab 152,064 x hidden 3,584, 28 layers, untied head,
bf16, 4 shards, ~15.2 GB) with random weights, written by streaming (never in memory), and
the real Qwen2 tokenizer from ../shared. Each repetition runs, in fresh processes:

* trimworks: select 32,768 tokens (counts of 200 k English lines, cached) -> rebuild the
  tokenizer -> surgery -> the streamed structural proof (every tensor digested, every kept
  row compared, configs, tokenization of 2,000 held-out lines), then `sync`;
* a plain copy of the same output bytes (every file of the trimmed folder, read and
  written through a 16 MiB buffer), then `sync`; and the kernel's copy (`copy_file_range`,
  what `cp` does) for reference.

Before each side the page cache is written back and dropped (as root; recorded in the results),
so both read their input from disk. Library imports happen in the trim side's setup, as in a
pipeline worker that has them loaded already.

Targets: wall time <= 1.5 x the plain copy, peak RSS <= 1 GB. Writes bench/results-big-model.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
import zlib
from datetime import date
from pathlib import Path

import numpy as np

from bench import subjects
from bench.measure import Stats, dump, ratios, run_child

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results-big-model.json"
SUBJECT = subjects.CACHE / "qwen2-7b-shaped"
WORK = subjects.CACHE / "big-model-work"
GB = 1e9

VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 152_064, 3_584, 18_944, 28, 28, 4
KEEP = 32_768
SHARDS = 4


def tensor_shapes() -> list[tuple[str, tuple[int, ...]]]:
    """Qwen2-7B's tensors in checkpoint order."""
    kv = HIDDEN // HEADS * KV_HEADS
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (HIDDEN,)),
                (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)), (p + "self_attn.q_proj.bias", (HIDDEN,)),
                (p + "self_attn.k_proj.weight", (kv, HIDDEN)), (p + "self_attn.k_proj.bias", (kv,)),
                (p + "self_attn.v_proj.weight", (kv, HIDDEN)), (p + "self_attn.v_proj.bias", (kv,)),
                (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
                (p + "post_attention_layernorm.weight", (HIDDEN,)),
                (p + "mlp.gate_proj.weight", (INTER, HIDDEN)), (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
                (p + "mlp.down_proj.weight", (HIDDEN, INTER))]
    out += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    return out


def subject_bytes() -> int:
    return sum(math.prod(s) * 2 for _, s in tensor_shapes())


def _random_bf16(seed: int, n_items: int, out) -> None:
    """Random finite bf16 values of magnitude 2^-7..2^-4 (either sign), streamed in 16 MiB blocks."""
    rng = np.random.default_rng(seed)
    block = 8 << 20  # items
    left = n_items
    while left:
        k = min(block, left)
        x = rng.integers(0, 1 << 16, size=k, dtype=np.uint16)
        x &= 0x81FF  # sign, two low exponent bits, mantissa
        x |= 0x3C00  # exponent 120..123
        out.write(x.tobytes())
        left -= k


def build_subject() -> Path:
    """The checkpoint folder, written once by streaming (peak memory: one block)."""
    import functools

    from tasks.engine.checkpoint.safetensors_io import PlannedTensor, write_safetensors

    if (SUBJECT / "config.json").exists():
        return SUBJECT
    tok = subjects.qwen2_tokenizer()
    if tok is None:
        raise FileNotFoundError("../shared/data/tokenizers/gguf is absent: the Qwen2 tokenizer is needed")
    tmp = SUBJECT.with_name(f".{SUBJECT.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(tok.parent, tmp)
    shapes = tensor_shapes()
    total = subject_bytes()
    per_shard, shards, cur, size = total / SHARDS, [], [], 0
    for name, shape in shapes:
        cur.append((name, shape))
        size += math.prod(shape) * 2
        if size >= per_shard * (len(shards) + 1) and len(shards) < SHARDS - 1:
            shards.append(cur)
            cur = []
    shards.append(cur)
    weight_map = {}
    for i, group in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        planned = [PlannedTensor(n, "BF16", s, functools.partial(_random_bf16, zlib.crc32(n.encode()), math.prod(s)))
                   for n, s in group]
        write_safetensors(tmp / fname, planned, {"format": "pt"})
        weight_map.update({n: fname for n, _ in group})
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "bos_token_id": 151643, "eos_token_id": 151645, "use_sliding_window": False, "sliding_window": 131072,
        "max_window_layers": LAYERS, "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    (tmp / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643, "do_sample": True}, indent=2))
    tmp.rename(SUBJECT)
    return SUBJECT


def counts_and_heldout(text: Path) -> tuple[Path, Path]:
    """Counts of 200 k English lines for the Qwen2 tokenizer (cached) and 2,000 held-out lines."""
    from tasks.engine.counting.tokens import count_tokens, write_counts

    WORK.mkdir(parents=True, exist_ok=True)
    counts, heldout = WORK / "en-200k.parquet", WORK / "heldout-2000.txt"
    lines = text.read_text().splitlines()
    if not counts.exists():
        c = count_tokens(SUBJECT / "tokenizer.json", lines[:200_000], "bench en 200k")
        write_counts(c, SUBJECT / "tokenizer.json", counts)
    if not heldout.exists():
        heldout.write_text("\n".join(lines[200_000:202_000]) + "\n")
    return counts, heldout


def trim_side(base: str, counts: str, heldout: str, keep: int, out: str):
    """trimworks: select -> rebuild the tokenizer -> surgery -> the streamed proof, then sync;
    then (timed apart) the proof of a second variant of this base, base digests remembered."""
    import transformers  # noqa: F401 - imports are per process, not per variant: a pipeline worker has them
    from transformers import AutoTokenizer  # noqa: F401 - the chat-template check's loader
    from transformers.models.qwen2 import modeling_qwen2  # noqa: F401 - the load check's model class

    from tasks.engine.verify.proof import prove_variant
    from tasks.engine.selection.policy import SelectionPolicy
    from tasks.engine.trim import apply_selection, select_for_model

    lines = [x for x in Path(heldout).read_text().splitlines() if x]

    def section() -> dict:
        extra: dict = {}
        t = time.perf_counter()
        sel = select_for_model(Path(base), [Path(counts)], SelectionPolicy(top_k=keep), 64)
        res = apply_selection(Path(base), sel, Path(out), remember_base_digests=True)  # as the pipeline does
        extra["trim_s"] = time.perf_counter() - t
        t = time.perf_counter()
        proof = prove_variant(Path(base), Path(out), {"en": lines})
        extra["proof_s"] = time.perf_counter() - t
        assert proof.passed, proof.failures()
        extra.update(proof_bytes_read=proof.bytes_read, checks=[(c.name, c.passed, c.items) for c in proof.checks],
                     vocab_after=sel.size, bytes_after=res.surgery.bytes_after)
        t = time.perf_counter()
        os.sync()
        extra["sync_s"] = time.perf_counter() - t
        extra["total_s"] = extra["trim_s"] + extra["proof_s"] + extra["sync_s"]
        t = time.perf_counter()
        again = prove_variant(Path(base), Path(out), {"en": lines})
        extra["proof_again_s"] = time.perf_counter() - t  # a second variant of this base: base digests remembered
        extra["proof_again_bytes_read"] = again.bytes_read
        return extra

    return section


def copy_side(src: str, dst: str, kernel: bool):
    """A plain copy of every file of the trimmed folder (16 MiB buffer), or the kernel's
    (`copy_file_range`, as cp does), then sync."""

    def section() -> dict:
        a_dir, b_dir = Path(src), Path(dst)
        b_dir.mkdir()
        buf = memoryview(bytearray(16 << 20))
        for f in sorted(a_dir.iterdir()):
            if kernel:
                shutil.copyfile(f, b_dir / f.name)
            else:
                with f.open("rb", buffering=0) as a, (b_dir / f.name).open("wb", buffering=0) as b:
                    while n := a.readinto(buf):
                        b.write(buf[:n])
        os.sync()
        return {}

    return section


def drop_page_cache() -> bool:
    """Write back and drop the page cache (root only), so each side reads its input from disk:
    otherwise the copy reads the output the trim has just written from memory while the trim
    read the 15 GB base from disk. False where it is not allowed (the sides are then warm)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def _seconds(s) -> float:
    """trimworks: trim + proof + sync (the timed section also proves a second time, untimed here)."""
    return s.extra.get("total_s", s.seconds)


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.iterdir() if f.is_file())


def bench_big_model(reps: int = 1, kernel_copy: bool = True, tiny: bool = False) -> list[dict]:
    """Row 7's rows (the bench table's format: row, ratio, target, met, details); [] when skipped.
    Also writes bench/results-big-model.json. Each side runs in fresh child processes."""
    global SUBJECT, WORK, RESULTS, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS
    if tiny:
        SUBJECT, WORK = subjects.CACHE / "qwen2-vocab-tiny", subjects.CACHE / "big-model-work-tiny"
        RESULTS = RESULTS.with_name("results-big-model-tiny.json")
        HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
    subjects.CACHE.mkdir(parents=True, exist_ok=True)
    out_size = subject_bytes() - 2 * (VOCAB - KEEP) * HIDDEN * 2
    need = (0 if (SUBJECT / "config.json").exists() else subject_bytes()) + 2 * out_size + 2 * GB
    free = shutil.disk_usage(subjects.CACHE).free
    if free < need:
        msg = (f"row 7 skipped: needs {need / GB:.1f} GB free in {subjects.CACHE} "
               f"(subject {subject_bytes() / GB:.1f} GB, trimmed output and its copy {out_size / GB:.1f} GB each), "
               f"has {free / GB:.1f} GB")
        print(msg)
        dump(RESULTS, {"date": str(date.today()), "rows": [{"row": "7. Qwen2-7B-shaped trim + proof", "ratio": None,
                                                           "target": "≤ 1.50", "met": None, "skipped": msg}]})
        return []
    if subjects.qwen2_tokenizer() is None:
        print("row 7 skipped: ../shared/data/tokenizers/gguf (the Qwen2 tokenizer) is absent")
        return []
    t0 = time.perf_counter()
    build_subject()
    print(f"subject {SUBJECT} ready ({subject_bytes() / GB:.1f} GB) in {time.perf_counter() - t0:.0f}s")
    counts, heldout = counts_and_heldout(subjects.text_file("en", 20))
    out, copy = WORK / "trimmed", WORK / "copy"
    trims, plains, kernels = [], [], []
    cold = True
    try:
        for _ in range(reps):
            shutil.rmtree(out, ignore_errors=True)
            cold = drop_page_cache()
            trims.append(run_child("bench.big_model:trim_side", timeout=3600, base=str(SUBJECT), counts=str(counts),
                                   heldout=str(heldout), keep=KEEP, out=str(out)))
            for kernel, into in ((False, plains), (True, kernels)):
                if kernel and not kernel_copy:
                    continue
                shutil.rmtree(copy, ignore_errors=True)
                cold = drop_page_cache() and cold
                into.append(run_child("bench.big_model:copy_side", timeout=3600, src=str(out), dst=str(copy), kernel=kernel))
                shutil.rmtree(copy, ignore_errors=True)
        out_bytes = _dir_bytes(out)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)  # 13.6 GB: never left behind
    ratio = ratios(trims, plains, key=_seconds)
    peak = Stats.of([s.peak_bytes / GB for s in trims])
    t = trims[-1].extra
    rows = [
        {"row": "7. Qwen2-7B-shaped bf16 (15.2 GB) → 32,768 tokens, trim + proof / plain buffered copy of the output bytes",
         "ratio": ratio.__dict__, "target": "≤ 1.50", "met": ratio.median <= 1.5,
         "trimworks_s": Stats.of([_seconds(s) for s in trims]).__dict__, "plain_copy_s": Stats.of([s.seconds for s in plains]).__dict__,
         "output_bytes": out_bytes, "trim_s": t["trim_s"], "proof_s": t["proof_s"], "sync_s": t["sync_s"],
         "proof_bytes_read": t["proof_bytes_read"], "proof_again_s": t["proof_again_s"],
         "proof_again_bytes_read": t["proof_again_bytes_read"], "checks": t["checks"], "vocab_after": t["vocab_after"]},
        {"row": "7. same, peak RSS of the trimworks process (GB)", "ratio": peak.__dict__, "target": "≤ 1.00 GB",
         "met": peak.median <= 1.0},
    ]
    if kernels:
        kr = ratios(trims, kernels, key=_seconds)
        rows.append({"row": "7. same, trim + proof / kernel copy (copy_file_range, as cp does), for reference",
                     "ratio": kr.__dict__, "target": "report", "met": None,
                     "kernel_copy_s": Stats.of([s.seconds for s in kernels]).__dict__})
    dump(RESULTS, {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GB:.0f} GB RAM, Python {platform.python_version()}",
                   "reps": reps, "page_cache_dropped_before_each_side": cold, "rows": rows})
    for r in rows:
        print(f"{r['row']}: {r['ratio']['median']:.2f} [{r['ratio']['lo']:.2f}–{r['ratio']['hi']:.2f}]  target {r['target']}"
              f"  {'' if r['met'] is None else ('met' if r['met'] else 'NOT met')}")
    print(f"trimworks {_seconds(trims[-1]):.1f}s (trim {t['trim_s']:.1f}s, proof {t['proof_s']:.1f}s reading "
          f"{t['proof_bytes_read'] / GB:.1f} GB, sync {t['sync_s']:.1f}s); plain copy {plains[-1].seconds:.1f}s of "
          f"{out_bytes / GB:.1f} GB; proof of a second variant (base digests remembered) {t['proof_again_s']:.1f}s")
    print(f"wrote {RESULTS}")
    if not tiny:  # the tiny run checks the code path, measures nothing
        from bench.readme import write_readme

        print(f"wrote {write_readme()}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="Qwen2's vocab, 2 tiny layers: checks the code path in a minute")
    ap.add_argument("--no-kernel-copy", action="store_true", help="skip the reference copy_file_range baseline")
    args = ap.parse_args()
    bench_big_model(args.reps, kernel_copy=not args.no_kernel_copy, tiny=args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
