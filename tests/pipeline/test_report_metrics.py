"""A new metric is one entry of tasks/pipeline/report/metrics.py: registered here (and only
here), it appears on the card, in the catalog (Parquet and markdown) and on the web page."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import yaml

from tasks.pipeline.report import metrics
from tasks.pipeline.report.catalog import write_catalog
from tasks.pipeline.report.metrics import LanguageMetric, ModelIndex, Show, VariantMetric
from tasks.pipeline.report.record import LanguageScore
from tasks.pipeline.report.registry import update_registry_catalog
from tests.pipeline.test_report_golden import cards, records

KEPT = VariantMetric("kept_share", lambda r: r.vocab_after / r.vocab_before if r.vocab_after else None, ".3f",
                     table=Show("kept share"), site=Show("kept share"), card=Show("kept share of the vocabulary"),
                     model_index=ModelIndex("kept_share", "share of the base vocabulary kept"))
UNCOVERED = LanguageMetric("uncovered_lines", "d", value=lambda s: s.lines - s.covered_lines,
                           heldout=Show("uncovered lines"), udhr=Show("uncovered lines"),
                           heldout_index=ModelIndex("uncovered_lines", "held-out lines not covered"))


def test_a_new_metric_is_one_entry(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "VARIANT_METRICS", [*metrics.VARIANT_METRICS, KEPT])
    monkeypatch.setattr(metrics, "LANGUAGE_METRICS", [*metrics.LANGUAGE_METRICS, UNCOVERED])
    recs = records()
    minilm = recs[0]
    kept = f"{9088 / 30522:.3f}"

    card = cards(recs)["minilm.README.md"]
    assert f"| kept share of the vocabulary |  | {kept} |" in card  # the size table
    assert "| uncovered lines |\n|---|" in card and " | 99 |\n" in card  # held-out: 2000 lines, 1901 covered
    assert "| UDHR French (fra) | 88 | 1.0000 | 1.0000 | 0 | 100.00% | 100.00% | 0.00% | 0 |" in card  # the UDHR table
    results = yaml.safe_load(card.split("---")[1])["model-index"][0]["results"]
    assert {"type": "kept_share", "name": "share of the base vocabulary kept", "value": round(9088 / 30522, 6)} in [
        m for r in results for m in r["metrics"]]
    assert {"type": "uncovered_lines", "name": "held-out lines not covered", "value": 99} in [
        m for r in results for m in r["metrics"]]

    parquet, md = write_catalog(recs, tmp_path / "run", {})
    assert pq.read_table(parquet).column_names[-1] == "kept_share"
    assert pq.read_table(parquet).to_pylist()[0]["kept_share"] == minilm.vocab_after / minilm.vocab_before
    lines = md.read_text().splitlines()
    head = lines.index("| variant | status | vocab | params | size −% | held-out min coverage | identity | max abs diff | published at "
                       "| kept share |")
    assert lines[head + 1].endswith("|---|---:|") and lines[head + 2].endswith(f"| {kept} |")
    assert lines[head + 4].startswith("| smol-yy-v8 | failed |") and lines[head + 4].endswith("|  | – |")  # none: a dash

    out = tmp_path / "published"
    for rec in recs[:2]:  # what LocalRegistry leaves
        (out / rec.repo_id).mkdir(parents=True)
        (out / rec.repo_id / "evaluation.json").write_text(rec.model_dump_json())
    res = update_registry_catalog(out, recs, "m.yaml")
    page = res.html.read_text()
    data = json.loads(re.search(r'<script id="catalog-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    labels = [c["label"] for c in data["columns"]]
    assert labels[-1] == "kept share" and data["columns"][-1]["num"]  # a column, after the placed ones
    assert '<th data-k="num" data-i="%d" tabindex="0">kept share</th>' % (len(labels) - 1) in page
    assert set(data["details"][-4:]) == {"proof_seconds", "chat_prompts", "chat_identical", "backstop_tokens"}  # when present
    row = dict(zip(data["fields"], data["rows"][0], strict=True))
    assert row["id"] == minilm.variant_id and row["t"][-1] == kept
    assert row["v"][-1] == float(f"{minilm.vocab_after / minilm.vocab_before:.6g}")
    assert "| kept share |" in res.markdown.read_text()


def test_language_score_is_the_stored_language_metrics():
    stored = [m.name for m in metrics.LANGUAGE_METRICS if m.stored is not None]
    assert list(LanguageScore.model_fields) == stored
    assert "tokens_per_char_ratio" not in LanguageScore.model_fields  # derived, not stored


def test_views_sort_by_place_then_order():
    a, b, c = (VariantMetric(n, lambda r: None, site=Show(n, at=at)) for n, at in (("a", 1000), ("b", 2), ("c", 1000)))
    assert [m.name for m, _ in metrics.shown([a, b, c], "site")] == ["b", "a", "c"]
