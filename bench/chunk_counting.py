"""Bench row 1, chunk counting: counts from shared chunk counts against raw `encode_batch`.

    python -m bench.chunk_counting                  # 100 MB of English, five real tokenizers
    python -m bench.chunk_counting --megabytes 5    # quicker
    python -m bench.chunk_counting --real           # also: real German text (manpages + gettext)

Each side runs in a fresh child process pinned to the same cores (2 by default):

* raw: `load_plain_tokenizer` + `encode_batch_fast` over every line, for each tokenizer (only the
  encode calls and the load are timed; the ids are then binned outside the clock, to check counts);
* chunks: one chunk pass over the same lines (`count_chunks`, which also keeps the proof sample),
  then for each tokenizer `tokens_from_chunk_counts` (locality analysis, proof on the sample,
  encoding every distinct chunk once).

Ratios: one tokenizer = raw time / (chunk pass + its token pass); five = sum of raw times /
(chunk pass + all five token passes). Counts must be identical to the raw side's. Results go
to bench/results-chunk-counting.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench import subjects
from bench.measure import run_child

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results-chunk-counting.json"
SHARED = REPO.parent / "shared" / "data"
GGUF = {"qwen2": "Qwen2 byte-level BPE 151k", "llama-bpe": "Llama-3 byte-level BPE 128k (digit triples)",
        "gpt-2": "GPT-2 byte-level BPE 50k", "llama-spm": "Llama-2 SentencePiece BPE 32k, byte fallback"}

def raw_side(text: str, tokenizer_json: str, out: str):
    """Raw `encode_batch_fast` over every line; only the load and the encode calls are timed
    (the ids are binned outside the clock, to check the counts)."""
    import itertools

    from tasks.engine.counting.tokens import load_plain_tokenizer

    lines = Path(text).read_text(encoding="utf-8").splitlines()

    def section() -> dict:
        t = time.perf_counter()
        tok = load_plain_tokenizer(Path(tokenizer_json))
        clock = time.perf_counter() - t
        counts = np.zeros(tok.get_vocab_size(with_added_tokens=True), dtype=np.int64)
        for i in range(0, len(lines), 4096):
            t = time.perf_counter()
            encs = tok.encode_batch_fast(lines[i:i + 4096], add_special_tokens=False)
            clock += time.perf_counter() - t
            ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64)
            b = np.bincount(ids, minlength=counts.size)
            counts[: b.size] += b
        np.save(out, counts)
        return {"seconds": clock, "tokens": int(counts.sum())}

    return section


def chunk_side(text: str, tokenizers_json: dict[str, str], out_dir: str):
    """One chunk pass over the lines, then every tokenizer's counts from it (timed apart)."""
    from tasks.engine.counting.chunks import count_chunks, tokens_from_chunk_counts

    lines = Path(text).read_text(encoding="utf-8").splitlines()

    def section() -> dict:
        t = time.perf_counter()
        cc = count_chunks(lines)
        res = {"chunk_pass_s": time.perf_counter() - t, "lines": cc.lines, "chunks": cc.chunks, "distinct": cc.distinct,
               "sample": len(cc.sample), "per_tokenizer": {}}
        for name, path in tokenizers_json.items():
            t = time.perf_counter()
            counts, prov = tokens_from_chunk_counts(Path(path), cc, "bench")
            dt = time.perf_counter() - t
            assert counts is not None, (name, prov)
            np.save(Path(out_dir) / f"{name}.npy", counts.counts)
            res["per_tokenizer"][name] = {"seconds": dt, "method": prov["method"], "proof_lines": prov["proof"]["lines"]}
        return res

    return section


def _child(target: str, cpus: str, **kwargs) -> dict:
    env = {"BENCH_CPUS": cpus, "RAYON_NUM_THREADS": str(len(cpus.split(","))), "TOKENIZERS_PARALLELISM": "true",
           "PYTHONPATH": str(REPO)}
    return run_child(target, env=env, timeout=7200, **kwargs).extra


def tokenizers() -> dict[str, Path]:
    """Five real tokenizers an English corpus would serve: four from ../shared's GGUF vocabularies
    (converted once into bench/.cache) and the real all-MiniLM-L6-v2 WordPiece (lowercasing)."""
    from transformers import AutoTokenizer

    out = {}
    for name in GGUF:
        folder = subjects.CACHE / "tokenizers" / name
        if not (folder / "tokenizer.json").exists():
            AutoTokenizer.from_pretrained(str(SHARED / "tokenizers" / "gguf"), gguf_file=f"ggml-vocab-{name}.gguf").save_pretrained(str(folder))
        out[name] = folder / "tokenizer.json"
    out["minilm"] = subjects.minilm_folder() / "tokenizer.json"
    return out


def real_text() -> Path:
    """Real German: the translated man pages and the gettext messages (train split) of ../shared."""
    import pyarrow.parquet as pq

    path = subjects.CACHE / "text" / "de-real.txt"
    if not path.exists():
        lines = [x.strip() for x in (SHARED / "manpages" / "de.txt").read_text(encoding="utf-8").splitlines() if x.strip()]
        t = pq.read_table(SHARED / "gettext" / "de.parquet", columns=["text", "split"]).to_pydict()
        lines += [x for x, s in zip(t["text"], t["split"]) if s == "train"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def compare(text: Path, toks: dict[str, Path], cpus: str, label: str) -> dict:
    """One repetition: raw encode per tokenizer, then one chunk child for all of them."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = {}
        for name, tj in toks.items():
            raw[name] = _child("bench.chunk_counting:raw_side", cpus, text=str(text), tokenizer_json=str(tj),
                               out=f"{tmp}/raw-{name}.npy")
            print(f"  raw {name}: {raw[name]['seconds']:.1f} s, {raw[name]['tokens'] / raw[name]['seconds']:,.0f} tokens/s", flush=True)
        ch = _child("bench.chunk_counting:chunk_side", cpus, text=str(text),
                    tokenizers_json={k: str(v) for k, v in toks.items()}, out_dir=tmp)
        identical = {}
        for name in toks:
            a, b = np.load(f"{tmp}/raw-{name}.npy"), np.load(f"{tmp}/{name}.npy")
            n = max(a.size, b.size)
            identical[name] = bool(np.array_equal(np.pad(a, (0, n - a.size)), np.pad(b, (0, n - b.size))))
    base = ch["chunk_pass_s"]
    one = {name: {"raw_s": raw[name]["seconds"], "chunks_s": base + ch["per_tokenizer"][name]["seconds"],
                  "ratio": raw[name]["seconds"] / (base + ch["per_tokenizer"][name]["seconds"]),
                  "raw_tokens_per_s": raw[name]["tokens"] / raw[name]["seconds"],
                  "chunk_tokens_per_s": raw[name]["tokens"] / (base + ch["per_tokenizer"][name]["seconds"]),
                  "tokens": raw[name]["tokens"], "identical": identical[name]} for name in toks}
    total_raw = sum(r["seconds"] for r in raw.values())
    total_chunks = base + sum(t["seconds"] for t in ch["per_tokenizer"].values())
    return {"corpus": label, "text_bytes": text.stat().st_size, "cpus": cpus, "chunk_pass": ch,
            "one_tokenizer": one, "all_tokenizers": {"n": len(toks), "raw_s": total_raw, "chunks_s": total_chunks,
                                                      "ratio": total_raw / total_chunks,
                                                      "identical": all(identical.values())}}


def print_result(r: dict) -> None:
    ch = r["chunk_pass"]
    print(f"\n{r['corpus']}: {r['text_bytes'] / 1e6:.0f} MB, {ch['lines']:,} lines, {ch['chunks']:,} chunks, "
          f"{ch['distinct']:,} distinct ({100 * ch['distinct'] / ch['chunks']:.2f} %); chunk pass {ch['chunk_pass_s']:.1f} s "
          f"({r['text_bytes'] / 1e6 / ch['chunk_pass_s']:.0f} MB/s); cores {r['cpus']}")
    for name, o in r["one_tokenizer"].items():
        print(f"  one tokenizer {name:10s}: {o['ratio']:5.2f}x  raw {o['raw_s']:6.1f} s ({o['raw_tokens_per_s']:,.0f} tok/s)  "
              f"chunks {o['chunks_s']:5.1f} s ({o['chunk_tokens_per_s']:,.0f} tok/s)  identical={o['identical']}")
    a = r["all_tokenizers"]
    print(f"  all {a['n']} tokenizers: {a['ratio']:.2f}x  raw {a['raw_s']:.1f} s, chunks {a['chunks_s']:.1f} s  identical={a['identical']}")


def table_rows(results: list[dict]) -> list[dict]:
    """The results as bench/run.py table rows ({row, ratio: {median, lo, hi, n}, target, met, ...}),
    for wiring this comparison into `make bench`'s table."""
    out = []
    for r in results:
        for name, o in r["one_tokenizer"].items():
            out.append({"row": f"1. counting from chunk counts, one tokenizer ({name}, chunk pass included), {r['corpus']}",
                        "ratio": {"median": o["ratio"], "lo": o["ratio"], "hi": o["ratio"], "n": 1},
                        "target": ">= 3x raw encode_batch, counts identical", "met": o["ratio"] >= 3 and o["identical"],
                        "raw_tokens_per_s": o["raw_tokens_per_s"], "chunk_tokens_per_s": o["chunk_tokens_per_s"]})
        a = r["all_tokenizers"]
        out.append({"row": f"1. counting from chunk counts, {a['n']} tokenizers of one language, {r['corpus']}",
                    "ratio": {"median": a["ratio"], "lo": a["ratio"], "hi": a["ratio"], "n": 1},
                    "target": ">= 8x raw encode_batch, counts identical", "met": a["ratio"] >= 8 and a["identical"]})
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megabytes", type=float, default=100.0)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--real", action="store_true", help="also measure real German text from ../shared")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print("skipped: ../shared/data is absent (the real tokenizers live there)")
        return []
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[: args.cores])
    toks = tokenizers()
    results = []
    t0 = time.time()
    text = subjects.text_file("en", args.megabytes)
    results.append(compare(text, toks, cpus, f"wordfreq English, {args.megabytes:g} MB"))
    print_result(results[-1])
    if args.real:
        results.append(compare(real_text(), toks, cpus, "real German (manpages + gettext)"))
        print_result(results[-1])
    env = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.machine(),
           "python": platform.python_version(), "cores": args.cores, "load_average_at_end": os.getloadavg(),
           "wall_s": time.time() - t0,
           "note": "one repetition per side; the machine was shared with other jobs (see load average)"}
    RESULTS.write_text(json.dumps({"env": env, "results": results, "rows": table_rows(results)}, indent=2))
    print(f"\nwrote {RESULTS}")
    from bench.readme import write_readme

    print(f"wrote {write_readme()}")
    return results


if __name__ == "__main__":
    main()
