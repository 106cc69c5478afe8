"""The registry's catalog: built from what is published, not from the last run.

Every run (`publish-all`, `make model`, a no-op rerun) rewrites the catalog from the records
the registry holds (`<org>/<name>/evaluation.json`), so a run that builds one variant no
longer hides the others. Links are relative to the output folder, so the folder can be
moved, served or copied as it is. What the last run did (built / up to date / failed) is
kept separately in `last-run.md` and `last-run.json`.

Outputs, all under the output folder:
    catalog.parquet, catalog.json, catalog.md   every published variant (+ the last run's failures)
    index.html, cards/<variant>.html            the static web catalog (tasks/pipeline/report/site.py)
    plots/registry/<base>.png                   real-text (UDHR) token coverage vs kept vocabulary, every published variant
    last-run.md, last-run.json                  the last run's summary
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from tasks.pipeline.production.checks import proof_only_lines
from tasks.pipeline.report.markdown import Markdown, md_code, md_text, md_url
from tasks.engine.runtime.atomic import atomic_file, write_text_atomic
from tasks.pipeline.report.catalog import (CATALOG_MARKDOWN, CATALOG_PARQUET, catalog_rows, mark_plot_drawn, markdown_table,
                                           plot_is_current, realtext_markdown_table)
from tasks.pipeline.publish.targets import RECORD_NAME
from tasks.pipeline.report.record import VariantRecord
from tasks.pipeline.report.variant_plot import MATPLOTLIB_LOCK, legend_outside, series_style

from tasks.pipeline.report.disk_usage import disk_usage

log = logging.getLogger("trimworks.registry")
CATALOG_JSON = "catalog.json"
LAST_RUN_MARKDOWN = "last-run.md"
LAST_RUN_JSON = "last-run.json"
REGISTRY_PLOTS = "plots/registry"


@dataclass
class RegistryOutputs:
    parquet: Path
    markdown: Path
    html: Path
    last_run: Path
    rows: list[dict]


def _is_remote(location: str | None) -> bool:
    return bool(location) and location.startswith(("http://", "https://"))


def scan_registry(out_dir: Path) -> dict[str, tuple[VariantRecord, str]]:
    """variant id -> (its published record, its folder relative to out_dir), from disk."""
    found: dict[str, tuple[VariantRecord, str]] = {}
    for path in sorted(Path(out_dir).glob(f"*/*/{RECORD_NAME}")):
        folder = path.parent
        if folder.name.startswith(".") or folder.parent.name.startswith("."):
            continue  # a rename in progress, or a killed run's leftovers
        try:
            rec = VariantRecord.model_validate_json(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("registry: skipping unreadable record %s (%s)", path, exc)
            continue
        found[rec.variant_id] = (rec, folder.relative_to(out_dir).as_posix())
    return found


def _previous_remote(out_dir: Path) -> dict[str, VariantRecord]:
    """Hub-published variants the previous catalog listed (they are not on this disk)."""
    try:
        data = json.loads((Path(out_dir) / CATALOG_JSON).read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for item in data.get("variants", []):
        try:
            rec = VariantRecord.model_validate(item)
        except ValueError:
            continue
        if rec.status != "failed" and _is_remote(rec.location):
            out[rec.variant_id] = rec
    return out


def registry_records(out_dir: Path, run: Sequence[VariantRecord] = ()) -> list[VariantRecord]:
    """Every variant the registry holds, each as published, location relative to out_dir
    (or its Hub URL), plus the variants that failed in `run` and were never published."""
    merged: dict[str, VariantRecord] = dict(_previous_remote(out_dir))
    for vid, (rec, rel) in scan_registry(out_dir).items():
        merged[vid] = rec.model_copy(update={"status": "published", "location": rel})
    for rec in run:
        if rec.status in ("published", "skipped") and _is_remote(rec.location):
            merged[rec.variant_id] = rec.model_copy(update={"status": "published"})
        elif rec.status == "failed" and rec.variant_id not in merged:
            merged[rec.variant_id] = rec
    return sorted(merged.values(), key=lambda r: (r.base, len(r.languages), r.languages, r.multiple))


def registry_points(records: Sequence[VariantRecord]) -> dict[str, list[tuple[int, float, str]]]:
    """language -> (kept vocabulary, real-text token coverage in %, variant) of every published
    variant measured on that language's UDHR text."""
    points: dict[str, list[tuple[int, float, str]]] = {}
    for r in records:
        if r.status == "failed" or r.vocab_after is None:
            continue
        for lang, f in r.benchmark.items():
            if f.token_coverage is not None:
                points.setdefault(lang, []).append((r.vocab_after, 100 * f.token_coverage, r.variant_id))
    return points


def registry_figure(title: str, points: Mapping[str, list[tuple[int, float, str]]]) -> Any:
    """The figure of `plot_registry`: one series per language, each its own colour and marker
    (variant_plot.series_style), the legend beside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.4, 4.2), dpi=100)
    for i, (lang, pts) in enumerate(sorted(points.items())):
        pts = sorted(pts)
        style = series_style(i)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=style["marker"], color=style["color"], linestyle="none",
                markersize=5, alpha=0.85, label=lang)
    ax.set_xscale("log")
    ax.set_xlabel("kept vocabulary size of the variant (tokens)")
    ax.set_ylabel("UDHR token coverage (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    legend_outside(ax, "language", len(points))
    fig.tight_layout()
    return fig


def plot_registry(base: str, records: Sequence[VariantRecord], out_png: Path) -> Path | None:
    """Real-text (UDHR) token coverage of every published variant of one base against its kept
    vocabulary: the figure a reader compares variants by (None: no variant has UDHR figures)."""
    points = registry_points(records)
    if not points:
        return None
    vocab_before = next((r.vocab_before for r in records if r.status != "failed" and r.vocab_before), None)
    n = len({r.variant_id for r in records if r.status != "failed"})
    # Skipped when drawn from these same points already (a nightly run that publishes nothing
    # new redraws nothing): the key is in a JSON beside the PNG, written after it.
    inputs = xxhash.xxh3_128_hexdigest(json.dumps({"base": base, "n": n, "vocab_before": vocab_before, "version": 2,
                                                   "points": {k: sorted(v) for k, v in points.items()}}).encode())
    if plot_is_current(out_png, inputs):
        return out_png
    import matplotlib.pyplot as plt

    title = f"{base}: {n} published variant{'s' if n != 1 else ''}" + (
        f" (base vocabulary {vocab_before:,})" if vocab_before else "")
    fig = registry_figure(title, points)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_png) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    mark_plot_drawn(out_png, inputs, base=base)
    return out_png


def _rel(path: Path, out_dir: Path) -> str:
    p = Path(path)
    return p.relative_to(out_dir).as_posix() if p.is_relative_to(out_dir) else str(p)


def registry_markdown(records: Sequence[VariantRecord], rows: Sequence[dict], plots: Mapping[str, str],
                      usage: str = "") -> str:
    published = [r for r in records if r.status != "failed"]
    failed = [r for r in records if r.status == "failed"]
    md = ["# trimworks catalog", "",
          f"{len(published)} published variants of {len({r.base for r in published})} base models"
          + (f"; {len(failed)} failed in the last run and are not published." if failed else ".")
          + (f" Registry: {usage}." if usage else ""),
          f"What the last run did: [{LAST_RUN_MARKDOWN}]({LAST_RUN_MARKDOWN}). "
          "Browse and filter: [index.html](index.html).", "",
          "Fidelity on real text of two domains the counting never saw, the UDHR (legal prose) and CLDR "
          "(user-interface strings), beside the held-out split of the counting "
          "corpora; a held-out text marked *synthetic* is wordfreq pseudo-text, which measures the generator, not the "
          "language.", "",
          realtext_markdown_table(rows),
          "## Size and held-out fidelity", "",
          markdown_table([{**row, "location": _md_link(row["location"])} for row in rows])]
    md += proof_only_lines(records)
    if failed:
        md += ["## Failures (last run)", ""] + [f"- **{md_text(r.variant_id)}**: {md_text(r.error)}" for r in failed] + [""]
    if plots:
        md += ["## Real-text (UDHR) token coverage against kept vocabulary size, every published variant", ""]
        md += [f"![{md_text(base)}: published variants]({md_url(p)})" for base, p in plots.items()]
    return "\n".join(md) + "\n"


def _md_link(location: str | None) -> str:
    """A relative registry folder as a markdown link (Hub locations are URLs already)."""
    if not location or _is_remote(location):
        return location or ""
    return Markdown(f"[{md_text(location)}]({md_url(location)}/README.md)")


def last_run_markdown(run: Sequence[VariantRecord], manifest: str | None, when: str) -> str:
    counts = {s: sum(r.status == s for r in run) for s in ("published", "skipped", "failed")}
    md = ["# trimworks: last run", "",
          f"{when}{f', manifest {md_code(manifest)}' if manifest else ''}: {len(run)} variants — {counts['published']} built "
          f"and published, {counts['skipped']} already up to date, {counts['failed']} failed.", "",
          "| variant | outcome | seconds | error |", "|---|---|---:|---|"]
    md += [f"| {r.variant_id} | {'up to date' if r.status == 'skipped' else r.status} | "
           f"{r.seconds if r.seconds is not None and r.status != 'skipped' else ''} | {md_text(r.error or '')} |"
           for r in run]
    return "\n".join(md) + "\n"


def update_registry_catalog(out_dir: Path, run: Sequence[VariantRecord] = (), manifest: str | None = None,
                            registry: Path | None = None) -> RegistryOutputs:
    """Rewrite the catalog from the registry, the web catalog, and the last-run summary.
    `registry`: where the variants are, when the catalog is written elsewhere (a full registry disk)."""
    from tasks.pipeline.report.site import write_site

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = registry_records(Path(registry or out_dir), run)
    rows = catalog_rows(records)
    parquet = out_dir / CATALOG_PARQUET
    with atomic_file(parquet) as fh:
        pq.write_table(pa.Table.from_pylist(rows), fh)
    write_text_atomic(out_dir / CATALOG_JSON, json.dumps(
        {"variants": [r.model_dump(mode="json") for r in records]}, indent=1))

    plots: dict[str, str] = {}
    for base in sorted({r.base for r in records}):
        try:
            with MATPLOTLIB_LOCK:
                png = plot_registry(base, [r for r in records if r.base == base], out_dir / REGISTRY_PLOTS / f"{base}.png")
        except Exception as exc:  # noqa: BLE001 - a plot is never worth failing a run
            log.warning("registry plot for %s failed: %s", base, exc)
            png = None
        if png is not None:
            plots[base] = _rel(png, out_dir)

    usage = disk_usage(Path(registry or out_dir), skip_hidden=True).line()  # variants share bodies by hard links
    md = out_dir / CATALOG_MARKDOWN
    write_text_atomic(md, registry_markdown(records, rows, plots, usage))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    last = out_dir / LAST_RUN_MARKDOWN
    write_text_atomic(last, last_run_markdown(run, manifest, when))
    write_text_atomic(out_dir / LAST_RUN_JSON, json.dumps(
        {"finished": when, "manifest": manifest, "variants": [r.model_dump(mode="json") for r in run]}, indent=1))
    html = write_site(out_dir, records, plots, usage)
    return RegistryOutputs(parquet=parquet, markdown=md, html=html, last_run=last, rows=rows)
