"""Row 6: whole publish-all runs (counts amortised) on the default manifest and on an
XLM-R-base-shaped subject."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from bench.measure import REPO, run_child
from bench.report import WORK
from tasks.pipeline.production.bodies import LOSS_SEQUENCES


def e2e_manifest(name: str, data: dict) -> Path:
    path = WORK / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def bench_end_to_end(xlmr: Path, smoke: bool) -> list[dict]:
    home = str(WORK / "prefect-home")
    tag = "-smoke" if smoke else ""  # a smoke run (the test suite's) never overwrites the full run's files
    default = yaml.safe_load((REPO / "manifests" / "default.yaml").read_text())
    default.update(work_dir=str(WORK / f"e2e-default{tag}-work"), output_dir=str(WORK / f"e2e-default{tag}-published"))
    if smoke:
        default.update(subsets=default["subsets"][:1], multiples=[64], base_models=default["base_models"][:1])
        for lang in default["languages"].values():  # a few thousand lines: the smoke run counts each time
            lang["corpora"] = [{"wordfreq": {"lines": 2000, "words": 4000}}]
    cases = [("default manifest" if not smoke else "default manifest (smoke: MiniLM, en, v64)",
              e2e_manifest(f"e2e-default{tag}", default), "threads")]
    langs = ["en", "fr", "de", "es", "it", "pt", "nl", "pl"]
    xl = {"work_dir": str(WORK / f"e2e-xlmr{tag}-work"), "output_dir": str(WORK / f"e2e-xlmr{tag}-published"),
          "base_models": [{"id": "xlmr-base-shaped", "source": {"local": str(xlmr)}, "license": "mit"}],
          "languages": {l: {"corpora": [{"wordfreq": {"lines": 20000 if not smoke else 500, "words": 20000}}]} for l in langs},
          "subsets": [[l] for l in langs] if not smoke else [["en"]], "multiples": [8, 64] if not smoke else [64],
          "selection": {"min_count": 2}, "verify_sample_lines": 4}
    cases.append(("XLM-R-base-shaped x 8 subsets x 2 multiples" if not smoke else "XLM-R (smoke)",
                  e2e_manifest(f"e2e-xlmr{tag}", xl), "threads"))
    if not smoke:  # the same runs with the proof only: what the one output comparison per base costs
        for (label, _, _), (name, data) in zip(list(cases), (("e2e-default", default), ("e2e-xlmr", xl))):
            never = {**data, "verify": {"outputs": "never"}, "output_dir": data["output_dir"] + "-proof-only"}
            cases.append((f"{label}, proof only (verify.outputs: never)", e2e_manifest(f"{name}-proof-only", never), "threads"))
        # Long enough that start-up is not the figure, in worker processes (the product's default);
        # the 48 once more on threads, and once in the one-file layout (every variant writes and
        # proves the whole model: the per-variant split before the shared body).
        wide = wide_default(default)
        cases.append(("default manifest, 12 subsets (48 variants), worker processes", e2e_manifest("e2e-default-48", wide), "processes"))
        cases.append(("default manifest, 12 subsets (48 variants), threads", e2e_manifest("e2e-default-48", wide), "threads"))
        single = {**wide, "output": {"layout": "single"}, "output_dir": wide["output_dir"] + "-single"}
        cases.append(("default manifest, 12 subsets (48 variants), threads, one-file layout (before)",
                      e2e_manifest("e2e-default-48-single", single), "threads"))
        cases.append(("XLM-R-base-shaped x 16 subsets x 2 multiples (32 variants), worker processes",
                      e2e_manifest("e2e-xlmr-32", wide_xlmr(xl)), "processes"))
    return [row_of(label, manifest, home, smoke, executor) for label, manifest, executor in cases]


WIDE_LANGS = ["de", "fr", "es", "it", "pt", "nl"]


def wide_default(default: dict) -> dict:
    """The default manifest's bases, corpora and policies over 12 subsets: 6 languages alone
    and 6 pairs (48 variants with multiples 8 and 64)."""
    corpus = default["languages"]["de"]["corpora"]
    pairs = [[a, b] for a, b in zip(WIDE_LANGS, WIDE_LANGS[1:] + WIDE_LANGS[:1])]
    return {**default, "work_dir": str(WORK / "e2e-default-48-work"), "output_dir": str(WORK / "e2e-default-48-published"),
            "languages": {lang: {"corpora": corpus} for lang in WIDE_LANGS},
            "subsets": [[lang] for lang in WIDE_LANGS] + pairs}


XLMR_LANGS = ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "da", "fi", "hu", "tr", "ro", "cs", "id"]


def wide_xlmr(xl: dict) -> dict:
    """The XLM-R-base-shaped row over 16 one-language subsets (32 variants with multiples 8 and 64)."""
    corpus = next(iter(xl["languages"].values()))["corpora"]
    return {**xl, "work_dir": str(WORK / "e2e-xlmr-32-work"), "output_dir": str(WORK / "e2e-xlmr-32-published"),
            "languages": {lang: {"corpora": corpus} for lang in XLMR_LANGS}, "subsets": [[lang] for lang in XLMR_LANGS]}


def row_of(label: str, manifest: Path, home: str, smoke: bool, executor: str = "threads") -> dict:
    """One measured run; in full mode after a first run that makes the counts, unless the work
    folder has them already (the proof-only runs share it). Only the counts are amortised: the
    base's loss sequences (`<work_dir>/loss-sequences`) are removed, so every variant's loss is
    measured as on a first build of its base."""
    work = Path(yaml.safe_load(manifest.read_text())["work_dir"])
    if not smoke and not any((work / "counts").rglob("*.parquet")):
        run_child("bench.orchestration:flow_side", manifest=str(manifest), home=home, workers=2, executor=executor)
    shutil.rmtree(work / LOSS_SEQUENCES, ignore_errors=True)
    s = run_child("bench.orchestration:flow_side", manifest=str(manifest), home=home, workers=2, executor=executor)
    n = s.extra["n"]
    run_peak = s.peak_bytes + s.extra.get("helper_peak_bytes", 0)
    one_peak = max(s.peak_bytes, s.extra.get("max_helper_peak_bytes", 0))
    per_hour = 3600 * n / s.seconds
    floor = 3000 if label.startswith("default") else 2000
    return {"row": f"6. end to end: {label} (counts amortised)" if not smoke else f"6. end to end: {label}",
            "ratio": None, "met": None if smoke else (per_hour >= floor and one_peak <= 1.5e9),
            "variants": n, "seconds": s.seconds, "variants_per_hour": per_hour,
            "seconds_per_variant": s.seconds / n, "peak_rss_bytes": s.peak_bytes,
            "helper_peak_rss_bytes": s.extra.get("helper_peak_bytes", 0), "run_peak_rss_bytes": run_peak,
            "max_process_peak_rss_bytes": one_peak,
            "thread_s_per_variant": {k: v / n for k, v in s.extra.get("stage_seconds", {}).items()},
            "target": f">= {floor:,} variants/h, peak RSS of any one process <= 1.5 GB"}
