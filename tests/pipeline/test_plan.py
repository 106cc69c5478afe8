"""The run's plan, decided without Prefect: build / skip / fail early per variant, counts
once per tokenizer x language, and build groups of one base x language subset."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.engine.errors import ManifestError
from tasks.pipeline.manifest import load_manifest
from tasks.pipeline.production.plan import BaseState, CountKey, Outcome, plan
from tests import subjects


@pytest.fixture(scope="module")
def setup(tmp_path_factory, toy_model_session):
    root = tmp_path_factory.mktemp("plan")
    bases = subjects.two_toy_bases(root, toy_model_session)
    m = load_manifest(subjects.make_manifest(root, bases))
    states = [BaseState.ready("toy-a", bases[0]), BaseState.ready("toy-b", bases[1])]
    return m, states


def nothing_published(_variant) -> None:
    return None


def test_fresh_registry_builds_everything_and_counts_once_per_tokenizer(setup):
    m, states = setup
    p = plan(m, states, nothing_published)
    assert [d.action for d in p.decisions] == ["build"] * 8
    assert {d.reason for d in p.decisions} == {"not published"}
    assert [v.id for v in p.variants] == [
        f"{b}-{s}-v{k}" for b in ("toy-a", "toy-b") for s in ("en", "en-fr") for k in (8, 64)]
    # The two bases share one tokenizer: their counts are made once per language, not twice.
    assert states[0].tokenizer == states[1].tokenizer
    assert set(p.count_jobs()) == {CountKey(states[0].tokenizer, "en"), CountKey(states[0].tokenizer, "fr")}
    assert p.heldout_languages() == ["en", "fr"]
    assert p.plot_languages() == {"toy-a": ["en", "fr"], "toy-b": ["en", "fr"]}
    assert p.summary() == "8 variants: 8 to build, 0 up to date, 0 failed early"


def test_published_fingerprint_decides_skip_force_and_stale(setup):
    m, states = setup
    first = plan(m, states, nothing_published)
    current = {v.id: v.fingerprint for v in first.variants}
    stale = first.variants[0].id
    published = {**current, stale: "0" * 64}
    asked = []

    def lookup(v):
        asked.append(v.id)
        return published.get(v.id)

    p = plan(m, states, lookup)
    by_id = {d.variant.id: d for d in p.decisions}
    assert by_id[stale].action == "build" and by_id[stale].reason == "fingerprint changed"
    assert by_id[stale].published_fingerprint == "0" * 64
    assert [v.id for v in p.to_build] == [stale]
    assert len(p.up_to_date) == 7 and all(by_id[v.id].reason == "up to date" for v in p.up_to_date)
    assert set(p.count_jobs()) == {CountKey(states[0].tokenizer, "en")}  # only what the stale variant needs

    asked.clear()
    forced = plan(m, states, lookup, force=True)
    assert [d.action for d in forced.decisions] == ["build"] * 8 and asked == []  # --force asks nobody


def test_broken_base_fails_only_its_own_variants(setup):
    m, states = setup
    broken = [states[0], BaseState.broken("toy-b", "base model toy-b: no config.json")]
    p = plan(m, broken, nothing_published)
    failed = {d.variant.id: d.reason for d in p.failed_early}
    assert set(failed) == {v.id for v in p.variants if v.base == "toy-b"} and len(failed) == 4
    assert set(failed.values()) == {"base model toy-b: no config.json"}
    assert {v.base for v in p.to_build} == {"toy-a"}
    assert set(p.plot_languages()) == {"toy-a"}


def test_groups_one_task_per_base_and_subset_and_failed_counts_fail_their_variants(setup):
    m, states = setup
    p = plan(m, states, nothing_published)
    tok = states[0].tokenizer
    counts = {CountKey(tok, "en"): Outcome(Path("/c/en.parquet")), CountKey(tok, "fr"): Outcome(error="fr: no lines kept")}
    heldout = {"en": Outcome(Path("/h/en.txt")), "fr": Outcome(Path("/h/fr.txt"))}
    groups, failed = p.groups(counts, heldout)
    assert [g.name for g in groups] == ["toy-a-en", "toy-b-en"]
    assert [[v.multiple for v in g.variants] for g in groups] == [[8, 64], [8, 64]]
    assert groups[0].counts == {"en": Path("/c/en.parquet")} and groups[0].heldout == {"en": Path("/h/en.txt")}
    assert groups[1].base.folder == states[1].folder
    assert sorted(failed) == sorted(v.id for v in p.variants if v.languages == ("en", "fr"))
    assert {error for _, error in failed.values()} == {"fr: no lines kept"}

    all_ok = {**counts, CountKey(tok, "fr"): Outcome(Path("/c/fr.parquet"))}
    groups, failed = p.groups(all_ok, heldout)
    assert not failed and [g.name for g in groups] == ["toy-a-en", "toy-a-en-fr", "toy-b-en", "toy-b-en-fr"]
    assert groups[1].counts == {"en": Path("/c/en.parquet"), "fr": Path("/c/fr.parquet")}


def test_only_selects_ids_and_refuses_unknown_ones_with_suggestions(setup):
    m, states = setup
    p = plan(m, states, nothing_published, only=["toy-b-en-v64", "toy-a-en-v8"])
    assert [v.id for v in p.variants] == ["toy-a-en-v8", "toy-b-en-v64"]  # manifest order
    with pytest.raises(ManifestError, match="toy-a-en-v6"):
        plan(m, states, nothing_published, only=["toy-a-en-v6"])


# --- `trimworks plan`: the same plan read against what is on disk -------------------------
def fake_registry(m, states) -> dict[str, str]:
    """Records for some variants (no model is built): returns variant id -> expected status."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.pipeline.manifest import fingerprint_fields, fingerprint_parts
    from tasks.pipeline.publish.targets import RECORD_NAME, LocalRegistry

    from tasks.pipeline.report.plan_report import corpus_identities

    content = corpus_identities(m)  # as a run computes them: fingerprints follow corpus content
    p = plan(m, states, nothing_published, corpus_identity=content)
    registry = LocalRegistry(m.output_dir)
    identity = {s.id: s.identity for s in states}
    v0, v1, v2, v3 = p.variants[:4]

    def publish(v, fingerprint, parts):
        target = registry.target(v)
        target.mkdir(parents=True, exist_ok=True)
        (target / RECORD_NAME).write_text(json.dumps({"fingerprint": fingerprint, "fingerprint_parts": parts}))

    parts = {v.id: fingerprint_parts(fingerprint_fields(m, m.base(v.base), v.languages, v.multiple, identity[v.base],
                                                     corpus_content=content))
             for v in (v0, v1)}
    publish(v0, v0.fingerprint, parts[v0.id])
    publish(v1, "1" * 64, {**parts[v1.id], "selection": "x", "corpora.en": "y"})
    publish(v2, "2" * 64, {})
    pq.write_table(pa.table({"variant_id": [v3.id, v0.id], "status": ["failed", "published"], "error": ["boom: disk full", None]}),
                   m.output_dir / "catalog.parquet")
    expected = {v.id: "missing" for v in p.variants}
    expected.update({v0.id: "up to date", v1.id: "stale", v2.id: "stale", v3.id: "failed last time"})
    return expected


def test_plan_report_names_status_changed_fields_and_work(setup):
    from tasks.pipeline.report.plan_report import plan_report

    m, states = setup
    expected = fake_registry(m, states)
    report = plan_report(m, "manifest.yaml")
    got = {s.variant.id: s for s in report.statuses}
    assert {k: s.status for k, s in got.items()} == expected
    stale = [s for s in report.statuses if s.status == "stale"]
    assert stale[0].changed == ("selection", "corpora.en") and "fingerprint fields were recorded" in stale[1].detail
    assert next(s for s in report.statuses if s.status == "failed last time").detail == "boom: disk full"
    assert len(report.plan.to_build) == 7
    assert report.to_count == [("toy-a+toy-b", "en"), ("toy-a+toy-b", "fr")]  # shared tokenizer: counted once
    assert report.heldout_to_make == ["en", "fr"] and report.bases_to_materialize == []
    text = report.render()
    assert text.splitlines()[0] == "manifest.yaml: 8 variants: 1 failed last time, 2 stale, 4 missing, 1 up to date"
    assert "changed: selection, corpora.en" in text and "up to date" not in "\n".join(text.splitlines()[1:])
    assert "toy-a-en-v8" in report.render(show_all=True).splitlines()[-1]



def test_plan_lists_bases_whose_outputs_no_variant_compares(setup, tmp_path):
    """Where the budget allows no output comparison, only the proof stands: `plan` says so per
    base, as the cards and catalog do."""
    from tasks.pipeline.report.plan_report import plan_report

    m, _states = setup
    assert plan_report(m, "manifest.yaml").proof_only == {}  # toy bases fit the default budget
    tight = m.spec.model_copy(update={"verify": m.spec.verify.model_copy(update={"outputs": "auto", "outputs_max_params": 1000})})
    from tasks.pipeline.manifest import LoadedManifest

    report = plan_report(LoadedManifest(m.path, tight, m.raw_text), "manifest.yaml")
    assert set(report.proof_only) == {"toy-a", "toy-b"}
    assert "only the structural proof stands for this base: it has" in report.proof_only["toy-a"]
    assert "above verify.outputs_max_params 1,000" in report.proof_only["toy-a"]
    assert "outputs never compared for base toy-a: only the structural proof stands" in report.render()
    assert report.as_json()["proof_only"] == report.proof_only

def cli_without_prefect(args: list[str]) -> str:
    """The CLI's output in a fresh interpreter, which must not have imported Prefect."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from flows.cli import app; "
            f"r = CliRunner().invoke(app, {args!r}); print(r.output); "
            "assert r.exit_code == 0, r.output; assert 'prefect' not in sys.modules, 'prefect was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=subjects.REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_plan_command_starts_no_prefect(setup):
    import json

    m, _ = setup
    data = json.loads(cli_without_prefect(["plan", str(m.path), "--json"]))
    assert data["tally"]["missing"] >= 1 and len(data["variants"]) == 8
    assert {v["status"] for v in data["variants"]} <= {"up to date", "stale", "missing", "failed last time"}


def test_publish_all_dry_run_prints_the_plan_and_starts_nothing(setup):
    """`publish-all --dry-run`, as peers spell it: the plan's text, no Prefect, no build."""
    m, _ = setup
    out = cli_without_prefect(["publish-all", str(m.path), "--dry-run"])
    assert out.startswith(f"{m.path}: 8 variants:") and "would build " in out, out  # the module's earlier tests change the registry
    assert not (m.output_dir / "catalog.md").exists()  # nothing was built or written


def test_version_and_shell_completion():
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks import __version__

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"trimworks {__version__}"
    import subprocess
    import sys
    from pathlib import Path

    trimworks = Path(sys.executable).with_name("trimworks")  # the installed command, as a shell runs it
    out = subprocess.run([str(trimworks), "--show-completion", "bash"], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "SHELL": "/bin/bash"})
    assert out.returncode == 0 and "complete -o default -F _trimworks_completion trimworks" in out.stdout, out
