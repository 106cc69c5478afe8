"""The static web catalog: `index.html` and one HTML page per model card. No server needed:
open the file, or put the output folder behind any web server.

Both pages are Jinja templates (templates/*.html.j2) rendered with autoescaping: names,
languages and errors come from manifests and failures, and never become markup.

The registry may hold thousands of variants, so the page does not ship thousands of table
rows: the rows are one JSON blob (display strings plus numeric sort keys), and a short script
(templates/catalog.js) shows one page of them at a time. Sorting orders an index array by
precomputed keys, filtering walks precomputed tokens, and only the shown page is rebuilt:
both stay well under 100 ms at 3,000 rows (tests/pipeline/test_ops_site.py measures them in
chromium). Without JavaScript the page says so and points to catalog.md.

The columns are the entries of metrics.py with a `site` Show: a new metric is an entry there,
not a change here. A Show with `detail` goes to the row's details instead of a column, so the
table fits a laptop screen; `tag` puts a word after a value ("synthetic" on held-out figures).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from tasks.engine.runtime.atomic import readable_mode, write_text_atomic
from tasks.pipeline.report import metrics
from tasks.pipeline.report.metrics import Show, VariantMetric
from tasks.pipeline.report.record import VariantRecord

INDEX = "index.html"
CARDS = "cards"
PAGE_ROWS = 50  # rows the table shows at a time (the rest are a click on "next" away): layout is the cost


@functools.cache
def environment() -> jinja2.Environment:
    """The templates, package data of this package (an installed copy finds them too)."""
    return jinja2.Environment(loader=jinja2.PackageLoader("tasks.pipeline.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


@functools.cache
def _asset(name: str) -> Markup:
    """A CSS or JS file of the templates folder, inlined as it is (one self-contained page)."""
    return Markup(resources.files("tasks.pipeline.report").joinpath("templates", name).read_text(encoding="utf-8"))


def site_columns(records: Sequence[VariantRecord]) -> list[tuple[VariantMetric, Show]]:
    """The page's figures: those always shown, in registry order, then those shown when present
    in the order the records first have them. Columns and details alike (`Show.detail`)."""
    shown_metrics = metrics.shown(metrics.VARIANT_METRICS, "site")
    always = [(m, s) for m, s in shown_metrics if not s.when_present]
    present: dict[str, tuple[VariantMetric, Show]] = {}
    for r in records:
        for m, s in shown_metrics:
            if s.when_present and m.name not in present and _is_num(m.value(r)):
                present[m.name] = (m, s)
    return always + list(present.values())


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(m: VariantMetric, s: Show) -> str:
    return m.fmt if s.fmt is None else s.fmt


def _text(value: Any, m: VariantMetric, s: Show) -> str:
    """A value as the page shows it (the JSON carries text; the template escapes it)."""
    if value is None or value == "":
        return s.missing
    return format(value, _fmt(m, s))


def _sort_key(value: Any, numeric: bool) -> Any:
    """What a column sorts by: numbers (rounded, to keep the page small) or text; None last."""
    if value is None or value == "":
        return None
    if numeric:
        return float(f"{float(value):.6g}")
    return str(value)


def _href(location: str | None) -> str | None:
    """A variant's folder as a link: relative into the registry, or a Hub URL; anything else (a
    `javascript:` URL in a hand-edited catalog.json) links nowhere."""
    if not location:
        return None
    if location.startswith(("http://", "https://")):
        return location
    if ":" in location.split("/", 1)[0] or location.startswith("/"):
        return None
    return location.rstrip("/")


# One variant on the page, as a JSON array (3,000 of them are most of the page's bytes).
ROW_FIELDS = ("id", "base", "langs", "multiple", "failed", "loc", "card", "err", "t", "v", "d")


def page_data(records: Sequence[VariantRecord], cards: Mapping[str, str]) -> dict[str, Any]:
    """The table as data for the page's script: the columns, the details' labels, and per variant
    an array of `ROW_FIELDS`: display text (`t`, a [text, tag] pair where a Show tags it), numeric
    sort keys (`v`, null for text columns: they sort by their text), details (`d`), its folder
    (`loc`, relative, or a Hub URL; null: no link) and whether it has a card page."""
    figures = site_columns(records)
    columns = [(m, s) for m, s in figures if not s.detail]
    details = [(m, s) for m, s in figures if s.detail]
    numeric = [_fmt(m, s) != "" for m, s in columns]
    rows = []
    for r in records:
        values = [m.value(r) for m, _ in columns]
        text: list[Any] = []
        for (m, s), v in zip(columns, values, strict=True):
            tag = s.tag(r) if s.tag is not None and v not in (None, "") else None
            text.append([_text(v, m, s), tag] if tag else _text(v, m, s))
        rows.append([r.variant_id, r.base, list(r.languages), r.multiple, int(r.status == "failed"),
                     None if r.status == "failed" else _href(r.location), int(r.variant_id in cards), r.error or None,
                     text, [_sort_key(v, True) if num else None for v, num in zip(values, numeric, strict=True)],
                     [_text(m.value(r), m, s) for m, s in details]])
    return {"fields": ROW_FIELDS, "columns": [{"label": s.label, "num": num, "name": m.name, "missing": s.missing}
                                              for (m, s), num in zip(columns, numeric, strict=True)],
            "details": [s.label for _, s in details], "rows": rows, "pageRows": PAGE_ROWS, "cards": f"{CARDS}/"}


def render_card_html(readme: str, title: str, folder_rel: str) -> str:
    """A model card (README.md with YAML front matter) as a standalone page of the site."""
    from markdown_it import MarkdownIt

    meta, body = "", readme
    if readme.startswith("---"):
        _, meta, body = readme.split("---", 2)
    content = MarkdownIt("commonmark", {"html": False}).enable("table").render(body)  # raw HTML stays text
    return environment().get_template("card.html.j2").render(
        title=title, folder=folder_rel, depth="../" * (folder_rel.count("/") + 1), index=INDEX,
        content=Markup(content), meta=meta.strip(), css=_asset("site.css"))


def write_cards(out_dir: Path, records: Sequence[VariantRecord]) -> dict[str, str]:
    """cards/<variant>.html for every locally published variant (re-rendered only when its
    README.md is newer, or the page is missing or empty); variant id -> page path relative to out_dir.

    A page is a copy of its card, so it is written atomically (temp file, rename) but not
    fsynced: 3,000 fsyncs cost a first catalog ~25 s, and what a power loss can leave (an empty
    page, or none) is re-rendered by the next run."""
    pages = {}
    (out_dir / CARDS).mkdir(parents=True, exist_ok=True)
    for r in records:
        if r.status == "failed" or not r.location or r.location.startswith(("http://", "https://")):
            continue
        readme = out_dir / r.location / "README.md"
        if not readme.is_file():
            continue
        page = out_dir / CARDS / f"{r.variant_id}.html"
        try:
            current = page.stat().st_size > 0 and page.stat().st_mtime_ns >= readme.stat().st_mtime_ns
        except FileNotFoundError:
            current = False
        if not current:
            _write_page(page, render_card_html(readme.read_text(encoding="utf-8"), r.repo_id, r.location))
        pages[r.variant_id] = f"{CARDS}/{r.variant_id}.html"
    return pages


def _write_page(path: Path, text: str) -> None:
    """Atomic (a reader sees the old page or the new one), not durable: see `write_cards`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, readable_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def render_index(records: Sequence[VariantRecord], plots: Mapping[str, str], cards: Mapping[str, str],
                 usage: str = "") -> str:
    """`usage`: the registry's size, logical and on disk (report/disk_usage.py), for the header."""
    published = [r for r in records if r.status != "failed"]
    data = page_data(records, cards)
    return environment().get_template("index.html.j2").render(
        n_published=len(published), n_bases=len({r.base for r in published}), usage=usage, data=data,
        languages=sorted({lang for r in records for lang in r.languages}),
        bases=sorted({r.base for r in records}), multiples=sorted({r.multiple for r in records}),
        synthetic=any(r.counting_synthetic for r in records), plots=plots,
        unplotted=sorted({r.base for r in published} - set(plots)),
        css=_asset("site.css"), script=_asset("catalog.js"))


def write_site(out_dir: Path, records: Sequence[VariantRecord], plots: Mapping[str, str], usage: str = "") -> Path:
    cards = write_cards(out_dir, records)
    path = out_dir / INDEX
    write_text_atomic(path, render_index(records, plots, cards, usage))
    return path
