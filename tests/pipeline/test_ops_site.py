"""The registry's catalog and its static web page, on a registry made here (no Prefect);
the page is loaded in a real browser (Debian's chromium, headless) when one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.pipeline.report.record import LanguageScore, VariantRecord
from tasks.pipeline.report.registry import update_registry_catalog

CARD = """---
base_model: tests/toy
library_name: transformers
---

# {repo}

A **vocabulary-trimmed** model.

| | base | trimmed |
|---|---:|---:|
| vocabulary | 1,200 | {vocab} |

![held-out coverage against kept vocabulary size](coverage.png)
"""


def record(base: str, langs: list[str], multiple: int, vocab: int, cov: float, status: str = "published", **extra) -> VariantRecord:
    vid = f"{base}-{'-'.join(langs)}-v{multiple}"
    return VariantRecord(
        variant_id=vid, base=base, languages=langs, multiple=multiple, repo_id=f"trimworks/{vid}", fingerprint="f" * 64,
        status=status, vocab_before=1200, vocab_after=vocab, params_before=100_000, params_after=50_000 + vocab,
        size_reduction_pct=40.0, output_max_abs_diff=0.0,
        fidelity={lang: LanguageScore(lines=100, coverage=cov, identity=1.0, tokens_per_char_before=0.3,
                                      tokens_per_char_after=0.3) for lang in langs},
        error="boom: something broke" if status == "failed" else None, **extra)


def publish(out: Path, rec: VariantRecord) -> None:
    """What LocalRegistry leaves: <org>/<name>/ with the card and the record (absolute location)."""
    folder = out / rec.repo_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(CARD.format(repo=rec.repo_id, vocab=rec.vocab_after))
    (folder / "evaluation.json").write_text(rec.model_copy(update={"location": str(folder)}).model_dump_json())


@pytest.fixture
def registry(tmp_path):
    out = tmp_path / "published"
    recs = [record("toy-a", ["en"], 8, 320, 0.81), record("toy-a", ["en", "fr"], 8, 480, 0.86),
            record("toy-a", ["de"], 64, 256, 0.91), record("toy-b", ["en"], 8, 320, 0.80)]
    for r in recs:
        publish(out, r)
    return out, recs


def test_catalog_is_the_registry_not_the_last_run(registry):
    out, recs = registry
    # A run that built one variant (`make model`) and saw another fail.
    failed = record("toy-b", ["fr"], 8, 0, 0.0, status="failed")
    res = update_registry_catalog(out, [recs[1], failed], "m.yaml")
    rows = {r["variant_id"]: r for r in pq.read_table(res.parquet).to_pylist()}
    assert set(rows) == {r.variant_id for r in recs} | {failed.variant_id}  # every published variant, not one
    assert {rows[r.variant_id]["status"] for r in recs} == {"published"}
    assert rows[failed.variant_id]["status"] == "failed"
    assert rows["toy-a-en-fr-v8"]["location"] == "trimworks/toy-a-en-fr-v8"  # relative link
    for path in (res.parquet, res.markdown, res.html, out / "catalog.json"):
        assert str(out) not in path.read_bytes().decode("utf-8", "replace"), f"absolute path in {path}"
    md = res.markdown.read_text()
    assert "4 published variants of 2 base models" in md and "boom: something broke" in md
    assert "(plots/registry/toy-a.png)" in md and (out / "plots/registry/toy-a.png").is_file()
    last = res.last_run.read_text()
    assert "2 variants — 1 built and published, 0 already up to date, 1 failed" in last
    assert json.loads((out / "last-run.json").read_text())["manifest"] == "m.yaml"

    # A no-op run: every row is still published, the plots are still there.
    skipped = [r.model_copy(update={"status": "skipped"}) for r in recs]
    res = update_registry_catalog(out, skipped, "m.yaml")
    rows = pq.read_table(res.parquet).to_pylist()
    assert len(rows) == 4 and {r["status"] for r in rows} == {"published"}
    assert "Held-out coverage" in res.markdown.read_text()
    assert "4 already up to date" in res.last_run.read_text()


def test_registry_plot_is_redrawn_only_when_its_points_change(registry):
    out, recs = registry
    png = out / "plots/registry/toy-a.png"
    update_registry_catalog(out, [], "m.yaml")
    first = png.stat().st_mtime_ns
    update_registry_catalog(out, [], "m.yaml")
    assert png.stat().st_mtime_ns == first  # nothing new published: not drawn again
    publish(out, record("toy-a", ["fr"], 8, 300, 0.7))
    update_registry_catalog(out, [], "m.yaml")
    assert png.stat().st_mtime_ns != first  # a new point: drawn again
    again = png.stat().st_mtime_ns
    png.unlink()
    update_registry_catalog(out, [], "m.yaml")
    assert png.is_file() and png.stat().st_mtime_ns != again  # a missing PNG is drawn whatever its JSON says


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium found (Debian: apt-get install -y chromium; .ci/run installs it)")
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--allow-file-access-from-files", "--virtual-time-budget=3000"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout)


def visible_rows(dom: str) -> list[str]:
    body = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr([^>]*)>(.*?)</tr>", body, flags=re.S)
    return [re.search(r'data-v="([^"]+)"', cells).group(1) for attrs, cells in rows if "hidden" not in attrs]


def test_web_catalog_in_a_real_browser(registry, tmp_path):
    out, recs = registry
    failed = record("toy-b", ["fr"], 8, 0, 0.0, status="failed")
    res = update_registry_catalog(out, [failed], "m.yaml")
    url = res.html.resolve().as_uri()

    dom = chromium("--dump-dom", url).stdout
    every = ["toy-a-de-v64", "toy-a-en-v8", "toy-a-en-fr-v8", "toy-b-en-v8", "toy-b-fr-v8"]
    assert visible_rows(dom) == every  # every variant, by base, subset and multiple
    assert "5 of 5 variants" in dom and "4 published variants of 2 base models" in dom
    assert 'src="plots/registry/toy-a.png"' in dom and 'src="plots/registry/toy-b.png"' in dom

    dom = chromium("--dump-dom", url + "#sort=-vocab%20after").stdout  # sort, descending
    assert visible_rows(dom) == ["toy-a-en-fr-v8", "toy-a-en-v8", "toy-b-en-v8", "toy-a-de-v64", "toy-b-fr-v8"]

    dom = chromium("--dump-dom", url + "#q=toy-a%20en").stdout  # the filter, through the URL
    assert visible_rows(dom) == ["toy-a-en-v8", "toy-a-en-fr-v8"]
    assert "2 of 5 variants" in dom

    card = out / "cards" / "toy-a-en-fr-v8.html"
    assert 'href="cards/toy-a-en-fr-v8.html"' in res.html.read_text() and card.is_file()
    card_dom = chromium("--dump-dom", card.resolve().as_uri()).stdout
    assert "<h1>trimworks/toy-a-en-fr-v8</h1>" in card_dom and "<table>" in card_dom and "480" in card_dom

    shot = tmp_path / "catalog.png"
    proc = chromium(f"--screenshot={shot}", "--window-size=1400,900", url + "#q=toy-a")
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    keep = Path("/tmp/trimworks-catalog-screenshot.png")
    shutil.copy(shot, keep)  # left for a person to look at
