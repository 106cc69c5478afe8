"""The static web catalog: `index.html` and one HTML page per model card. No server needed:
open the file, or put the output folder behind any web server.

The table is plain HTML (readable without JavaScript); a few lines of script filter it
(every word typed must appear in the row; `#q=words` in the URL pre-fills the filter) and
sort it by any column (click a header, or `#sort=-vocab after` in the URL). The columns are
the entries of metrics.py with a `site` Show: a new metric is an entry there, not a change here.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from tasks.engine.runtime.atomic import write_text_atomic
from tasks.pipeline.report import metrics
from tasks.pipeline.report.metrics import Show, VariantMetric
from tasks.pipeline.report.record import VariantRecord

INDEX = "index.html"
CARDS = "cards"

def site_columns(records: Sequence[VariantRecord]) -> list[tuple[VariantMetric, Show]]:
    """The page's columns: those always shown, in registry order, then those shown when present
    in the order the records first have them."""
    shown_metrics = metrics.shown(metrics.VARIANT_METRICS, "site")
    always = [(m, s) for m, s in shown_metrics if not s.when_present]
    present: dict[str, tuple[VariantMetric, Show]] = {}
    for r in records:
        for m, s in shown_metrics:
            if s.when_present and m.name not in present and _is_num(m.value(r)):
                present[m.name] = (m, s)
    return always + list(present.values())


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(m: VariantMetric, s: Show) -> str:
    return m.fmt if s.fmt is None else s.fmt


def _cell(value, m: VariantMetric, s: Show) -> str:
    if value is None or value == "":
        return '<td data-v="">–</td>'
    if _fmt(m, s) == "":
        return f'<td data-v="{html.escape(str(value))}">{html.escape(str(value))}</td>'
    return f'<td class="n" data-v="{float(value)!r}">{metrics.cell(value, m, s)}</td>'


def render_card_html(readme: str, title: str, folder_rel: str) -> str:
    """A model card (README.md with YAML front matter) as a standalone page of the site."""
    from markdown_it import MarkdownIt

    meta, body = "", readme
    if readme.startswith("---"):
        _, meta, body = readme.split("---", 2)
    content = MarkdownIt("commonmark", {"html": False}).enable("table").render(body)
    depth = "../" * (folder_rel.count("/") + 1)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<base href="../{html.escape(folder_rel)}/">
<style>{_CSS}</style></head>
<body><p><a href="{depth}{INDEX}">← all variants</a> · <a href="./">files</a></p>
<main class="card">{content}
<details><summary>card metadata</summary><pre>{html.escape(meta.strip())}</pre></details></main></body></html>
"""


def write_cards(out_dir: Path, records: Sequence[VariantRecord]) -> dict[str, str]:
    """cards/<variant>.html for every locally published variant (re-rendered only when its
    README.md is newer); variant id -> page path relative to out_dir."""
    pages = {}
    for r in records:
        if r.status == "failed" or not r.location or r.location.startswith(("http://", "https://")):
            continue
        readme = out_dir / r.location / "README.md"
        if not readme.is_file():
            continue
        page = out_dir / CARDS / f"{r.variant_id}.html"
        if not page.exists() or page.stat().st_mtime_ns < readme.stat().st_mtime_ns:
            write_text_atomic(page, render_card_html(readme.read_text(encoding="utf-8"), r.repo_id, r.location))
        pages[r.variant_id] = f"{CARDS}/{r.variant_id}.html"
    return pages


def render_index(records: Sequence[VariantRecord], plots: Mapping[str, str], cards: Mapping[str, str],
                 usage: str = "") -> str:
    """`usage`: the registry's size, logical and on disk (report/disk_usage.py), for the header."""
    columns = site_columns(records)
    head = "<th data-k='text'>variant</th>" + "".join(
        f"<th data-k='{'text' if _fmt(m, s) == '' else 'num'}'>{html.escape(s.label)}</th>" for m, s in columns
    ) + "<th>links</th>"
    body = []
    for r in records:
        link = cards.get(r.variant_id)
        name = html.escape(r.variant_id)
        first = f'<td data-v="{name}">' + (f'<a class="card" href="{html.escape(link)}">{name}</a>' if link else name) + "</td>"
        cells = "".join(_cell(m.value(r), m, s) for m, s in columns)
        links = []
        if r.location and r.status != "failed":
            links.append(f'<a href="{html.escape(r.location)}{"" if r.location.startswith("http") else "/"}">files</a>')
            if not r.location.startswith("http"):
                links.append(f'<a href="{html.escape(r.location)}/coverage.png">plot</a>')
        if r.error:
            links.append(f'<span class="err" title="{html.escape(r.error)}">error</span>')
        cls = ' class="failed"' if r.status == "failed" else ""
        body.append(f"<tr{cls}>{first}{cells}<td>{' · '.join(links)}</td></tr>")
    figs = "".join(f'<figure><img src="{html.escape(p)}" alt="coverage of {html.escape(b)}"><figcaption>{html.escape(b)}'
                   f"</figcaption></figure>" for b, p in plots.items())
    n_pub = sum(r.status != "failed" for r in records)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trimworks catalog</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}</style></head>
<body>
<h1>trimworks catalog</h1>
<p>{n_pub} published variants of {len({r.base for r in records if r.status != "failed"})} base models.{
f" Registry: {html.escape(usage)}." if usage else ""}
<a href="catalog.md">catalog.md</a> · <a href="catalog.parquet">catalog.parquet</a> · <a href="last-run.md">last run</a></p>
<p><input id="q" type="search" placeholder="filter: words that must all appear, e.g. de v64" size="50" autofocus>
<span id="count"></span></p>
<table id="catalog"><thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<h2>Held-out coverage against kept vocabulary, per base model</h2>
<div class="plots">{figs or "<p>No published variant yet.</p>"}</div>
<script>{_JS}</script>
</body></html>
"""


def write_site(out_dir: Path, records: Sequence[VariantRecord], plots: Mapping[str, str], usage: str = "") -> Path:
    cards = write_cards(out_dir, records)
    path = out_dir / INDEX
    write_text_atomic(path, render_index(records, plots, cards, usage))
    return path


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}th,td{padding:3px 8px;border-bottom:1px solid #ddd;white-space:nowrap}
th{cursor:pointer;background:#f3f3f3;position:sticky;top:0}th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.failed{background:#fdecec}.err{color:#b00}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}img{max-width:100%}
main.card{max-width:60em}main.card table{margin:.5em 0}pre{background:#f6f6f6;padding:.5em;overflow:auto}"""

_JS = r"""
const q = document.getElementById('q'), tbody = document.querySelector('#catalog tbody');
const rows = Array.from(tbody.rows), count = document.getElementById('count');
rows.forEach(r => { r.dataset.text = r.textContent.toLowerCase(); });
function applyFilter() {
  const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const r of rows) {
    const ok = words.every(w => r.dataset.text.includes(w));
    r.hidden = !ok; if (ok) shown++;
  }
  count.textContent = shown + ' of ' + rows.length + ' variants';
  const rest = location.hash.replace(/^#/, '').split('&').filter(p => p && !p.startsWith('q='));
  if (words.length) rest.unshift('q=' + encodeURIComponent(q.value));
  const h = rest.length ? '#' + rest.join('&') : '';
  if (location.hash !== h) history.replaceState(null, '', h || location.pathname + location.search);
}
document.querySelectorAll('#catalog th[data-k]').forEach((th, i) => th.addEventListener('click', () => {
  const desc = th.classList.contains('asc');
  document.querySelectorAll('#catalog th').forEach(t => t.classList.remove('asc', 'desc'));
  th.classList.add(desc ? 'desc' : 'asc');
  const num = th.dataset.k === 'num', sign = desc ? -1 : 1;
  const key = r => { const v = r.cells[i].dataset.v; return num ? (v === '' ? NaN : parseFloat(v)) : v; };
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (num) { if (isNaN(x)) return 1; if (isNaN(y)) return -1; return sign * (x - y); }
    return sign * String(x).localeCompare(String(y));
  });
  rows.forEach(r => tbody.appendChild(r));
}));
q.addEventListener('input', applyFilter);
const m = location.hash.match(/[#&]q=([^&]*)/), srt = location.hash.match(/[#&]sort=(-?)([^&]*)/);
if (m) q.value = decodeURIComponent(m[1]);
if (srt) {  // #sort=vocab%20after (ascending) or #sort=-vocab%20after (descending)
  const th = Array.from(document.querySelectorAll('#catalog th[data-k]')).find(t => t.textContent === decodeURIComponent(srt[2]));
  if (th) { th.click(); if (srt[1]) th.click(); }
}
applyFilter();
"""
