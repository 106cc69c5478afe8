"""The catalog of every variant (Parquet + markdown) and the per-base coverage plots.

Its columns, their headers and formats are the entries of metrics.py."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xxhash
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.engine.runtime.atomic import atomic_file, write_text_atomic
from tasks.engine.checkpoint.content_id import stat_key
from tasks.engine.counting.tokens import load_plain_tokenizer, read_counts
from tasks.engine.runtime.memo import lines_key
from tasks.pipeline.production.checks import checks_section
from tasks.engine.runtime.redact import redact
from tasks.pipeline.report.metrics import catalog_row, markdown_columns
from tasks.pipeline.report.record import VariantRecord
from tasks.pipeline.report.variant_plot import legend_outside, series_style
from tasks.engine.tokenizer.vocab import Vocab

CATALOG_PARQUET = "catalog.parquet"
CATALOG_MARKDOWN = "catalog.md"


def catalog_rows(records: Sequence[VariantRecord]) -> list[dict]:
    """One row per record: the catalog columns of metrics.py, in their order."""
    return [catalog_row(r) for r in records]


def realtext_markdown_table(rows: Sequence[dict]) -> str:
    """The catalog's real-text table: UDHR (independent real text) beside the held-out split."""
    return markdown_columns(rows, "realtext")


def markdown_table(rows: Sequence[dict]) -> str:
    """The catalog's main table: size and fidelity of every variant."""
    return markdown_columns(rows, "table")


def write_catalog(records: Sequence[VariantRecord], out_dir: Path, plots: Mapping[str, Path]) -> tuple[Path, Path]:
    rows = catalog_rows(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet = out_dir / CATALOG_PARQUET
    with atomic_file(parquet) as fh:
        pq.write_table(pa.Table.from_pylist(rows), fh)
    failed = [r for r in records if r.status == "failed"]
    md = ["# trimworks catalog", "",
          f"{len(records)} variants: {sum(r.status == 'published' for r in records)} published, "
          f"{sum(r.status == 'skipped' for r in records)} already up to date, {len(failed)} failed.", "",
          markdown_table(rows),
          "## Fidelity on real text (UDHR, CLDR) and on the held-out split", "",
          "*held-out min coverage* above is measured on the held-out split of the counting corpora; when those are "
          "synthetic (wordfreq) it is not the coverage of a language. The UDHR columns (legal prose) and the CLDR UI "
          "columns (user-interface strings) are real text the counting never saw.", "",
          realtext_markdown_table(rows)]
    if failed:
        md += ["## Failures", ""] + [f"- **{r.variant_id}**: {redact(r.error or '')}" for r in failed] + [""]
    md += checks_section(records)
    if plots:
        md += ["## Held-out coverage against kept vocabulary size", ""]
        md += [f"![{base}]({Path(p).relative_to(out_dir) if Path(p).is_relative_to(out_dir) else p})" for base, p in plots.items()]
    write_text_atomic(out_dir / CATALOG_MARKDOWN, "\n".join(md) + "\n")
    return parquet, out_dir / CATALOG_MARKDOWN


def coverage_curve(vocab: Vocab, counts_path: Path, heldout_ids: Sequence[Sequence[int]], sizes: np.ndarray) -> np.ndarray:
    """Share of held-out lines fully covered when the `size` most frequent tokens (plus the
    always-kept ones) are kept. Merge closure is ignored, so sizes are slight underestimates."""
    counts = read_counts(counts_path).counts
    rank = np.full(vocab.id_space, np.iinfo(np.int64).max, dtype=np.int64)
    order = np.argsort(-counts, kind="stable")
    rank[order] = np.arange(order.size)
    always = np.fromiter(vocab.always_keep, dtype=np.int64)
    rank[always] = -1
    need = np.array([rank[np.asarray(ids, dtype=np.int64)].max() if len(ids) else -1 for ids in heldout_ids])
    n_always = always.size
    return np.array([(need < max(s - n_always, 0)).mean() if need.size else 0.0 for s in sizes])


def plot_coverage(
    base_id: str, tokenizer_json: Path, vocab: Vocab | None, counts: Mapping[str, Path], heldout: Mapping[str, list[str]],
    out_png: Path, marks: Sequence[tuple[str, int, float]] = (),
) -> Path:
    """The base's coverage curves (PNG, and their data as JSON beside it for the variants'
    plots). Skipped when the JSON says it was drawn from these same inputs: with counts
    cached, a rerun would draw the same pixels again (seconds of matplotlib per base).
    `vocab`: the tokenizer's analysis, or None to make it only when the plot is drawn."""
    inputs = plot_inputs(base_id, tokenizer_json, counts, heldout, marks)
    if plot_is_current(out_png, inputs):
        return out_png
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if vocab is None:
        from tasks.engine.checkpoint.model_folder import load_tokenizer_json
        from tasks.engine.tokenizer.vocab import analyze_tokenizer

        vocab = analyze_tokenizer(load_tokenizer_json(tokenizer_json))
    tok = load_plain_tokenizer(tokenizer_json)
    sizes = np.unique(np.geomspace(max(len(vocab.always_keep), 64), vocab.size, 40).astype(int))
    fig, ax = plt.subplots(figsize=(8.4, 4.2), dpi=110)
    curves = {}
    for i, (lang, path) in enumerate(counts.items()):
        ids = [e.ids for e in tok.encode_batch(heldout.get(lang, []), add_special_tokens=False)]
        curves[lang] = 100 * coverage_curve(vocab, path, ids, sizes)
        style = series_style(i)
        ax.plot(sizes, curves[lang], label=lang, color=style["color"], linestyle=style["linestyle"])
    for label, size, cov in marks:
        ax.scatter([size], [100 * cov], marker="x", color="black", zorder=3)
        ax.annotate(label, (size, 100 * cov), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("kept vocabulary size (tokens)")
    ax.set_ylabel("held-out lines fully covered (%)")
    ax.set_title(f"{base_id}: coverage vs kept vocabulary (base {vocab.size:,})")
    ax.grid(True, which="both", alpha=0.3)
    legend_outside(ax, "language", len(curves))
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_png) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    # The curves, for per-variant plots that mark the variant (tasks/pipeline/report/variant_plot.py).
    mark_plot_drawn(out_png, inputs, base=base_id, vocab_size=vocab.size, sizes=sizes.tolist(),
                    curves={lang: c.tolist() for lang, c in curves.items()})
    return out_png


def mark_plot_drawn(out_png: Path, inputs: str, **data) -> None:
    """The JSON beside a PNG just drawn: `inputs` (what `plot_is_current` compares) and `data`.
    Written after the PNG, so it never vouches for a PNG a crash left stale."""
    write_text_atomic(out_png.with_suffix(".json"), json.dumps({**data, "inputs": inputs}))


def plot_is_current(out_png: Path, inputs: str) -> bool:
    """The PNG exists and its JSON says it was drawn from `inputs` (see `plot_inputs`)."""
    try:
        return out_png.is_file() and json.loads(out_png.with_suffix(".json").read_text()).get("inputs") == inputs
    except (OSError, ValueError):
        return False  # no data yet, or unreadable: draw it


def plot_inputs(base_id: str, tokenizer_json: Path, counts: Mapping[str, Path], heldout: Mapping[str, list[str]],
                 marks: Sequence[tuple[str, int, float]]) -> str:
    """A key of everything the plot is drawn from: files by path and stat key (size, mtime,
    inode, as content digests are cached), held-out text by content."""
    def stamp(p: Path) -> list:
        return [str(Path(p).resolve()), *stat_key(Path(p))]

    parts = {"base": base_id, "tokenizer": stamp(tokenizer_json), "counts": {k: stamp(v) for k, v in sorted(counts.items())},
             "heldout": {k: list(lines_key(tuple(v))) for k, v in sorted(heldout.items())}, "marks": [list(m) for m in marks],
             "version": 2}  # 2: styles per language, legend outside
    return xxhash.xxh3_128_hexdigest(json.dumps(parts, sort_keys=True).encode())
