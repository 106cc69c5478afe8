"""Every figure a variant is reported with, defined once: the card, the catalog (Parquet,
markdown) and the web page all read their columns from here.

Two lists:

* `LANGUAGE_METRICS`, measured per language on a text (the held-out split, the UDHR, CLDR). An
  entry with `stored` is a field of the record's `LanguageScore` (record.py builds that class
  from this list), copied from the engine's `LanguageFidelity` attribute of the same name; an
  entry with `value` is derived from the stored ones. Shown in the card's fidelity tables (the
  `udhr` Show serves both real texts: UDHR legal prose and CLDR user-interface strings) and its
  `model-index` metadata.
* `VARIANT_METRICS`, one value per variant (`value(record)`): the catalog's columns, in their
  order, plus what only the card's size table or the web page shows.

Each view shows an entry when it has a `Show` for it (header, format, place): a new metric
is one entry. Columns sort by `Show.at`, then by their order here, so an entry without `at`
goes last. Formats are Python format specs ("" is text); a missing value shows as `missing`.
On the web page (`site`) a Show with `detail` goes to the row's details rather than a column
(the table fits a laptop screen), and `tag` adds a word after a value (held-out figures on
synthetic text say "synthetic").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tasks.pipeline.report.markdown import Markdown, md_text
from tasks.engine.runtime.redact import redact

if TYPE_CHECKING:
    from tasks.pipeline.report.record import VariantRecord

LAST = 1000  # the place of a column whose Show gives none: after the numbered ones


@dataclass(frozen=True)
class Show:
    """How one view shows a metric: its header, its format (None: the metric's own), its place."""

    label: str
    fmt: str | None = None
    at: int = LAST
    missing: str = "–"
    when_present: bool = False  # web page only: a column only when some record has a value
    detail: bool = False  # web page only: in the row's details, not a column (the table fits a laptop screen)
    tag: Callable[[Any], str | None] | None = None  # web page only: a word after the value (of the record)


@dataclass(frozen=True)
class ModelIndex:
    """A `model-index` entry on the card's YAML metadata: metric type and name; a float value
    is rounded to `digits` places (None: as measured)."""

    type: str
    name: str
    at: int = LAST
    digits: int | None = 6


@dataclass(frozen=True)
class LanguageMetric:
    """A per-language figure. `stored`: (type, default) of the LanguageScore field; else `value`."""

    name: str
    fmt: str = ""
    stored: tuple[Any, Any] | None = None
    value: Callable[[Any], Any] | None = None
    heldout: Show | None = None  # card: the held-out table
    udhr: Show | None = None  # card: the UDHR (real text) table
    heldout_index: ModelIndex | None = None
    udhr_index: ModelIndex | None = None

    def of(self, score: Any) -> Any:
        return self.value(score) if self.value is not None else getattr(score, self.name)


@dataclass(frozen=True)
class VariantMetric:
    """A per-variant figure (or identity column) and the views that show it."""

    name: str
    value: Callable[[VariantRecord], Any]
    fmt: str = ""
    catalog: bool = True  # a column of catalog.parquet (and of the rows the views read)
    table: Show | None = None  # catalog.md: the main table
    realtext: Show | None = None  # catalog.md: the real-text table
    site: Show | None = None  # index.html
    card: Show | None = None  # the card's size table: two entries with one label are a base/trimmed row
    model_index: ModelIndex | None = None  # on the held-out sample


def _field(name: str) -> Callable[[VariantRecord], Any]:
    return lambda r: getattr(r, name)


def _min(scores, name: str):
    return min((v for s in scores if (v := getattr(s, name)) is not None), default=None)


def tokens_per_char_ratio(score: Any) -> float:
    """Tokens per character, trimmed ÷ base (1.0 for empty text)."""
    return score.tokens_per_char_after / score.tokens_per_char_before if score.tokens_per_char_before else 1.0


def worst_language(scores: dict) -> str | None:
    """The language that fares worst on a text: lowest token coverage, then most lines gaining
    an unknown token (None when nothing was measured)."""
    measured = [(s.token_coverage, -(s.lines_gaining_unknown or 0), lang) for lang, s in scores.items()
                if s.token_coverage is not None]
    return min(measured)[2] if measured else None


def _worst_loss(r: Any, field: str, pick) -> float | None:
    """The worst figure over the UDHR texts' uncovered lines (None: not measured)."""
    values = [v for k, tl in r.loss.items() if k.startswith("udhr:") and (v := getattr(tl.uncovered, field)) is not None]
    return pick(values) if values else None


def _max_tpc_ratio(scores: dict) -> float | None:
    return max((f.tokens_per_char_after / f.tokens_per_char_before for f in scores.values() if f.tokens_per_char_before),
               default=None)


def _lines_gaining(scores: dict) -> int | None:
    return sum(f.lines_gaining_unknown or 0 for f in scores.values()) if scores else None


def _scores_json(scores: dict) -> str:
    return json.dumps({k: v.model_dump() for k, v in scores.items()})


LANGUAGE_METRICS: list[LanguageMetric] = [
    LanguageMetric("lines", stored=(int, ...), heldout=Show("held-out lines", at=1), udhr=Show("lines", at=1)),
    LanguageMetric("coverage", ".2%", stored=(float, ...), heldout=Show("covered lines", at=2), udhr=Show("line coverage", at=5),
                   heldout_index=ModelIndex("coverage", "covered held-out lines"),
                   udhr_index=ModelIndex("coverage", "covered lines", at=3)),
    LanguageMetric("identity", ".2%", stored=(float, ...), heldout=Show("identical tokenization (covered)", at=3),
                   udhr=Show("identical tokenization (covered)", at=6),
                   heldout_index=ModelIndex("identity", "identical tokenization of covered lines")),
    LanguageMetric("tokens_per_char_before", ".4f", stored=(float, ...), heldout=Show("tokens/char before", at=6)),
    LanguageMetric("tokens_per_char_after", ".4f", stored=(float, ...), heldout=Show("after", at=7)),
    LanguageMetric("covered_lines", stored=(int | None, None)),
    LanguageMetric("token_coverage", ".4f", stored=(float | None, None),  # share of the base's tokens that are kept
                   heldout=Show("token coverage", at=4), udhr=Show("token coverage", at=2),
                   udhr_index=ModelIndex("token_coverage", "share of base tokens kept", at=1)),
    LanguageMetric("lines_gaining_unknown", ",", stored=(int | None, None),  # more unknown tokens than the base gives
                   heldout=Show("lines gaining an unknown token", at=5), udhr=Show("lines gaining an unknown token", at=4),
                   udhr_index=ModelIndex("lines_gaining_unknown", "lines gaining an unknown token", at=2)),
    LanguageMetric("tokens_per_char_ratio", ".4f", value=tokens_per_char_ratio, udhr=Show("tokens/char, trimmed ÷ base", at=3),
                   udhr_index=ModelIndex("tokens_per_char_ratio", "tokens per char, trimmed / base", at=4)),
    LanguageMetric("base_unknown_rate", ".2%", stored=(float | None, None),  # the base's own, before trimming
                   udhr=Show("base's own unknown tokens", at=7),
                   udhr_index=ModelIndex("base_unknown_rate", "unknown tokens of the base itself", at=5)),
]

VARIANT_METRICS: list[VariantMetric] = [
    VariantMetric("variant_id", _field("variant_id"), table=Show("variant"), realtext=Show("variant", at=0)),
    VariantMetric("base", _field("base"), site=Show("base", at=1)),
    VariantMetric("languages", lambda r: ",".join(r.languages), site=Show("languages", at=2)),
    VariantMetric("multiple", _field("multiple"), "d", site=Show("×", at=3)),
    VariantMetric("status", _field("status"), table=Show("status"), site=Show("status", detail=True)),
    VariantMetric("repo_id", _field("repo_id"), site=Show("repository", detail=True)),
    VariantMetric("vocab_before", _field("vocab_before"), ",", table=Show("vocab"), site=Show("vocab before", ",d", detail=True),
                  card=Show("vocabulary")),
    VariantMetric("vocab_after", _field("vocab_after"), ",", table=Show("vocab"), site=Show("kept vocab", ",d", at=4),
                  card=Show("vocabulary")),
    VariantMetric("params_before", _field("params_before"), ",", table=Show("params"), card=Show("parameters")),
    VariantMetric("params_after", _field("params_after"), ",", table=Show("params"), site=Show("params after", ",d", detail=True),
                  card=Show("parameters")),
    VariantMetric("bytes_before", _field("bytes_before"), ",", card=Show("bytes on disk")),
    VariantMetric("bytes_after", _field("bytes_after"), ",", card=Show("bytes on disk")),
    VariantMetric("embedding_share_before", _field("embedding_share_before"), ".1%", catalog=False,
                  card=Show("embedding share of parameters")),
    VariantMetric("embedding_share_after", _field("embedding_share_after"), ".1%", catalog=False,
                  card=Show("embedding share of parameters")),
    VariantMetric("size_reduction_pct", _field("size_reduction_pct"), ".1f", table=Show("size −%"), site=Show("size −%", at=5)),
    # Held-out split of the counting corpora: synthetic (wordfreq) text measures the generator, and says so.
    VariantMetric("min_coverage", lambda r: _min(r.fidelity.values(), "coverage"), ".2%", table=Show("held-out min coverage"),
                  site=Show("held-out lines covered (min)", at=10, tag=lambda r: "synthetic" if r.counting_synthetic else None)),
    VariantMetric("min_identity", lambda r: _min(r.fidelity.values(), "identity"), ".2%", table=Show("identity"),
                  site=Show("held-out identity (min)", detail=True)),
    VariantMetric("output_max_abs_diff", _field("output_max_abs_diff"), ".2g", table=Show("max abs diff"),
                  site=Show("max abs diff", detail=True), model_index=ModelIndex("max_abs_diff", "max abs output difference", digits=None)),
    VariantMetric("loss_before", _field("loss_before"), ".3f", site=Show("loss before", detail=True)),
    VariantMetric("loss_after", _field("loss_after"), ".3f", site=Show("loss after", detail=True)),
    VariantMetric("location", _field("location"), table=Show("published at", missing="")),
    VariantMetric("error", lambda r: redact(r.error) if r.error else r.error),
    VariantMetric("fingerprint", _field("fingerprint")),
    VariantMetric("fidelity_json", lambda r: _scores_json(r.fidelity)),
    VariantMetric("checks", lambda r: ",".join(r.checks)),
    VariantMetric("proof_passed", _field("proof_passed")),
    VariantMetric("output_check", _field("output_check")),
    VariantMetric("dtype", _field("dtype")),
    VariantMetric("source_file", _field("source_file")),
    VariantMetric("source_quantization", _field("source_quantization")),
    # Real text (UDHR) and the held-out split side by side, each named for what the text is.
    VariantMetric("heldout_text", lambda r: None if r.counting_synthetic is None else
                  "synthetic (wordfreq)" if r.counting_synthetic else "real", realtext=Show("held-out text", at=1)),
    VariantMetric("heldout_min_token_coverage", lambda r: _min(r.fidelity.values(), "token_coverage"), ".4f",
                  realtext=Show("held-out min token coverage", at=2)),
    VariantMetric("udhr_min_token_coverage", lambda r: _min(r.benchmark.values(), "token_coverage"), ".4f",
                  realtext=Show("UDHR min token coverage", at=3), site=Show("UDHR token coverage (min)", at=6)),
    VariantMetric("udhr_min_line_coverage", lambda r: _min(r.benchmark.values(), "coverage"), ".2%",
                  realtext=Show("UDHR min line coverage", at=6), site=Show("UDHR line coverage (min)", detail=True)),
    VariantMetric("udhr_max_tokens_per_char_ratio", lambda r: _max_tpc_ratio(r.benchmark), ".4f",
                  realtext=Show("UDHR tokens/char ÷ base (max)", at=4), site=Show("UDHR tokens/char ÷ base (max)", at=7)),
    VariantMetric("udhr_lines_gaining_unknown", lambda r: _lines_gaining(r.benchmark), "d",
                  realtext=Show("UDHR lines gaining unknown", at=5), site=Show("UDHR lines gaining an unknown token", ",d", at=8)),
    VariantMetric("udhr_worst_language", lambda r: worst_language(r.benchmark), realtext=Show("UDHR worst language", at=5),
                  site=Show("UDHR worst language", at=9)),
    VariantMetric("udhr_max_base_unknown_rate", lambda r: max(
        (f.base_unknown_rate for f in r.benchmark.values() if f.base_unknown_rate is not None), default=None), ".2%",
                  realtext=Show("UDHR base's own unknown tokens (max)", at=5), site=Show("base's own unknown (max)", detail=True)),
    # The second real-text domain: CLDR user-interface strings (short, abbreviated, full of numbers).
    VariantMetric("ui_min_token_coverage", lambda r: _min(r.ui_text.values(), "token_coverage"), ".4f",
                  realtext=Show("CLDR UI min token coverage", at=8), site=Show("CLDR UI token coverage (min)", at=8)),
    VariantMetric("ui_min_line_coverage", lambda r: _min(r.ui_text.values(), "coverage"), ".2%",
                  realtext=Show("CLDR UI min line coverage", at=8), site=Show("CLDR UI line coverage (min)", detail=True)),
    VariantMetric("ui_max_tokens_per_char_ratio", lambda r: _max_tpc_ratio(r.ui_text), ".4f",
                  realtext=Show("CLDR UI tokens/char ÷ base (max)", at=8),
                  site=Show("CLDR UI tokens/char ÷ base (max)", detail=True)),
    VariantMetric("ui_lines_gaining_unknown", lambda r: _lines_gaining(r.ui_text), "d",
                  realtext=Show("CLDR UI lines gaining unknown", at=8),
                  site=Show("CLDR UI lines gaining an unknown token", ",d", detail=True)),
    VariantMetric("ui_worst_language", lambda r: worst_language(r.ui_text), site=Show("CLDR UI worst language", detail=True)),
    VariantMetric("fit_for_real_text", lambda r: None if r.fit is None else "yes" if r.fit else "no",
                  realtext=Show("fit for its real text", at=LAST), site=Show("fit for its real text", detail=True)),
    VariantMetric("fitness_failures", lambda r: "; ".join(r.fitness_failures)),
    VariantMetric("udhr_uncovered_nll_ratio", lambda r: _worst_loss(r, "nll_ratio", max), ".3f",
                  realtext=Show("UDHR uncovered NLL/char ÷ base (max)", at=LAST),
                  site=Show("UDHR uncovered NLL/char ÷ base (max)", ".3f", detail=True)),
    VariantMetric("udhr_uncovered_cosine", lambda r: _worst_loss(r, "cosine_min", min), ".4f",
                  realtext=Show("UDHR uncovered embedding cosine (min)", at=LAST),
                  site=Show("UDHR uncovered embedding cosine (min)", ".4f", detail=True)),
    VariantMetric("udhr_uncovered_top1_agreement", lambda r: _worst_loss(r, "top1_agreement", min), ".2%",
                  realtext=Show("UDHR uncovered masked top-1 agreement (min)", at=LAST),
                  site=Show("UDHR uncovered masked top-1 agreement (min)", ".2%", detail=True)),
    VariantMetric("loss_json", lambda r: json.dumps({k: v.model_dump() for k, v in r.loss.items()})),
    VariantMetric("udhr_languages", lambda r: ",".join(r.benchmark)),
    VariantMetric("ui_languages", lambda r: ",".join(r.ui_text)),
    # Shown on the web page when a record has them (the card tells them in prose).
    VariantMetric("proof_seconds", _field("proof_seconds"), ".4g", catalog=False, site=Show("proof_seconds", when_present=True, detail=True)),
    VariantMetric("chat_prompts", _field("chat_prompts"), ".4g", catalog=False, site=Show("chat_prompts", when_present=True, detail=True)),
    VariantMetric("chat_identical", _field("chat_identical"), ".4g", catalog=False,
                  site=Show("chat_identical", when_present=True, detail=True)),
    VariantMetric("backstop_tokens", _field("backstop_tokens"), ",", realtext=Show("backstop tokens", at=7),
                  site=Show("backstop_tokens", ".4g", when_present=True, detail=True)),
    VariantMetric("benchmark_json", lambda r: _scores_json(r.benchmark)),
    VariantMetric("ui_text_json", lambda r: _scores_json(r.ui_text)),
]

M = TypeVar("M", LanguageMetric, VariantMetric)


def shown(metrics: Sequence[M], view: str) -> list[tuple[M, Show]]:
    """The metrics a view shows (`view` names the Show attribute), in column order."""
    picked = [(i, m, s) for i, m in enumerate(metrics) if (s := getattr(m, view)) is not None]
    return [(m, s) for _, m, s in sorted(picked, key=lambda t: (t[2].at, t[0]))]


def indexed(metrics: Sequence[LanguageMetric], view: str) -> list[tuple[LanguageMetric, ModelIndex]]:
    """The metrics a model-index view lists (`heldout_index`, `udhr_index`), in order."""
    picked = [(i, m, e) for i, m in enumerate(metrics) if (e := getattr(m, view)) is not None]
    return [(m, e) for _, m, e in sorted(picked, key=lambda t: (t[2].at, t[0]))]


def cell(value: Any, metric: LanguageMetric | VariantMetric, show: Show) -> str:
    """A value as a Markdown table shows it (text escaped: names and errors come from users)."""
    if value is None or value == "":
        return show.missing
    if isinstance(value, Markdown):
        return value
    text = format(value, metric.fmt if show.fmt is None else show.fmt)
    return md_text(text) if isinstance(value, str) else text


def index_value(value: Any, entry: ModelIndex) -> Any:
    """A model-index value: a float rounded as the entry says."""
    return round(value, entry.digits) if isinstance(value, float) and entry.digits is not None else value


def catalog_row(record: VariantRecord) -> dict[str, Any]:
    """One catalog row: every catalog column of the record, in order."""
    return {m.name: m.value(record) for m in VARIANT_METRICS if m.catalog}


def markdown_columns(rows: Sequence[dict], view: str) -> str:
    """A catalog.md table (`view`: "table" or "realtext") of catalog rows. Adjacent columns with
    one header are one column, `before → after`. Text columns align left, numbers right."""
    groups: list[tuple[str, bool, list[tuple[VariantMetric, Show]]]] = []
    for m, s in shown(VARIANT_METRICS, view):
        if groups and groups[-1][0] == s.label:
            groups[-1][2].append((m, s))
        else:
            groups.append((s.label, (m.fmt if s.fmt is None else s.fmt) != "", [(m, s)]))
    head = "| " + " | ".join(label for label, _, _ in groups) + " |\n"
    rule = "|" + "".join("---:|" if numeric else "---|" for _, numeric, _ in groups) + "\n"
    body = "".join("| " + " | ".join(" → ".join(cell(row.get(m.name), m, s) for m, s in cols) for _, _, cols in groups)
                   + " |\n" for row in rows)
    return head + rule + body
