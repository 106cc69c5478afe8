"""Row 5: the Prefect flow against a plain loop doing the same work. Both sides plan with
`tasks.pipeline.production.plan` and call the same pipeline and engine functions; the loop simply runs
what the plan names in order, in one process, without Prefect."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench import subjects
from bench.measure import REPO, Stats, interleaved, ratios, run_child
from bench.report import WORK, row


def _prefect_ready(home: str) -> None:
    """A Prefect home of the bench's own, and the temporary server up before timing starts."""
    os.environ["PREFECT_HOME"] = home
    from flows import runtime  # noqa: F401 - process defaults before prefect is imported
    from prefect import flow

    @flow
    def warm() -> int:
        return 1

    warm()


def flow_side(manifest: str, home: str, workers: int = 1, executor: str = "threads") -> Callable[[], dict]:
    """`publish_all` (forced) on the temporary Prefect server, its builds on `workers` threads or
    worker processes."""
    _prefect_ready(home)
    from flows.publish_all import run_publish_all

    def section() -> dict:
        from bench.child import descendant_peaks

        seen: dict[int, dict] = {}  # worker processes end with the run: sample their peaks while it goes
        done = threading.Event()

        def note_peaks() -> None:
            for h in descendant_peaks():
                if h["peak"] >= seen.get(h["pid"], {"peak": -1})["peak"]:
                    seen[h["pid"]] = h

        def sample() -> None:
            while not done.wait(0.5):
                note_peaks()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            summary = run_publish_all(manifest, force=True, workers=workers, executor=executor)
        finally:
            done.set()
            sampler.join()
        assert not summary["failed"], summary["failed"]
        note_peaks()  # the temporary Prefect server, still up until this process exits
        helpers = list(seen.values())
        return {"n": len(summary["published"]), "helper_peak_bytes": sum(h["peak"] for h in helpers),
                "max_helper_peak_bytes": max((h["peak"] for h in helpers), default=0),
                "helpers": [h["cmd"][:80] for h in helpers], "stage_seconds": summary.get("stage_seconds", {})}

    return section


def run_plain(manifest: str, force: bool = True) -> list:
    """The run without an orchestrator: materialise, plan, count, plot, build every group, catalog.

    The same outputs as the flow (plots, every variant, the catalog); no retries, no
    concurrency, no record of runs."""
    from tasks.engine.checkpoint.model_folder import load_tokenizer_json
    from tasks.engine.tokenizer.vocab import analyze_tokenizer
    from tasks.pipeline.production.build import build_and_publish, failed_record, skipped_record
    from tasks.pipeline.report.catalog import plot_coverage, write_catalog
    from tasks.pipeline.corpus.counts_cache import ensure_counts, ensure_heldout, read_heldout
    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.production.plan import BaseState, Outcome, plan
    from tasks.pipeline.publish.targets import publisher_for
    from tasks.pipeline.production.base_models import materialize_base

    m = load_manifest(Path(manifest))
    bases = [BaseState.ready(b.id, materialize_base(m, b)) for b in m.spec.base_models]
    publisher = publisher_for(m.spec.publish, m.output_dir)
    p = plan(m, bases, publisher.published_fingerprint, force=force)
    records = {d.variant.id: skipped_record(publisher, d.variant) for d in p.decisions if d.action == "skip"}
    records |= {d.variant.id: failed_record(d.variant, d.reason) for d in p.decisions if d.action == "fail"}
    counts = {key: Outcome(ensure_counts(m, tok, key.language)) for key, tok in p.count_jobs().items()}
    held = {lang: Outcome(ensure_heldout(m, lang)) for lang in p.heldout_languages()}
    plots = {}
    for base_id, langs in p.plot_languages().items():
        tok = p.bases[base_id].tokenizer_json
        plots[base_id] = m.output_dir / "plots" / f"{base_id}-coverage.png"
        plot_coverage(base_id, tok, analyze_tokenizer(load_tokenizer_json(tok)),
                      {l: counts[p.count_key(base_id, l)].path for l in langs},
                      {l: read_heldout(held[l].path) for l in langs}, plots[base_id])
    groups, failed = p.groups(counts, held)
    records |= {vid: failed_record(v, error) for vid, (v, error) in failed.items()}
    for g in groups:
        for v in g.variants:
            records[v.id] = build_and_publish(m, v, g.base.folder, g.counts, g.heldout, publisher, plots.get(g.base.id),
                                              force=force)
    ordered = [records[v.id] for v in p.variants]
    write_catalog(ordered, m.output_dir, plots)
    return ordered


def counts_side(manifest: str) -> Callable[[], dict]:
    """Only the counts and held-out splits a run needs (what the first run of a manifest leaves)."""
    from tasks.pipeline.corpus.counts_cache import ensure_counts, ensure_heldout
    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.production.plan import BaseState, plan
    from tasks.pipeline.production.base_models import materialize_base

    def section() -> dict:
        m = load_manifest(Path(manifest))
        p = plan(m, [BaseState.ready(b.id, materialize_base(m, b)) for b in m.spec.base_models], lambda v: None)
        for key, tok in p.count_jobs().items():
            ensure_counts(m, tok, key.language)
        for lang in p.heldout_languages():
            ensure_heldout(m, lang)
        return {}

    return section


def loop_side(manifest: str, home: str) -> Callable[[], dict]:
    """The plain loop, forced like the flow side, after the same setup (the idle server too)."""
    _prefect_ready(home)

    def section() -> dict:
        records = run_plain(manifest, force=True)
        bad = {r.variant_id: r.error for r in records if r.status != "published"}
        assert not bad, bad
        return {"n": len(records)}

    return section


def orchestration_manifest(n: int) -> Path:
    import yaml

    toy = subjects.CACHE / "toy-model"
    if not (toy / "config.json").exists():
        subjects.toy_bytelevel_model(toy, subjects.wordfreq_sentences("en", 3000))
    langs = ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "da"]
    subsets = [[l] for l in langs] + [list(p) for k in (2, 3, 4) for p in itertools.combinations(langs, k)]  # 385
    multiples = [8, 16, 32, 64] if n <= 4 * len(subsets) else [8, 16, 24, 32, 40, 48, 56, 64]
    subsets = subsets[: max(1, n // len(multiples))]
    data = {
        # One registry per manifest: a registry has one owner per variant (the same names differ in n).
        "work_dir": str(WORK / "orch-work"), "output_dir": str(WORK / f"orch-published-{n}"),
        "base_models": [{"id": "toy", "source": {"local": str(toy)}, "license": "mit"}],
        "languages": {l: {"corpora": [{"wordfreq": {"lines": 400, "words": 800}}]} for l in langs},
        "subsets": subsets, "multiples": multiples, "selection": {"min_count": 1}, "verify_sample_lines": 0,
    }
    path = WORK / f"orchestration-{n}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def bench_orchestration(n: int, reps: int, expansion_n: int = 5000, warm: bool = True) -> list[dict]:
    """`warm`: one loop run first, so counting is amortised as in production (smoke mode
    skips it: its counts are tiny, and every child process starts a Prefect server)."""
    manifest = str(orchestration_manifest(n))
    home = str(WORK / "prefect-home")
    if warm:
        run_child("bench.orchestration:loop_side", manifest=manifest, home=home)
    res = interleaved(reps, flow=lambda: run_child("bench.orchestration:flow_side", manifest=manifest, home=home),
                      loop=lambda: run_child("bench.orchestration:loop_side", manifest=manifest, home=home))
    n_built = res["flow"][0].extra["n"]
    assert res["loop"][0].extra["n"] == n_built, (res["loop"][0].extra, n_built)
    r = ratios(res["flow"], res["loop"])
    per_variant_ms = Stats.of([(f.seconds - lp.seconds) / n_built * 1000 for f, lp in zip(res["flow"], res["loop"])])
    expand_s = expansion_seconds(expansion_n)
    plan_cmd = plan_command_seconds(expansion_n)
    return [row(f"5. publish_all over {n_built} variants / plain loop (same engine calls)", r, "<= 1.30x", r.median <= 1.3,
                per_variant_overhead_ms=per_variant_ms.__dict__,
                extrapolated_5000_overhead_s=per_variant_ms.median * 5000 / 1000 + expand_s * 5000 / expansion_n,
                expansion_of_5000_variants_s=expand_s * 5000 / expansion_n,
                plan_command=plan_cmd,
                flow_seconds=Stats.of([s.seconds for s in res["flow"]]).__dict__,
                loop_seconds=Stats.of([s.seconds for s in res["loop"]]).__dict__)]


def bench_scale(n: int = 2000) -> list[dict]:
    """Row 5 at scale: n tiny variants through `publish_all` on the temporary Prefect server,
    counts already made (as in production after the first run): wall time, peak RSS of the
    flow process and of the server, failures, and any "database is locked" in the run's log."""
    manifest = str(orchestration_manifest(n))
    home = str(WORK / "prefect-home-scale")
    run_child("bench.orchestration:counts_side", manifest=manifest)  # counts, once
    # Its own temporary server even where the smoke run shares one (bench/run.py): this row measures it.
    s = run_child("bench.orchestration:flow_side", manifest=manifest, home=home, workers=2, timeout=7200,
                  env={"PREFECT_API_URL": None})
    locked = s.log.lower().count("database is locked")
    built = s.extra["n"]
    return [{"row": f"5. publish_all at scale: {built:,} tiny variants on the temporary server (2 worker threads)",
             "ratio": None, "target": "nothing failed, no 'database is locked'", "met": built == n and not locked,
             "variants": built, "seconds": s.seconds, "variants_per_hour": 3600 * built / s.seconds,
             "seconds_per_variant": s.seconds / built, "flow_peak_rss_bytes": s.peak_bytes,
             "server_peak_rss_bytes": s.extra.get("helper_peak_bytes", 0),
             "run_peak_rss_bytes": s.peak_bytes + s.extra.get("helper_peak_bytes", 0),
             "database_locked_lines": locked, "helpers": s.extra.get("helpers", [])}]


def expansion_seconds(n: int) -> float:
    """Validate + expand a manifest of n variants (10 bases x subsets x 4 multiples)."""
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


def plan_command_seconds(n: int) -> dict:
    """`trimworks plan` on a manifest of n variants (10 bases x subsets x 4 multiples) whose
    registry holds every variant: half up to date, half stale. In-process and as a command."""
    import json
    import subprocess
    import sys

    import yaml

    from tasks.pipeline.manifest import fingerprint_fields, fingerprint_parts, load_manifest
    from tasks.pipeline.report.plan_report import corpus_identities, local_bases, plan_report
    from tasks.pipeline.production.plan import plan
    from tasks.pipeline.publish.targets import RECORD_NAME, LocalRegistry

    toy = subjects.CACHE / "toy-model"
    if not (toy / "config.json").exists():
        orchestration_manifest(8)
    langs = ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "da", "fi", "cs", "hu", "ro", "bg"]
    subsets = [list(c) for k in (1, 2, 3) for c in itertools.combinations(langs, k)][: n // 40]
    root = WORK / f"plan-{n}"
    data = {"work_dir": str(root / "work"), "output_dir": str(root / "published"),
            "base_models": [{"id": f"b{i}", "source": {"local": str(toy)}, "license": "mit"} for i in range(10)],
            "languages": {l: {"corpora": [{"wordfreq": {}}]} for l in langs}, "subsets": subsets,
            "multiples": [8, 16, 32, 64], "lid": {"enabled": False}}
    path = root / "manifest.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    m = load_manifest(path)
    bases = local_bases(m)
    registry = LocalRegistry(m.output_dir)
    content = corpus_identities(m)  # fingerprints follow corpus content, as in a run
    p = plan(m, bases, lambda v: None, corpus_identity=content)
    assert len(p.variants) == len(subsets) * 40
    for i, v in enumerate(p.variants):
        target = registry.target(v)
        target.mkdir(parents=True, exist_ok=True)
        parts = fingerprint_parts(fingerprint_fields(m, m.base(v.base), v.languages, v.multiple, p.bases[v.base].identity,
                                                     corpus_content=content))
        fp = v.fingerprint if i % 2 else "0" * 64
        (target / RECORD_NAME).write_text(json.dumps({"fingerprint": fp, "fingerprint_parts": parts if i % 2 else
                                                      {**parts, "selection": "old"}}))
    t = time.perf_counter()
    report = plan_report(load_manifest(path), str(path))
    in_process = time.perf_counter() - t
    assert report.tally() == {"up to date": len(p.variants) // 2, "stale": len(p.variants) - len(p.variants) // 2}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from flows.cli import main; main()", "plan", str(path)], check=True,
                   capture_output=True, cwd=REPO)
    command = time.perf_counter() - t
    return {"variants": len(p.variants), "plan_in_process_s": in_process, "plan_command_s": command}
