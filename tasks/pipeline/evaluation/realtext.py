"""Fidelity on real text: the UDHR and CLDR texts of every variant, and the real-text report.

The held-out split is drawn from the counting corpora; when those are synthetic (wordfreq)
its coverage measures the generator, not the language. So every variant is also measured on
real text of two domains in each of its languages: the UDHR, legal prose (`benchmark_text`),
and CLDR user-interface strings (`ui_text`). `realtext_report` measures published variants on
any real text (UDHR, CLDR, gettext held-out lines, lingua sentences) for docs/fidelity.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from tasks.engine.counting.tokens import load_plain_tokenizer
from tasks.engine.errors import ExactnessError
from tasks.engine.verify.outputs import LanguageFidelity, load_kept_ids, tokenization_fidelity
from tasks.pipeline.evaluation.benchmark_text import udhr_label, udhr_lines
from tasks.pipeline.evaluation.ui_text import ui_label, ui_lines
from tasks.pipeline.manifest import LoadedManifest

SYNTHETIC_NOTE = ("synthetic: wordfreq pseudo-sentences, so held-out coverage measures the generator, "
                  "not the language; see the UDHR figures for real text")


def measure_texts(base_dir: Path, trimmed_dir: Path, texts: Mapping[str, Sequence[str]]) -> dict[str, LanguageFidelity]:
    """Tokenization fidelity of a trimmed folder on named texts (no model outputs)."""
    kept = load_kept_ids(trimmed_dir)
    base_tok = load_plain_tokenizer(Path(base_dir) / "tokenizer.json")
    trim_tok = load_plain_tokenizer(Path(trimmed_dir) / "tokenizer.json")
    return {name: tokenization_fidelity(base_tok, trim_tok, kept, name, list(lines))[0] for name, lines in texts.items()}


def benchmark_labels(languages: Sequence[str]) -> dict[str, str]:
    return {lang: label for lang in languages if (label := udhr_label(lang))}


def ui_labels(languages: Sequence[str]) -> dict[str, str]:
    return {lang: label for lang in languages if (label := ui_label(lang))}


def measured_on(scores: Sequence[LanguageFidelity], prefix: str) -> dict[str, LanguageFidelity]:
    """The proof's figures on one real text (`benchmark:de`, `ui:de`), by language."""
    return {f.language.removeprefix(prefix): f.model_copy(update={"language": f.language.removeprefix(prefix)})
            for f in scores if f.language.startswith(prefix)}


def counting_corpus(m: LoadedManifest, languages: Sequence[str]) -> tuple[str, bool]:
    """(what the counting corpora are, whether any is synthetic) for the card and catalog."""
    parts, synthetic = [], False
    for lang in languages:
        corpora = m.spec.languages[lang].corpora
        synthetic = synthetic or any(c.synthetic for c in corpora)
        parts.append(f"{lang}: " + " + ".join(c.describe() for c in corpora))  # each kind's own words (corpus/sources/)
    return "; ".join(parts), synthetic


# --- the report (docs/fidelity.md table) -------------------------------------------------------------
class RealTextRow(BaseModel):
    variant_id: str
    language: str
    text: str
    lines: int
    line_coverage: float
    token_coverage: float
    tokens_per_char_ratio: float
    lines_gaining_unknown: int
    identity: float
    vocab_fraction: float


def gettext_heldout(path: Path, limit: int | None = None) -> list[str]:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["text", "split"]).to_pydict()
    lines = [x for x, s in zip(t["text"], t["split"], strict=True) if s == "heldout" and x and x.strip()]
    return lines[:limit] if limit else lines


def real_texts(language: str, shared_data: Path | None) -> dict[str, list[str]]:
    """UDHR and CLDR (shipped) plus, when `shared_data` holds them, gettext held-out and lingua lines."""
    out: dict[str, list[str]] = {}
    if lines := udhr_lines(language):
        out["UDHR"] = lines
    if lines := ui_lines(language):
        out["CLDR"] = lines
    if shared_data is not None:
        g = shared_data / "gettext" / f"{language}.parquet"
        if g.is_file():
            out["gettext held-out"] = gettext_heldout(g)
        li = shared_data / "lingua" / f"{language.split('_')[0]}.txt"
        if li.is_file():
            out["lingua"] = [x for x in li.read_text(encoding="utf-8").splitlines() if x.strip()]
    return out


def realtext_report(m: LoadedManifest, shared_data: Path | None = None, only: Sequence[str] | None = None) -> list[RealTextRow]:
    """Measure every published variant of a manifest on real text of each of its languages."""
    import json

    from tasks.pipeline.manifest import expand
    from tasks.pipeline.publish.targets import LocalRegistry
    from tasks.pipeline.production.base_models import materialize_base

    registry = LocalRegistry(m.output_dir)
    bases: dict[str, Path] = {}
    rows = []
    for v in expand(m):
        if only and v.id not in only:
            continue
        folder = registry.target(v)
        if not (folder / "trimworks.json").is_file():
            raise ExactnessError(f"{folder}: variant {v.id} is not published; run `make publish-all` first")
        if v.base not in bases:
            bases[v.base] = materialize_base(m, m.base(v.base))
        meta = json.loads((folder / "trimworks.json").read_text())
        frac = len(meta["kept_ids"]) / meta["selection"]["base_vocab_size"]
        for lang in v.languages:
            for name, f in measure_texts(bases[v.base], folder, real_texts(lang, shared_data)).items():
                rows.append(RealTextRow(variant_id=v.id, language=lang, text=name, lines=f.lines, line_coverage=f.coverage,
                                        token_coverage=f.token_coverage, tokens_per_char_ratio=f.tokens_per_char_ratio,
                                        lines_gaining_unknown=f.lines_gaining_unknown, identity=f.identity, vocab_fraction=frac))
    return rows


def report_markdown(rows: Sequence[RealTextRow]) -> str:
    head = ("| variant | lang | text | lines | token coverage | tokens/char ÷ base | lines gaining unknown | line coverage | "
            "identity | kept vocab |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(
        f"| {r.variant_id} | {r.language} | {r.text} | {r.lines:,} | {r.token_coverage:.4f} | {r.tokens_per_char_ratio:.4f} | "
        f"{r.lines_gaining_unknown} | {r.line_coverage:.1%} | {r.identity:.0%} | {r.vocab_fraction:.1%} |\n"
        for r in rows)


def check_targets(rows: Sequence[RealTextRow], text: str = "UDHR", min_token_coverage: float = 0.99,
                  max_tpc_ratio: float = 1.03, max_vocab_fraction: float = 0.5) -> list[str]:
    """The default manifest's promise on real text; each failure as a sentence."""
    bad = []
    for r in rows:
        if r.text != text:
            continue
        if r.token_coverage < min_token_coverage:
            bad.append(f"{r.variant_id} {r.language}: token coverage {r.token_coverage:.4f} < {min_token_coverage}")
        if r.tokens_per_char_ratio > max_tpc_ratio:
            bad.append(f"{r.variant_id} {r.language}: tokens/char {r.tokens_per_char_ratio:.4f}x base > {max_tpc_ratio}")
        if r.lines_gaining_unknown:
            bad.append(f"{r.variant_id} {r.language}: {r.lines_gaining_unknown} lines gain an unknown token")
        if r.vocab_fraction > max_vocab_fraction:
            bad.append(f"{r.variant_id}: keeps {r.vocab_fraction:.1%} of the base vocabulary > {max_vocab_fraction:.0%}")
    return bad
