"""Cards, catalogs and the web page of a fixed set of records, compared with outputs captured
before the metric registry (tasks/pipeline/report/metrics.py) replaced the hand-written
columns: the refactor, and any later one, must not change a published byte.

The expected files are in tests/pipeline/data/golden/. When a change of the outputs is
meant, rewrite them with `TRIMWORKS_WRITE_GOLDEN=1 pytest tests/pipeline/test_report_golden.py`
and review the diff.
"""

from __future__ import annotations

import json
import re
import os
from pathlib import Path

import pyarrow.parquet as pq

from tasks.engine.verify.outputs import LanguageFidelity
from tasks.engine.verify.proof import ProofCheck
from tasks.pipeline.report.card import render_card
from tasks.pipeline.report.catalog import write_catalog
from tasks.pipeline.report.record import LanguageScore, VariantRecord
from tasks.pipeline.report.registry import update_registry_catalog

GOLDEN = Path(__file__).parent / "data" / "golden"


def score(language: str, lines: int, covered: int, tokens: int, kept: int, before: float, after: float,
          unknown: int) -> LanguageScore:
    """A record's per-language score, made the way a build makes it: from the engine's measure."""
    f = LanguageFidelity(language=language, lines=lines, covered_lines=covered, identical_covered_lines=covered,
                         tokens_per_char_before=before, tokens_per_char_after=after, tokens=tokens, kept_tokens=kept,
                         lines_gaining_unknown=unknown)
    return LanguageScore.model_validate(f, from_attributes=True)


def records() -> list[VariantRecord]:
    """An encoder with UDHR and CLDR figures and a synthetic counting corpus, a chat model from a GGUF
    file with a loss and a language the UDHR lacks, and a failed variant."""
    proof = [ProofCheck(name="tensors", passed=True, items=101, detail="byte-identical | 3 vocab-sized"),
             ProofCheck(name="rows", passed=True, items=9088, detail="kept rows equal")]
    minilm = VariantRecord(
        variant_id="minilm-de-fr-v64", base="minilm", languages=["de", "fr"], multiple=64,
        repo_id="trimworks/minilm-trimmed-de-fr-v64", fingerprint="0123456789abcdef" * 4, status="published",
        vocab_before=30522, vocab_after=9088, params_before=22_713_728, params_after=14_481_152,
        bytes_before=90_868_376, bytes_after=57_937_560, size_reduction_pct=36.24,
        embedding_share_before=0.5159, embedding_share_after=0.2409,
        fidelity={"de": score("de", 2000, 1901, 40000, 39950, 0.2512, 0.2515, 0),
                  "fr": score("fr", 1500, 1480, 31000, 30999, 0.2401, 0.2401, 1)},
        output_kind="hidden states", output_max_abs_diff=0.0, seconds=12.5,
        fingerprint_parts={"base": "aa", "multiple": "bb"}, checks=["proof", "outputs"], proof=proof, proof_passed=True,
        proof_seconds=1.234, output_check="first of base", dtype="float32",
        benchmark={"de": score("de", 91, 81, 3000, 2992, 0.25, 0.2505, 0), "fr": score("fr", 88, 88, 2900, 2900, 0.24, 0.24, 0)},
        benchmark_text={"de": "UDHR German, Standard (1996) (deu_1996)", "fr": "UDHR French (fra)"},
        ui_text={"de": score("de", 436, 401, 2100, 2080, 0.31, 0.3125, 2), "fr": score("fr", 420, 420, 2000, 2000, 0.3, 0.3, 0)},
        ui_text_label={"de": "CLDR German (de)", "fr": "CLDR French (fr)"},
        counting_corpus="de: wordfreq pseudo-text (text, top 30,000 words, synthetic); fr: gettext (real text)",
        counting_synthetic=True, backstop_tokens=366, backstop_scripts=["Latn"])
    smol = VariantRecord(
        variant_id="smol-xx-v8", base="smol", languages=["xx"], multiple=8, repo_id="trimworks/smol-trimmed-xx-v8",
        fingerprint="fedcba9876543210" * 4, status="published", vocab_before=49152, vocab_after=12008,
        params_before=134_515_008, params_after=106_000_000, bytes_before=269_060_552, bytes_after=212_031_656,
        size_reduction_pct=21.19, embedding_share_before=0.2097, embedding_share_after=0.0652,
        fidelity={"xx": score("xx", 700, 690, 9000, 8990, 0.31, 0.3101, 2)}, output_kind="logits",
        output_max_abs_diff=3.2e-7, loss_before=6.0213, loss_after=5.7912, checks=["proof"], proof=proof[:1],
        proof_passed=True, output_check="not compared: sampled out", dtype="bfloat16",
        source_file="smol-q8_0.gguf", source_quantization="Q8_0", chat_prompts=24, chat_identical=24,
        counting_corpus="xx: lines (real text)", counting_synthetic=False, backstop_tokens=12, backstop_scripts=[])
    failed = VariantRecord(variant_id="smol-yy-v8", base="smol", languages=["yy"], multiple=8,
                           repo_id="trimworks/smol-trimmed-yy-v8", fingerprint="9" * 64, status="failed",
                           error="selection: multiple 8 | rounds up", seconds=0.4)
    return [minilm, smol, failed]


def cards(recs: list[VariantRecord]) -> dict[str, str]:
    minilm, smol, _ = recs
    return {
        "minilm.README.md": str(render_card(
            minilm, base_name="sentence-transformers/all-MiniLM-L6-v2",
            base_link="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/tree/abc", license="apache-2.0",
            model_type="bert", is_causal=False, policy='{"min_count":2}', corpora=["`de`: {}", "LID filter: on"],
            plot_file="coverage.png", model_class="BertModel", sentence_transformers=True,
            location="trimworks/minilm-trimmed-de-fr-v64")),
        "smol.README.md": str(render_card(
            smol, base_name="smol", base_link="models/smol.gguf", license="apache-2.0", model_type="llama",
            is_causal=True, policy="{}", corpora=["`xx`: {}"], model_class="AutoModelForCausalLM")),
    }


def outputs(tmp: Path) -> dict[str, str]:
    """Every rendered file, by a stable name: cards, records, both catalogs, the web page."""
    recs = records()
    out = dict(cards(recs))
    registry = tmp / "published"
    for rec, readme in zip(recs[:2], list(out.values()), strict=True):
        folder = registry / rec.repo_id
        folder.mkdir(parents=True)
        (folder / "README.md").write_text(readme)
        (folder / "evaluation.json").write_text(rec.model_dump_json(indent=2))
        out[f"{rec.base}.evaluation.json"] = rec.model_dump_json(indent=2)
    res = update_registry_catalog(registry, recs, "m.yaml")
    out["registry.catalog.md"] = _usage_free(res.markdown.read_text())
    out["registry.catalog.json"] = (registry / "catalog.json").read_text()
    out["registry.index.html"] = _usage_free(res.html.read_text())
    for page in sorted((registry / "cards").glob("*.html")):
        out[f"registry.cards.{page.name}"] = page.read_text()
    run = tmp / "run"
    parquet, md = write_catalog(recs, run, {})
    out["run.catalog.md"] = md.read_text()
    for name, path in (("registry", res.parquet), ("run", parquet)):
        table = pq.read_table(path)
        out[f"{name}.catalog.parquet.txt"] = table.schema.to_string(show_schema_metadata=False) + "\n" + json.dumps(
            table.to_pylist(), indent=1, sort_keys=False, default=str)
    return out


def _usage_free(text: str) -> str:
    """The registry's size line depends on the filesystem's blocks: checked in test_disk_usage, not here."""
    return re.sub(r" Registry: \d[^\n]*? on disk( \([\d.]+x shared\))?\.", " Registry: (usage).", text)


def test_outputs_match_the_golden_files(tmp_path):
    got = outputs(tmp_path)
    if os.environ.get("TRIMWORKS_WRITE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in got.items():
            (GOLDEN / name).write_text(text, encoding="utf-8")
    expected = {p.name: p.read_text(encoding="utf-8") for p in GOLDEN.iterdir()}
    assert sorted(got) == sorted(expected)
    for name, text in got.items():
        assert text == expected[name], f"{name} changed: diff it against {GOLDEN / name}"
