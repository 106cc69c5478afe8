"""Row 4: existing tools (vocabtrimmer in its own venv; hf-trim does not apply) against
trimworks on one variant: mine 200 k English lines (min frequency 2) and trim."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench import subjects
from bench.measure import REPO, Sample, Stats, interleaved, parse_sample, ratios, run_child
from bench.report import WORK, fresh, row

VOCABTRIMMER_PIP = ["torch==2.13.0", "transformers==4.36.2", "datasets==2.16.1", "vocabtrimmer==0.0.2",
                    "sentencepiece", "protobuf", "numpy<2", "pyarrow==15.0.2"]
HF_TRIM = {"row": "4. hf-trim 3.0.1", "ratio": None, "target": "run offline and compare", "met": None,
           "why_not": "not applicable: hf-trim ships trimmers for T5, mT5, BART and mBART only (no XLM-R/BERT/"
                      "Llama), and needs slow SentencePiece tokenizers (it warns that fast tokenizers are unsupported)"}


def venv_python(name: str) -> Path:
    return subjects.CACHE / "venvs" / name / "bin" / "python"


def tool_venv(name: str, packages: list[str], install: bool = True) -> tuple[Path | None, str]:
    venv = subjects.CACHE / "venvs" / name
    py = venv_python(name)
    if (venv / ".ok").exists():
        return py, "ok"
    if not install:
        return None, f"no {name} venv in {venv} (made by `make bench`; smoke mode installs nothing)"
    fresh(venv)
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
    fresh(out)
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


def trimworks_count_and_trim(base: str, out: str, data: str) -> Callable[[], dict]:
    """trimworks' side: count the same 200 k lines (read the same way) and trim, min count 2."""
    import pyarrow.parquet as pq

    from tasks.engine.counting.tokens import count_tokens
    from tasks.engine.selection.policy import SelectionPolicy
    from tasks.engine.trim import trim_model

    def section() -> dict:
        lines = pq.read_table(data).column("text").to_pylist()
        counts = count_tokens(Path(base) / "tokenizer.json", lines, "en")
        res = trim_model(Path(base), [counts], SelectionPolicy(min_count=2), 8, Path(out), overwrite=True)
        return {"vocab_after": int(res.selection.size)}

    return section


def bench_existing_tools(base: Path, text: Path, reps: int, n_lines: int = 200_000, install: bool = True) -> list[dict]:
    """One variant each way. Without vocabtrimmer's venv (smoke mode installs none) the
    trimworks side still runs and is checked for exactness; the row says why there is no ratio."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    py, status = tool_venv("vocabtrimmer", VOCABTRIMMER_PIP, install)
    data = fresh(WORK / "vt-data")
    data.mkdir(parents=True)
    lines = text.read_text().splitlines()
    pq.write_table(pa.table({"text": lines[:n_lines]}), data / "train.parquet")
    held = lines[-2000:]  # not among the mined lines (the text files hold far more)
    vt_out, tw_out = WORK / "vt-out", WORK / "tw-out"

    def trimworks() -> Sample:
        fresh(tw_out)
        return run_child("bench.tools:trimworks_count_and_trim", base=str(base), out=str(tw_out),
                         data=str(data / "train.parquet"))

    rows = []
    if py is None:
        tw = trimworks()
        rows.append({"row": "4. vocabtrimmer 0.0.2", "ratio": None, "target": "run offline and compare", "met": None,
                     "why_not": status, "trimworks_seconds": tw.seconds, "trimworks_vocab_after": tw.extra["vocab_after"],
                     "trimworks_exactness": compare_by_token_strings(base, tw_out, held)})
    else:
        subject = old_schema_copy(base, WORK / "vt-subject")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   HF_DATASETS_CACHE=str(WORK / "vt-datasets-cache"))

        def vocabtrimmer() -> Sample:
            fresh(vt_out)
            for cache in ("vt-vocab.json", "vt-freq.json"):  # it reuses a frequency file even with overwrite=True
                (WORK / cache).unlink(missing_ok=True)
            args = {"base": str(subject), "out": str(vt_out), "data": str(data), "vocab": str(WORK / "vt-vocab.json"),
                    "freq": str(WORK / "vt-freq.json")}
            proc = subprocess.run([str(py), str(REPO / "bench" / "vocabtrimmer_side.py"), json.dumps(args)],
                                  capture_output=True, text=True, timeout=3600, env=env)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip().splitlines()[-1][:400])
            s = parse_sample(proc.stdout)
            return Sample(s.seconds, s.peak_bytes, 0, {})

        try:
            res = interleaved(reps, vocabtrimmer=vocabtrimmer, trimworks=trimworks)
        except RuntimeError as exc:
            rows.append({"row": "4. vocabtrimmer 0.0.2 (separate venv, transformers 4.36.2)", "ratio": None,
                         "target": "run offline and compare", "met": None, "why_not": f"failed offline: {exc}"})
        else:
            vt, tw = res["vocabtrimmer"], res["trimworks"]
            rows.append(row(f"4. vocabtrimmer 0.0.2 (mine {n_lines // 1000} k lines + trim) time / trimworks (count + trim)",
                            ratios(vt, tw), "report", None,
                            vocabtrimmer_seconds=Stats.of([s.seconds for s in vt]).__dict__,
                            trimworks_seconds=Stats.of([s.seconds for s in tw]).__dict__,
                            peak_rss_ratio=ratios(vt, tw, key=lambda s: s.peak_bytes).__dict__,
                            vocabtrimmer_peak_bytes=[s.peak_bytes for s in vt], trimworks_peak_bytes=[s.peak_bytes for s in tw],
                            vocabtrimmer_exactness=compare_by_token_strings(base, vt_out, held),
                            trimworks_exactness=compare_by_token_strings(base, tw_out, held)))
    fresh(vt_out), fresh(tw_out)
    rows.append(HF_TRIM)
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
