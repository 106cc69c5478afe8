"""Which variant carries which check: the proof always, output comparison once per base and
architecture per run plus a sample, never above a size; the card's proof section and the
catalog's checks; and the base's dtype kept, from a bf16 folder or a GGUF file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.engine.verify.proof import parameter_count
from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint
from tasks.pipeline.production.build import build_and_publish
from tasks.pipeline.report.catalog import write_catalog
from tasks.pipeline.production.checks import COMPARE_COST, build_cost, choose_carriers, output_check, sampled, start_run
from tasks.pipeline.corpus.counts_cache import ensure_counts, ensure_heldout
from tasks.pipeline.manifest import Variant, VerifySpec, expand, load_manifest
from tasks.pipeline.publish.targets import LocalRegistry
from tasks.pipeline.production.base_models import materialize_base
from tests import subjects


@pytest.fixture(scope="module")
def bases(tmp_path_factory, toy_model_session):
    return subjects.two_toy_bases(tmp_path_factory.mktemp("bases"), toy_model_session)


def _variant(i: int, base: str = "b") -> Variant:
    return Variant(id=f"{base}-en-v{i}", base=base, languages=("en",), multiple=i, repo_id=f"o/{base}-{i}", fingerprint=f"fp{i}")


def test_output_check_policy(toy_model):
    start_run()
    auto = VerifySpec(outputs_sample=0.0)
    decisions = [output_check(auto, _variant(i), toy_model, 8) for i in range(4)]
    assert [d[0] for d in decisions] == [True, False, False, False]  # once per base and architecture
    assert "GPT2LMHeadModel" in decisions[0][1] and "b-en-v0 carried" in decisions[1][1]
    start_run()  # a new run compares the base again
    assert output_check(auto, _variant(3), toy_model, 8)[0]
    assert not output_check(VerifySpec(outputs="never"), _variant(5), toy_model, 8)[0]
    assert output_check(VerifySpec(outputs="always"), _variant(6), toy_model, 8)[0]
    assert not output_check(VerifySpec(outputs="always"), _variant(6), toy_model, 0)[0]
    small = VerifySpec(outputs_max_params=1000)
    start_run()
    compared, why, *_ = output_check(small, _variant(7), toy_model, 8)
    assert not compared and "above verify.outputs_max_params" in why


def test_the_flow_chosen_carrier_decides_without_shared_state(toy_model, tmp_path):
    """Worker processes share no memory: the flow names the carrier, the first variant of each
    base and architecture in plan order, and every process gives the same answers and texts."""
    other = tmp_path / "other"
    import shutil

    shutil.copytree(toy_model, other)
    carriers = choose_carriers([("b-en-v1", toy_model), ("c-en-v1", other), ("b-en-v2", toy_model), ("c-en-v2", other)])
    assert carriers == {"b-en-v1": "b-en-v1", "c-en-v1": "c-en-v1", "b-en-v2": "b-en-v1", "c-en-v2": "c-en-v1"}
    auto = VerifySpec(outputs_sample=0.0)
    start_run()
    output_check(auto, _variant(9), toy_model, 8)  # a carrier named by the flow overrides what this process saw first
    first = output_check(auto, _variant(1), toy_model, 8, carrier="b-en-v1")
    assert first.compare and first.why.startswith("compared in float64: first variant of this base and architecture (")
    assert first.why.endswith(") in the run")
    later = output_check(auto, _variant(2), toy_model, 8, carrier="b-en-v1")
    assert not later.compare and later.why == "not compared: b-en-v1 carried this base's output comparison in this run"


def test_groups_carrying_a_comparison_cost_more_and_start_first(toy_model, tmp_path):
    """The flow starts the costliest ready group first: one holding a comparison (the carrier, a
    sampled variant) or a bigger base, so a run does not end on one long group; a base whose
    config cannot be read costs nothing (its build reports it)."""
    params = parameter_count(toy_model)
    carrier, plain = [_variant(1), _variant(2)], [_variant(3), _variant(4)]
    carriers = {v.id: "b-en-v1" for v in carrier + plain}
    auto = VerifySpec(outputs_sample=0.0)
    assert build_cost(auto, carrier, toy_model, 8, carriers) == params * (2 + COMPARE_COST)
    assert build_cost(auto, plain, toy_model, 8, carriers) == params * 2
    sampled_ids = [v for v in (_variant(i) for i in range(40)) if sampled(v.fingerprint, 0.5)]
    unsampled = [v for v in (_variant(i) for i in range(40)) if not sampled(v.fingerprint, 0.5)]
    other = {v.id: "b-en-v1" for v in sampled_ids + unsampled}  # not the carrier: compared only if sampled
    half = VerifySpec(outputs_sample=0.5)
    assert build_cost(half, sampled_ids[:1], toy_model, 8, other) == params * (1 + COMPARE_COST)
    assert build_cost(half, unsampled[:1], toy_model, 8, other) == params
    assert build_cost(VerifySpec(outputs="never"), carrier, toy_model, 8, carriers) == params * 2
    assert build_cost(auto, plain, tmp_path / "missing", 8, carriers) == 0.0


def test_output_precision_follows_the_memory_budget(toy_model):
    """float64 where 8 bytes per parameter fit verify.outputs_memory_gb, else float32 with its
    wider tolerance, else (auto) not compared; the reason says which."""
    params = parameter_count(toy_model)
    start_run()
    roomy = output_check(VerifySpec(), _variant(1), toy_model, 8)
    assert roomy.compare and roomy.dtype == "float64" and roomy.tolerance == 1e-5 and "in float64" in roomy.why
    start_run()
    half = VerifySpec(outputs_memory_gb=6 * params / 1e9)  # float32 fits, float64 does not
    c = output_check(half, _variant(2), toy_model, 8)
    assert c.compare and c.dtype == "float32" and c.tolerance == 1e-3 and "in float32" in c.why
    start_run()
    tight = VerifySpec(outputs_memory_gb=2 * params / 1e9)
    c = output_check(tight, _variant(3), toy_model, 8)
    assert not c.compare and "verify.outputs_memory_gb" in c.why
    c = output_check(VerifySpec(outputs="always", outputs_memory_gb=2 * params / 1e9), _variant(4), toy_model, 8)
    assert c.compare and c.dtype == "float32"


def test_sample_is_deterministic_and_near_its_share():
    picks = [sampled(f"fingerprint-{i}", 0.1) for i in range(4000)]
    assert picks == [sampled(f"fingerprint-{i}", 0.1) for i in range(4000)]
    assert 0.08 < sum(picks) / len(picks) < 0.12
    assert not any(sampled(f"fingerprint-{i}", 0.0) for i in range(100))


def _build_all(tmp_path: Path, bases, **over) -> tuple[list, Path]:
    """The pipeline's per-variant path (no Prefect): materialize, count, build and publish each."""
    m = load_manifest(subjects.make_manifest(tmp_path, bases, **over))
    start_run()
    registry = LocalRegistry(m.output_dir)
    records = []
    for v in expand(m):
        base_dir = materialize_base(m, m.base(v.base))
        counts = {lang: ensure_counts(m, base_dir / "tokenizer.json", lang) for lang in v.languages}
        held = {lang: ensure_heldout(m, lang) for lang in v.languages}
        records.append(build_and_publish(m, v, base_dir, counts, held, registry, str(registry.target(v))))
    write_catalog(records, m.output_dir, {})
    return records, m.output_dir


def test_pipeline_records_which_variant_carried_which_check(tmp_path, bases):
    records, out = _build_all(tmp_path, bases, verify={"outputs": "auto", "outputs_sample": 0.0})
    assert all(r.status == "published" for r in records), [r.error for r in records]
    assert all(r.proof_passed and r.checks[0] == "proof" for r in records)
    compared = [r for r in records if "outputs" in r.checks]
    assert sorted(r.base for r in compared) == ["toy-a", "toy-b"]  # one per base model in the run
    assert all(r.output_max_abs_diff == 0.0 or r.output_max_abs_diff <= 1e-12 for r in compared)
    assert all(r.output_max_abs_diff is None and "carried" in r.output_check for r in records if r not in compared)
    assert {r.dtype for r in records} == {"float32"}

    card = (Path(records[1].location) / "README.md").read_text()
    assert "## Proof" in card and "| kept_rows_identical | passed |" in card and "| config | passed |" in card
    not_compared = next(r for r in records if r not in compared)
    card = (Path(not_compared.location) / "README.md").read_text()
    assert "Outputs were not compared for this variant: toy-" in card and "FAILED" not in card
    catalog = pq.read_table(out / "catalog.parquet").to_pylist()
    assert {(c["variant_id"], c["checks"]) for c in catalog} == {(r.variant_id, ",".join(r.checks)) for r in records}
    md = (out / "catalog.md").read_text()
    assert "## Checks per variant" in md and md.count("| proof, outputs |") == 2


def test_never_compares_outputs_and_still_proves(tmp_path, bases):
    records, _ = _build_all(tmp_path, bases, verify={"outputs": "never"}, subsets=[["en"]], multiples=[8])
    assert all(r.status == "published" and r.checks == ["proof"] and r.proof_passed for r in records)
    assert all(r.fidelity["en"].identity == 1.0 for r in records)
    # Check (d) ran on the held-out split and on the real benchmark text (UDHR), each named.
    for r in records:
        names = {c.name if hasattr(c, "name") else c["name"] for c in r.proof}
        assert {"tokenization:en", "tokenization:benchmark:en"} <= names, names
        assert set(r.fidelity) == {"en"}  # the held-out figures stay held-out only


def test_gguf_source_kept_in_bf16_and_named_on_the_card(tmp_path, monkeypatch):
    """The real SmolLM2 Q4_1 GGUF, converted once (~20 s) to the manifest's dtype (default bf16),
    its fields parsed once (config, tokenizer, weights and quantization share one reader)."""
    import gguf as gguf_lib

    parsed = []

    class CountingReader(gguf_lib.GGUFReader):
        def __init__(self, path, mode="r"):
            parsed.append(str(path))
            super().__init__(path, mode)

    monkeypatch.setattr(gguf_lib, "GGUFReader", CountingReader)
    gguf = subjects.smollm2_gguf()
    data = {
        "work_dir": str(tmp_path / "work"), "output_dir": str(tmp_path / "published"),
        "base_models": [{"id": "smol", "display_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
                         "source": {"gguf": str(gguf)}, "license": "apache-2.0"}],
        "languages": {"en": {"corpora": [{"wordfreq": {"lines": 300, "words": 500}}]}},
        "subsets": [["en"]], "multiples": [64], "selection": {"min_count": 1},
        "verify": {"outputs": "never"}, "lid": {"enabled": False},
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    m = load_manifest(path)
    assert m.spec.base_models[0].source.dtype == "bfloat16"
    base_dir = materialize_base(m, m.base("smol"))
    assert base_dir.name.endswith("-bfloat16")
    assert parsed == [str(gguf)], parsed
    assert gguf_lib.GGUFReader is CountingReader  # the conversion gave the module back as it found it
    ckpt = LazyCheckpoint(base_dir)
    assert {t.dtype for t in ckpt.tensors.values()} == {"BF16"}
    info = json.loads((base_dir / "trimworks_source.json").read_text())
    assert info["file"] == gguf.name and info["quantization"] == "Q4_1" and info["dtype"] == "bfloat16"
    assert info["tensor_types"]["Q4_1"] > 100
    (v,) = expand(m)
    counts = {"en": ensure_counts(m, base_dir / "tokenizer.json", "en")}
    registry = LocalRegistry(m.output_dir)
    rec = build_and_publish(m, v, base_dir, counts, {"en": ensure_heldout(m, "en")}, registry, str(registry.target(v)))
    assert rec.status == "published", rec.error
    assert rec.dtype == "bfloat16" and rec.source_file == gguf.name and rec.source_quantization == "Q4_1"
    assert rec.bytes_before == sum(t.nbytes for t in ckpt.tensors.values()) < 300e6  # bf16: ~269 MB, not fp32's 538 MB
    out_dtypes = {t.dtype for t in LazyCheckpoint(Path(rec.location)).tensors.values()}
    assert out_dtypes == {"BF16"}
    card = (Path(rec.location) / "README.md").read_text()
    assert f"GGUF file `{gguf.name}` (quantization Q4_1)" in card and "stored in bfloat16" in card
    # Another dtype is another cached folder.
    data["base_models"][0]["source"]["dtype"] = "float16"
    path.write_text(yaml.safe_dump(data))
    m16 = load_manifest(path)
    assert expand(m16)[0].fingerprint != v.fingerprint


class _Group:
    def __init__(self, name: str, ids: list[str]):
        self.name, self.variants = name, [Variant(id=i, base=name.split("-")[0], languages=("en",), multiple=8,
                                                  repo_id=f"o/{i}", fingerprint=i) for i in ids]


def _rec(vid: str, status: str, stage: str | None = None, checks=("proof",)):
    from tasks.pipeline.report.record import VariantRecord

    return VariantRecord(variant_id=vid, base=vid.split("-")[0], languages=["en"], multiple=8, status=status,
                         repo_id=f"o/{vid}", fingerprint=vid,
                         failed_stage=stage, checks=list(checks), error="boom" if status == "failed" else None)


def test_siblings_wait_for_their_base_comparison_and_fail_with_it():
    from tasks.pipeline.production.checks import VouchedSchedule

    a1, a2, a3, b1 = _Group("a-en", ["a-en-v8"]), _Group("a-fr", ["a-fr-v8"]), _Group("a-de", ["a-de-v8"]), _Group("b-en", ["b-en-v8"])
    carriers = choose_carriers([(v.id, Path(g.name.split("-")[0])) for g in (a1, a2, a3, b1) for v in g.variants])
    s = VouchedSchedule([a1, a2, a3, b1], carriers, sequential=True)
    assert [(g.name, c) for g, c in s.take_ready()] == [("a-en", "a-en-v8"), ("b-en", "b-en-v8")]  # one carrier per base
    # b's comparison fails: nothing else of b was waiting; a's fails: a's two other groups fail with its reason.
    assert s.finished(b1, [_rec("b-en-v8", "failed", "compare")]) == []
    failed = s.finished(a1, [_rec("a-en-v8", "failed", "compare")])
    assert [g.name for g, _ in failed] == ["a-fr", "a-de"] and not s.take_ready()
    assert "output comparison of its base failed on a-en-v8: boom" in failed[0][1]


def test_a_passed_comparison_releases_the_base_and_an_early_failure_hands_it_on():
    from tasks.pipeline.production.checks import VouchedSchedule

    a1, a2, a3 = _Group("a-en", ["a-en-v8"]), _Group("a-fr", ["a-fr-v8"]), _Group("a-de", ["a-de-v8"])
    carriers = {"a-en-v8": "a-en-v8", "a-fr-v8": "a-en-v8", "a-de-v8": "a-en-v8"}
    s = VouchedSchedule([a1, a2, a3], carriers, sequential=True)
    assert [g.name for g, _ in s.take_ready()] == ["a-en"]
    # The carrier failed while selecting (before comparing): the next group carries the comparison.
    assert s.finished(a1, [_rec("a-en-v8", "failed", "select")]) == []
    assert [(g.name, c) for g, c in s.take_ready()] == [("a-fr", "a-fr-v8")]
    assert s.finished(a2, [_rec("a-fr-v8", "published", checks=("proof", "outputs"))]) == []
    assert [(g.name, c) for g, c in s.take_ready()] == [("a-de", "a-fr-v8")]  # carried by a-fr-v8
    # Without a carrier (outputs always / never) every group starts at once.
    assert len(VouchedSchedule([a1, a2, a3], carriers, sequential=False).take_ready()) == 3


def test_a_failed_comparison_publishes_no_sibling_of_its_base(tmp_path, bases, monkeypatch, prefect_harness):
    """The flow: toy-a's comparison fails, so none of toy-a's variants is published on the proof
    alone; toy-b's passes and all of toy-b publishes."""
    from flows.publish_all import publish_all
    from tasks.pipeline.production import build

    real = build.verify_exactness

    def failing_for_toy_a(base_dir, *args, **kwargs):
        if Path(base_dir).name == "toy-a":
            raise RuntimeError("the comparison crashed")
        return real(base_dir, *args, **kwargs)

    monkeypatch.setattr(build, "verify_exactness", failing_for_toy_a)
    manifest = subjects.make_manifest(tmp_path, bases, verify={"outputs": "auto", "outputs_sample": 0.0})
    summary = publish_all(manifest=str(manifest))
    assert sorted(summary["published"]) == ["toy-b-en-fr-v64", "toy-b-en-fr-v8", "toy-b-en-v64", "toy-b-en-v8"]
    assert sorted(summary["failed"]) == ["toy-a-en-fr-v64", "toy-a-en-fr-v8", "toy-a-en-v64", "toy-a-en-v8"]
    assert "the comparison crashed" in summary["failed"]["toy-a-en-v8"]
    for vid in ("toy-a-en-v64", "toy-a-en-fr-v8", "toy-a-en-fr-v64"):
        assert "output comparison of its base failed on toy-a-en-v8" in summary["failed"][vid], summary["failed"][vid]
    assert not list((tmp_path / "published" / "trimworks").glob("toy-a-*"))
    # A later run (`make model` of one sibling) does not publish it on the proof alone: it carries
    # the comparison itself, which fails the same way, until the fault is gone.
    again = publish_all(manifest=str(manifest), only=["toy-a-en-fr-v64"])
    assert again["published"] == [] and "the comparison crashed" in again["failed"]["toy-a-en-fr-v64"]
    monkeypatch.setattr(build, "verify_exactness", real)
    fixed = publish_all(manifest=str(manifest))
    assert sorted(fixed["published"]) == ["toy-a-en-fr-v64", "toy-a-en-fr-v8", "toy-a-en-v64", "toy-a-en-v8"]


def test_a_base_beyond_the_comparison_budget_says_only_the_proof_stands(tmp_path, bases, prefect_harness):
    """No variant of a base above verify.outputs_max_params compares outputs: card and catalog say
    that only the structural proof stands."""
    from flows.publish_all import publish_all

    manifest = subjects.make_manifest(tmp_path, bases, verify={"outputs": "auto", "outputs_max_params": 1000})
    summary = publish_all(manifest=str(manifest))
    assert summary["published"] and not summary["failed"]
    card = next((tmp_path / "published" / "trimworks").glob("toy-a-*")) / "README.md"
    assert "Outputs were not compared for this variant: only the structural proof stands for this base: it has" in card.read_text()
    catalog = (tmp_path / "published" / "catalog.md").read_text()
    assert "No variant of toy-a, toy-b had its outputs compared: only the structural proof stands for this base" in catalog
    # The loss runs within the same budget: not measured, and the card says why.
    assert "**Loss on uncovered lines**: not measured: the base has " in card.read_text()
    assert "above verify.outputs_max_params 1,000" in card.read_text()


def test_every_variant_measures_the_loss_from_its_bases_shared_sequences(tmp_path, bases, prefect_harness):
    """Under `verify.outputs: auto` most variants rest on the proof, yet every one measures the
    loss on uncovered text, from the base's hidden states computed once per distinct sequence
    (the work folder's loss-sequences) and its own head; a rerun with --force computes none again."""
    from flows.publish_all import publish_all
    from tasks.engine.verify import base_sequences as S
    from tasks.pipeline.production.bodies import LOSS_SEQUENCES

    manifest = subjects.make_manifest(tmp_path, bases, verify={"outputs": "auto", "outputs_sample": 0.0})
    summary = publish_all(manifest=str(manifest))
    assert len(summary["published"]) >= 8 and not summary["failed"]
    records = [json.loads(p.read_text()) for p in (tmp_path / "published" / "trimworks").glob("*/evaluation.json")]
    proof_only = [r for r in records if "compare" not in r["stage_seconds"]]
    assert proof_only and len(proof_only) < len(records)
    for r in records:
        assert r["loss"] and r["loss_note"] == "", r["variant_id"]
        assert all(tl["through_base"] and tl["kind"] == "nll_per_char" for tl in r["loss"].values()), r["variant_id"]
        assert "loss" in r["stage_seconds"]
    card = (tmp_path / "published" / proof_only[0]["location"] / "README.md").read_text()
    assert "**Loss on covered and uncovered lines**" in card and "the variant's own output head" in card
    stored = list((tmp_path / "work" / LOSS_SEQUENCES).rglob("*.npz"))
    lines_read = sum(tl["covered"]["lines"] + tl["uncovered"]["lines"] for r in records for tl in r["loss"].values())
    assert 0 < len(stored) < lines_read  # siblings shared the sequences they read alike
    S.SEQUENCES.clear()
    calls = []
    real = S.compute_sequences
    monkey = pytest.MonkeyPatch()
    monkey.setattr(S, "compute_sequences", lambda *a: calls.append(len(a[1])) or real(*a))
    try:
        again = publish_all(manifest=str(manifest), force=True)
    finally:
        monkey.undo()
    assert sorted(again["published"]) == sorted(summary["published"])
    assert calls == []  # every sequence was found in the folder


def test_a_failed_loss_measurement_is_said_not_fatal(tmp_path, bases, prefect_harness, monkeypatch):
    """The loss is a measurement: where it fails, the exact variant is still published and its
    card says the loss was not measured and why."""
    from flows.publish_all import publish_all
    from tasks.pipeline.production import build

    def broken(*_a, **_k):
        raise RuntimeError("no kernel for this op")

    monkeypatch.setattr(build, "texts_loss", broken)
    manifest = subjects.make_manifest(tmp_path, bases, verify={"outputs": "auto"})
    summary = publish_all(manifest=str(manifest))
    assert summary["published"] and not summary["failed"]
    card = (next((tmp_path / "published" / "trimworks").glob("*")) / "README.md").read_text()
    assert "**Loss on uncovered lines**: not measured: the measurement failed (RuntimeError: no kernel for this op)" in card


def test_exact_but_unfit_variants_are_recorded_carded_and_planned(tmp_path, bases, prefect_harness):
    """Fitness is the verdict's second half: a variant exact on its covered lines but keeping
    too little of its own languages' real text (here: a threshold no toy variant meets) is
    published, recorded unfit with the reason, said so on its card, and listed by `plan`."""
    import pyarrow.parquet as pq

    from flows.publish_all import publish_all
    from tasks.pipeline.manifest import load_manifest
    from tasks.pipeline.report.plan_report import plan_report

    manifest = subjects.make_manifest(tmp_path, bases, verify={"outputs": "always", "fitness": {"min_token_coverage": 1.0}})
    summary = publish_all(manifest=str(manifest))
    assert not summary["failed"]
    rows = {r["variant_id"]: r for r in pq.read_table(tmp_path / "published" / "catalog.parquet").to_pylist()}
    unfit = {vid for vid, r in rows.items() if r["fit_for_real_text"] == "no"}
    assert unfit, rows  # the toy trims keep < 100 % of the UDHR's tokens
    vid = sorted(unfit)[0]
    assert "token coverage" in rows[vid]["fitness_failures"] and "< 1" in rows[vid]["fitness_failures"]
    card = (tmp_path / "published" / rows[vid]["location"] / "README.md").read_text()
    assert "**Verdict on this text**: exact on its covered lines (the proof and the output comparison); **not fit**" in card
    # The loss where the variant does not cover its text: measured (outputs compared), recorded, carded.
    assert "**Loss on covered and uncovered lines** (negative log-likelihood per character, base → variant" in card
    record = json.loads((tmp_path / "published" / rows[vid]["location"] / "evaluation.json").read_text())
    udhr_en = record["loss"]["udhr:en"]
    assert udhr_en["kind"] == "nll_per_char" and udhr_en["covered"]["lines"] + udhr_en["uncovered"]["lines"] > 0
    ratios = [tl["uncovered"]["nll_per_char_after"] / tl["uncovered"]["nll_per_char_before"]
              for k, tl in record["loss"].items() if k.startswith("udhr:") and tl["uncovered"]["lines"]]
    assert rows[vid]["udhr_uncovered_nll_ratio"] == pytest.approx(max(ratios, default=float("nan")), nan_ok=True)
    assert udhr_en["covered"]["lines"] == 0 or (udhr_en["covered"]["nll_per_char_after"]
                                                 <= udhr_en["covered"]["nll_per_char_before"] + 1e-12)
    report = plan_report(load_manifest(manifest), str(manifest))
    assert set(report.unfit) == unfit
    assert f"exact but not fit for its own real text: {vid}: " in report.render()
    (tmp_path / "bad").mkdir()
    with pytest.raises(Exception, match="min_token_coverag"):  # a misspelt threshold is refused, not ignored
        load_manifest(subjects.make_manifest(tmp_path / "bad", bases, verify={"fitness": {"min_token_coverag": 0.9}}))


def test_manifest_rules_reach_the_proof_and_the_comparison(tmp_path, toy_model_session):
    """A base whose vocabulary sits on axis 1 of a head (MobileBERT) is trimmed by the manifest's
    `architectures:` rule, and the pipeline's proof and output comparison use the same rules: the
    variant is published, proved and compared exact (the proof without the rule fails)."""
    import shutil

    import torch
    import transformers as T

    base = tmp_path / "mobilebert"
    base.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(toy_model_session / name, base / name)
    n = json.loads((toy_model_session / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    T.MobileBertForMaskedLM(T.MobileBertConfig(
        vocab_size=n, hidden_size=16, embedding_size=8, intra_bottleneck_size=8, true_hidden_size=8, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=16, num_feedforward_networks=1, max_position_embeddings=64,
        pad_token_id=0)).save_pretrained(str(base))
    rule = {"pattern": r"^cls\.predictions\.dense\.weight$", "axis": 1, "role": "MobileBERT MLM head"}
    records, _ = _build_all(tmp_path, (base, toy_model_session), subsets=[["en"]], multiples=[8],
                            architectures={"vocab_tensors": [rule]})
    rec = next(r for r in records if r.base == "toy-a")
    assert rec.status == "published" and rec.proof_passed, rec.error
    assert "outputs" in rec.checks and rec.output_max_abs_diff is not None and rec.output_max_abs_diff <= 1e-9
    sliced = next(c for c in rec.proof if (c.name if hasattr(c, "name") else c["name"]) == "kept_rows_identical")
    assert "3 vocab-sized tensors" in (sliced.detail if hasattr(sliced, "detail") else sliced["detail"])
