"""trimworks benchmarks: every stage against its physical limit and against what users would
do instead. Each comparison runs side by side in one process run (interleaved repetitions in
fresh child processes) and reports ratios: median [min–max] of the paired ratios.

    python -m bench.run            # make bench        (full: real shapes, >= 20 MB of text)
    python -m bench.run --smoke    # make bench-smoke  (under a minute; runs in the test suite)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from bench import subjects
from bench.measure import Sample, Stats, dump, interleaved, ratios, run_child

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results.json"
WORK = subjects.CACHE / "work"


def row(name: str, measured: Stats, target: str, met: bool | None, **details) -> dict:
    return {"row": name, "ratio": measured.__dict__, "target": target, "met": met, **details}


# 1. Counting -------------------------------------------------------------------------------
COUNT_SETUP = """
import os
os.sched_setaffinity(0, {{int(c) for c in os.environ["BENCH_CPUS"].split(",")}})  # 1 core means 1 core
from pathlib import Path
from tasks.engine.counting import batched, count_tokens, load_plain_tokenizer
lines = Path({text!r}).read_text().splitlines()[:{max_lines}]
tok_path = Path({tok!r})
"""
RAW = """
tok = load_plain_tokenizer(tok_path)
for b in batched(lines, 4096):
    tok.encode_batch_fast(b, add_special_tokens=False)
"""
COUNT = """
c = count_tokens(tok_path, lines, "bench")
extra["tokens"] = c.tokens
"""


def bench_counting(tok: Path, text: Path, label: str, reps: int, max_lines: int) -> list[dict]:
    out = []
    setup = COUNT_SETUP.format(text=str(text), tok=str(tok), max_lines=max_lines)
    for threads in (1, 2):
        env = {"RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true",
               "BENCH_CPUS": ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:threads])}
        res = interleaved(reps, raw=lambda: run_child(setup, RAW, env), count=lambda: run_child(setup, COUNT, env))
        tokens = res["count"][0].extra["tokens"]
        r = ratios(res["raw"], res["count"])  # raw time / count time = count throughput / raw throughput
        out.append(row(
            f"1. counting ({label}, {threads} core{'s' if threads > 1 else ''})", r, ">= 0.80x of raw encode_batch",
            r.median >= 0.8,
            trimworks_tokens_per_s=Stats.of([tokens / s.seconds for s in res["count"]]).__dict__,
            raw_tokens_per_s=Stats.of([tokens / s.seconds for s in res["raw"]]).__dict__, tokens=tokens,
        ))
    return out


# 2 + 3. Surgery ------------------------------------------------------------------------------
SURGERY_SETUP = """
import json, numpy as np
from pathlib import Path
from tasks.engine.model_folder import inspect_model_folder
from tasks.engine.surgery import trim_weights, write_configs
base = inspect_model_folder(Path({base!r}))
kept = np.load({kept!r})
out = Path({out!r})
"""
SURGERY = """
out.mkdir()
stats = trim_weights(base, out, kept)
write_configs(base, out, kept)
extra["bytes_after"] = stats.bytes_after
extra["largest"] = stats.largest_tensor_bytes
"""
PLAIN_WRITE = """
out.mkdir()
buf = memoryview(bytearray(16 << 20))
left = {nbytes}
with open(out / "blob", "wb") as fh:
    while left:
        n = min(len(buf), left)
        fh.write(buf[:n])
        left -= n
"""
HANDWRITTEN = """
import torch
import transformers
model = getattr(transformers, {auto!r}).from_pretrained(str(base.path))
idx = torch.as_tensor(kept)
with torch.no_grad():
    emb = model.get_input_embeddings()
    model.set_input_embeddings(torch.nn.Embedding.from_pretrained(emb.weight.index_select(0, idx).clone(), freeze=False))
    head = model.get_output_embeddings()
    new_head = torch.nn.Linear(head.in_features, len(idx), bias=head.bias is not None)
    new_head.weight = model.get_input_embeddings().weight
    if head.bias is not None:
        new_head.bias = torch.nn.Parameter(head.bias.index_select(0, idx).clone())
        model.lm_head.bias = new_head.bias
    model.set_output_embeddings(new_head)
model.config.vocab_size = len(idx)
model.save_pretrained(str(out))
"""


def kept_ids(model: Path, text: Path, out: Path) -> Path:
    """~30 k ids an English selection keeps (top_k 30,016, multiple 64), computed once."""
    if not out.exists():
        from tasks.engine.counting import count_tokens
        from tasks.engine.selection import SelectionPolicy
        from tasks.engine.trim import select_for_model

        counts = count_tokens(model / "tokenizer.json", text.read_text().splitlines()[:200_000], "en")
        np.save(out, select_for_model(model, [counts], SelectionPolicy(top_k=30_016), 64).kept_ids)
    return out


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def bench_surgery(base: Path, kept_path: Path, reps: int, label: str) -> list[dict]:
    out = WORK / "surgery-out"
    auto = "AutoModelForCausalLM" if "CausalLM" in json.loads((base / "config.json").read_text())["architectures"][0] \
        else "AutoModelForMaskedLM"
    setup = SURGERY_SETUP.format(base=str(base), kept=str(kept_path), out=str(out))
    probe = run_child(setup, SURGERY)
    _fresh(out)
    nbytes, largest = probe.extra["bytes_after"], probe.extra["largest"]

    def surgery():
        _fresh(out)
        return run_child(setup, SURGERY)

    def plain():
        _fresh(out)
        return run_child(setup, PLAIN_WRITE.format(nbytes=nbytes))

    def hand():
        _fresh(out)
        return run_child(setup, HANDWRITTEN.format(auto=auto))

    res = interleaved(reps, surgery=surgery, plain=plain, hand=hand)
    _fresh(out)
    io = ratios(res["surgery"], res["plain"])
    growth = Stats.of([s.growth_bytes / largest for s in res["surgery"]])
    speed = ratios(res["hand"], res["surgery"])
    rss = ratios(res["surgery"], res["hand"], key=lambda s: s.growth_bytes)
    secs = Stats.of([s.seconds for s in res["surgery"]]).__dict__
    return [
        row(f"2. surgery vs plain write of the same bytes (I/O limit), {label}", io, "<= 1.50x", io.median <= 1.5,
            surgery_seconds=secs, bytes_written=nbytes),
        row(f"2. surgery peak RSS above baseline / largest tensor, {label}", growth, "<= 1.25x", growth.median <= 1.25,
            largest_tensor_bytes=largest, peak_growth_bytes=[s.growth_bytes for s in res["surgery"]]),
        row(f"3. hand-written (from_pretrained, index_select, save_pretrained) time / trimworks, {label}", speed,
            ">= 3.00x (trimworks faster)", speed.median >= 3.0,
            handwritten_seconds=Stats.of([s.seconds for s in res["hand"]]).__dict__, surgery_seconds=secs),
        row(f"3. trimworks peak RSS / hand-written peak RSS (above baseline), {label}", rss, "<= 0.30x", rss.median <= 0.3,
            handwritten_growth_bytes=[s.growth_bytes for s in res["hand"]]),
    ]


# 4. Existing tools -------------------------------------------------------------------------
VOCABTRIMMER_PIP = ["torch==2.13.0", "transformers==4.36.2", "datasets==2.16.1", "vocabtrimmer==0.0.2",
                    "sentencepiece", "protobuf", "numpy<2", "pyarrow==15.0.2"]


def tool_venv(name: str, packages: list[str]) -> tuple[Path | None, str]:
    venv = subjects.CACHE / "venvs" / name
    py = venv / "bin" / "python"
    if (venv / ".ok").exists():
        return py, "ok"
    shutil.rmtree(venv, ignore_errors=True)
    try:
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True, capture_output=True, timeout=900)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *packages], check=True, capture_output=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        err = getattr(exc, "stderr", b"") or b""
        return None, f"install failed: {err.decode(errors='replace')[-500:]}"
    (venv / ".ok").write_text("")
    return py, "ok"


def old_schema_copy(base: Path, out: Path) -> Path:
    """The subject with its tokenizer.json in the pre-0.19 Metaspace schema that tokenizers 0.15
    (pinned by vocabtrimmer) can parse; same tokenization, weights linked, not copied."""
    _fresh(out)
    out.mkdir(parents=True)
    for f in base.iterdir():
        if f.name != "tokenizer.json":
            (out / f.name).symlink_to(f)
    tok = json.loads((base / "tokenizer.json").read_text())
    for key in ("pre_tokenizer", "decoder"):
        if tok.get(key, {}).get("type") == "Metaspace":
            tok[key] = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    return out


VT_RUN = """
import json, time
import vocabtrimmer
t = time.perf_counter()
trimmer = vocabtrimmer.VocabTrimmer({base!r})
trimmer.trim_vocab(language="en", path_to_save={out!r}, dataset={data!r}, dataset_name=None,
                   dataset_split="train", min_frequency=2, cache_file_vocab={vocab!r},
                   cache_file_frequency={freq!r}, overwrite=True)
dt = time.perf_counter() - t
hwm = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024
print("@@" + json.dumps({{"seconds": dt, "peak": hwm}}))
"""
TW_SETUP = """
from pathlib import Path
import pyarrow.parquet as pq
from tasks.engine.counting import count_tokens
from tasks.engine.selection import SelectionPolicy
from tasks.engine.trim import trim_model
base, out = Path({base!r}), Path({out!r})
"""
TW_RUN = """
lines = pq.read_table({data!r}).column("text").to_pylist()  # the same 200 k lines, read the same way
counts = count_tokens(base / "tokenizer.json", lines, "en")
res = trim_model(base, [counts], SelectionPolicy(min_count=2), 8, out, overwrite=True)
extra["vocab_after"] = int(res.selection.size)
"""


def bench_existing_tools(base: Path, text: Path, reps: int) -> list[dict]:
    """One variant each way: mine 200 k English lines (min frequency 2) and trim."""
    rows = []
    py, status = tool_venv("vocabtrimmer", VOCABTRIMMER_PIP)
    if py is None:
        rows.append({"row": "4. vocabtrimmer 0.0.2", "ratio": None, "target": "run offline and compare", "met": None,
                     "why_not": status})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = _fresh(WORK / "vt-data")
        data.mkdir(parents=True)
        lines = text.read_text().splitlines()[:200_000]
        pq.write_table(pa.table({"text": lines}), data / "train.parquet")
        subject = old_schema_copy(base, WORK / "vt-subject")
        vt_out, tw_out = WORK / "vt-out", WORK / "tw-out"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   HF_DATASETS_CACHE=str(WORK / "vt-datasets-cache"))

        def vocabtrimmer() -> Sample:
            _fresh(vt_out)
            for cache in ("vt-vocab.json", "vt-freq.json"):  # it reuses a frequency file even with overwrite=True
                (WORK / cache).unlink(missing_ok=True)
            code = VT_RUN.format(base=str(subject), out=str(vt_out), data=str(data), vocab=str(WORK / "vt-vocab.json"),
                                 freq=str(WORK / "vt-freq.json"))
            proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=3600, env=env)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1][:400])
            d = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("@@"))[2:])
            return Sample(d["seconds"], d["peak"], 0, {})

        def trimworks() -> Sample:
            _fresh(tw_out)
            return run_child(TW_SETUP.format(base=str(base), out=str(tw_out)), TW_RUN.format(data=str(data / "train.parquet")))

        try:
            res = interleaved(reps, vocabtrimmer=vocabtrimmer, trimworks=trimworks)
        except RuntimeError as exc:
            rows.append({"row": "4. vocabtrimmer 0.0.2 (separate venv, transformers 4.36.2)", "ratio": None,
                         "target": "run offline and compare", "met": None, "why_not": f"failed offline: {exc}"})
        else:
            held = text.read_text().splitlines()[-2000:]  # not among the 200 k mined lines
            vt, tw = res["vocabtrimmer"], res["trimworks"]
            rows.append(row("4. vocabtrimmer 0.0.2 (mine 200 k lines + trim) time / trimworks (count + trim)",
                            ratios(vt, tw), "report", None,
                            vocabtrimmer_seconds=Stats.of([s.seconds for s in vt]).__dict__,
                            trimworks_seconds=Stats.of([s.seconds for s in tw]).__dict__,
                            peak_rss_ratio=ratios(vt, tw, key=lambda s: s.peak_bytes).__dict__,
                            vocabtrimmer_peak_bytes=[s.peak_bytes for s in vt], trimworks_peak_bytes=[s.peak_bytes for s in tw],
                            vocabtrimmer_exactness=compare_by_token_strings(base, vt_out, held),
                            trimworks_exactness=compare_by_token_strings(base, tw_out, held)))
        _fresh(vt_out), _fresh(tw_out)
    rows.append({"row": "4. hf-trim 3.0.1", "ratio": None, "target": "run offline and compare", "met": None,
                 "why_not": "not applicable: hf-trim ships trimmers for T5, mT5, BART and mBART only (no XLM-R/BERT/"
                            "Llama), and needs slow SentencePiece tokenizers (it warns that fast tokenizers are unsupported)"})
    return rows


def compare_by_token_strings(base: Path, trimmed: Path, lines: list[str], sample: int = 24) -> dict:
    """Exactness of any tool's output, without its kept-id table: map ids through token strings.

    A line counts as covered when the trimmed tokenizer gives the same token strings as the
    base one; on covered lines the trimmed model's outputs (float64) are compared with the base
    model's at the kept tokens' columns."""
    import torch
    import transformers as T
    from tokenizers import Tokenizer

    tok0, tok1 = Tokenizer.from_file(str(base / "tokenizer.json")), Tokenizer.from_file(str(trimmed / "tokenizer.json"))
    old_of_new = {i: tok0.token_to_id(t) for t, i in tok1.get_vocab(with_added_tokens=True).items()}
    if None in old_of_new.values():
        return {"error": "the trimmed tokenizer has tokens the base does not"}
    covered, same = [], 0
    for line in lines:
        e0, e1 = tok0.encode(line), tok1.encode(line)
        if e0.tokens == e1.tokens:
            same += 1
            covered.append((e0.ids, e1.ids))
    model0 = T.AutoModelForMaskedLM.from_pretrained(str(base), dtype=torch.float64).eval()
    model1 = T.AutoModelForMaskedLM.from_pretrained(str(trimmed), dtype=torch.float64).eval()
    n_new = len(old_of_new)
    cols = torch.as_tensor([old_of_new[i] for i in range(n_new)])
    diff = 0.0
    with torch.no_grad():
        for ids0, ids1 in covered[:sample]:
            out0 = model0(torch.tensor([ids0[:128]])).logits[0][:, cols]
            out1 = model1(torch.tensor([ids1[:128]])).logits[0][:, :n_new]
            diff = max(diff, float((out0 - out1).abs().max()))
    return {"vocab_after": n_new, "lines_tokenized_identically_pct": 100.0 * same / max(1, len(lines)),
            "sampled_lines": min(sample, len(covered)), "max_abs_logit_diff_float64": diff}


# 5. Orchestration overhead ---------------------------------------------------------------------
ORCH_SETUP = """
import os, json
os.environ["PREFECT_HOME"] = {home!r}
from pathlib import Path
from flows import runtime
from flows.publish_all import run_publish_all
from flows.steps import make_publisher
from prefect import flow
from tasks.pipeline.build import build_and_publish
from tasks.pipeline.catalog import plot_coverage, write_catalog
from tasks.pipeline.counts_cache import ensure_counts, ensure_heldout, read_heldout
from tasks.engine.model_folder import load_tokenizer_json
from tasks.engine.vocab import analyze_tokenizer
from tasks.pipeline.manifest import expand, load_manifest
from tasks.pipeline.sources import base_identity, materialize_base
m = load_manifest(Path({manifest!r}))
@flow
def warm():
    return 1
warm()  # the temporary server is up before timing starts
"""
ORCH_FLOW = """
summary = run_publish_all({manifest!r}, force=True, workers=1)
assert not summary["failed"], summary["failed"]
extra["n"] = len(summary["published"])
"""
ORCH_LOOP = """
base_dir = materialize_base(m, m.spec.base_models[0])
variants = expand(m, {m.spec.base_models[0].id: base_identity(base_dir)})
publisher, location = make_publisher(m)
tok = base_dir / "tokenizer.json"
langs = sorted({lang for v in variants for lang in v.languages})
counts = {lang: ensure_counts(m, tok, lang) for lang in langs}
held = {lang: ensure_heldout(m, lang) for lang in langs}
# The same outputs as the flow: one coverage plot, every variant, the catalog.
plot = m.output_dir / "plots" / "toy-coverage.png"
plot_coverage("toy", tok, analyze_tokenizer(load_tokenizer_json(tok)), counts,
              {lang: read_heldout(p) for lang, p in held.items()}, plot)
records = []
for v in variants:
    rec = build_and_publish(m, v, base_dir, {l: counts[l] for l in v.languages}, {l: held[l] for l in v.languages},
                            publisher, location(v), plot, force=True)
    assert rec.status == "published", rec.error
    records.append(rec)
write_catalog(records, m.output_dir, {"toy": plot})
extra["n"] = len(variants)
"""


def orchestration_manifest(n: int) -> Path:
    import itertools

    import yaml

    from tests.subjects import toy_bytelevel_model, wordfreq_sentences

    toy = subjects.CACHE / "toy-model"
    if not (toy / "config.json").exists():
        toy_bytelevel_model(toy, wordfreq_sentences("en", 3000))
    langs = ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "da"]
    multiples = [8, 16, 32, 64]
    subsets = [[l] for l in langs] + [list(p) for p in itertools.combinations(langs, 2)]
    subsets = subsets[: max(1, n // len(multiples))]
    data = {
        "work_dir": str(WORK / "orch-work"), "output_dir": str(WORK / "orch-published"),
        "base_models": [{"id": "toy", "source": {"local": str(toy)}, "license": "mit"}],
        "languages": {l: {"corpora": [{"wordfreq": {"lines": 400, "words": 800}}]} for l in langs},
        "subsets": subsets, "multiples": multiples, "selection": {"min_count": 1}, "verify_sample_lines": 0,
    }
    path = WORK / f"orchestration-{n}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def bench_orchestration(n: int, reps: int) -> list[dict]:
    manifest = orchestration_manifest(n)
    setup = ORCH_SETUP.format(home=str(WORK / "prefect-home"), manifest=str(manifest))
    run_child(setup, ORCH_LOOP)  # warm the counts cache: counting is amortised, as in production
    res = interleaved(reps, flow=lambda: run_child(setup, ORCH_FLOW.format(manifest=str(manifest))),
                      loop=lambda: run_child(setup, ORCH_LOOP))
    n_built = res["flow"][0].extra["n"]
    r = ratios(res["flow"], res["loop"])
    per_variant_ms = Stats.of([(f.seconds - lp.seconds) / n_built * 1000 for f, lp in zip(res["flow"], res["loop"])])
    expand_s = _expansion_seconds(5000)
    return [row(f"5. publish_all over {n_built} variants / plain loop (same engine calls)", r, "<= 1.30x", r.median <= 1.3,
                per_variant_overhead_ms=per_variant_ms.__dict__,
                extrapolated_5000_overhead_s=per_variant_ms.median * 5000 / 1000 + expand_s,
                expansion_of_5000_variants_s=expand_s,
                flow_seconds=Stats.of([s.seconds for s in res["flow"]]).__dict__,
                loop_seconds=Stats.of([s.seconds for s in res["loop"]]).__dict__)]


def _expansion_seconds(n: int) -> float:
    """Validate + expand a manifest of n variants (10 bases x subsets x 4 multiples)."""
    import itertools

    import yaml

    from tasks.pipeline.manifest import expand, load_manifest

    toy = subjects.CACHE / "toy-model"
    langs = ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "da", "fi", "cs", "hu", "ro", "bg"]
    subsets = [list(c) for k in (1, 2, 3) for c in itertools.combinations(langs, k)][: n // 40]
    data = {"base_models": [{"id": f"b{i}", "source": {"local": str(toy)}, "license": "mit"} for i in range(10)],
            "languages": {l: {"corpora": [{"wordfreq": {}}]} for l in langs}, "subsets": subsets,
            "multiples": [8, 16, 32, 64], "lid": {"enabled": False}}
    path = WORK / "expansion.yaml"
    path.write_text(yaml.safe_dump(data))
    t = time.perf_counter()
    variants = expand(load_manifest(path))
    dt = time.perf_counter() - t
    assert len(variants) == len(subsets) * 40
    return dt


# 6. End to end --------------------------------------------------------------------------------
E2E = """
summary = run_publish_all({manifest!r}, force=True, workers=2)
assert not summary["failed"], summary["failed"]
extra["n"] = len(summary["published"])
"""
E2E_SETUP = """
import os
os.environ["PREFECT_HOME"] = {home!r}
from flows import runtime
from flows.publish_all import run_publish_all
from prefect import flow
@flow
def warm():
    return 1
warm()
"""


def e2e_manifest(name: str, data: dict) -> Path:
    import yaml

    path = WORK / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def bench_end_to_end(xlmr: Path, smoke: bool) -> list[dict]:
    import yaml

    rows = []
    setup = E2E_SETUP.format(home=str(WORK / "prefect-home"))
    default = yaml.safe_load((REPO / "manifests" / "default.yaml").read_text())
    default.update(work_dir=str(WORK / "e2e-default-work"), output_dir=str(WORK / "e2e-default-published"))
    if smoke:
        default.update(subsets=default["subsets"][:1], multiples=[64], base_models=default["base_models"][:1])
    cases = [("default manifest", e2e_manifest("e2e-default", default))]
    langs = ["en", "fr", "de", "es", "it", "pt", "nl", "pl"]
    xl = {"work_dir": str(WORK / "e2e-xlmr-work"), "output_dir": str(WORK / "e2e-xlmr-published"),
          "base_models": [{"id": "xlmr-base-shaped", "source": {"local": str(xlmr)}, "license": "mit"}],
          "languages": {l: {"corpora": [{"wordfreq": {"lines": 20000 if not smoke else 500, "words": 20000}}]} for l in langs},
          "subsets": [[l] for l in langs] if not smoke else [["en"]], "multiples": [8, 64] if not smoke else [64],
          "selection": {"min_count": 2}, "verify_sample_lines": 4}
    cases.append(("XLM-R-base-shaped x 8 subsets x 2 multiples" if not smoke else "XLM-R (smoke)", e2e_manifest("e2e-xlmr", xl)))
    for label, manifest in cases:
        run_child(setup, E2E.format(manifest=str(manifest)))  # first run counts; later runs reuse counts
        s = run_child(setup, E2E.format(manifest=str(manifest)))
        n = s.extra["n"]
        rows.append({"row": f"6. end to end: {label} (counts amortised)", "ratio": None, "target": "report", "met": None,
                     "variants": n, "seconds": s.seconds, "variants_per_hour": 3600 * n / s.seconds,
                     "seconds_per_variant": s.seconds / n, "peak_rss_bytes": s.peak_bytes})
    return rows


def bench_anchor(tok: Path, text: Path, per_variant_s: float | None) -> dict:
    """The published trimming of 5,526 models: ~9 min/model for 200 k texts, counting redone each time."""
    setup = COUNT_SETUP.format(text=str(text), tok=str(tok), max_lines=200_000)
    s = run_child(setup, COUNT, {"BENCH_CPUS": ",".join(map(str, sorted(os.sched_getaffinity(0))))})
    total = s.seconds + (per_variant_s or 0)
    return {"row": "6. anchor: one variant with 200 k lines counted from scratch (vs ~9 min/model published)",
            "ratio": {"median": 540 / total, "lo": None, "hi": None, "n": 1}, "target": "report (x faster than 9 min)",
            "met": None, "count_200k_lines_s": s.seconds, "build_per_variant_s": per_variant_s, "total_s": total}


# ---------------------------------------------------------------------------------------------
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
        for key in ("why_not", "variants_per_hour", "seconds_per_variant", "exact", "extrapolated_5000_overhead_s",
                    "per_variant_overhead_ms", "trimworks_tokens_per_s", "vocabtrimmer_exactness", "trimworks_exactness"):
            if key in r:
                val = r[key]
                if isinstance(val, dict) and "median" in val:
                    val = f"{val['median']:,.1f} [{val['lo']:,.1f}–{val['hi']:,.1f}]"
                elif isinstance(val, float):
                    val = f"{val:,.1f}"
                print(f"    {key}: {val}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition (under a minute)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--only", default="123456", help="which rows to run, e.g. 125 (merged into the results file)")
    args = ap.parse_args()
    smoke = args.smoke
    reps = args.reps or (1 if smoke else 3)
    if smoke:  # under a minute: the rows that need no Prefect server or big subjects
        args.only = "".join(c for c in args.only if c in "123")
    WORK.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS.with_name("results-smoke.json") if smoke else RESULTS
    previous = json.loads(out_path.read_text()) if out_path.exists() and args.only != "123456" else {"rows": []}
    rows: list[dict] = [r for r in previous["rows"] if r["row"][0] not in args.only]
    t0 = time.perf_counter()

    def save() -> None:  # after every row group: an interrupted run keeps what it measured
        rows.sort(key=lambda r: r["row"][:2])
        dump(out_path, {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                        f"Python {platform.python_version()}", "smoke": smoke, "reps": reps,
                        "seconds": time.perf_counter() - t0, "rows": rows})

    xlmr = subjects.xlmr_base_shaped(smoke)
    text = subjects.text_file("en", 1 if smoke else 20)
    if "1" in args.only:
        rows += bench_counting(xlmr / "tokenizer.json", text, "XLM-R Unigram 250k", reps, 10**9)
        qwen = subjects.qwen2_tokenizer() if not smoke else None
        if qwen:
            rows += bench_counting(qwen, text, "Qwen2 byte-level BPE 151k", reps, 10**9)
        save()
    kept_path = kept_ids(xlmr, text, WORK / ("kept-smoke.npy" if smoke else "kept.npy"))
    if "2" in args.only or "3" in args.only:
        rows += bench_surgery(xlmr, kept_path, reps, "XLM-R-base-shaped" + (" (smoke)" if smoke else ""))
        save()
        qwen_model = subjects.qwen2_half_b_shaped() if not smoke else None
        if qwen_model:
            rows += bench_surgery(qwen_model, kept_ids(qwen_model, text, WORK / "kept-qwen2.npy"), reps,
                                  "Qwen2-0.5B-shaped (tied)")
            save()
    if "4" in args.only:
        rows += bench_existing_tools(xlmr, text, reps)
        save()
    if "5" in args.only:
        rows += bench_orchestration(200, reps)
        save()
    if "6" in args.only:
        e2e = bench_end_to_end(xlmr, smoke)
        rows += e2e
        rows.append(bench_anchor(xlmr / "tokenizer.json", text, e2e[-1]["seconds_per_variant"] if e2e else None))
        save()
    print_table(rows)
    print(f"\nwrote {out_path} in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
