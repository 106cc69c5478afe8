"""Values from a manifest, a base or an error never become HTML, links or code-span ends in a
card, catalog.md or last-run.md, rendered as a Markdown renderer that passes HTML through would."""

from __future__ import annotations

from markdown_it import MarkdownIt

from tasks.pipeline.report.card import render_card
from tasks.pipeline.report.markdown import md_code, md_text
from tasks.pipeline.report.record import VariantRecord
from tasks.pipeline.report.registry import last_run_markdown, registry_markdown

EVIL = "[<script>alert(1)</script>](https://evil.example) <img src=x onerror=alert(2)> **bold** | col"
RENDER = MarkdownIt("commonmark", {"html": True}).enable("table")


def html(markdown: str) -> str:
    return RENDER.render(markdown)


def test_escaped_text_and_code_render_as_the_literal_value():
    for value in (EVIL, "a`b", "``", "line\nbreak # heading", "back\\slash_"):
        rendered = html(md_text(value))
        assert "<script" not in rendered and "<img" not in rendered and "<a " not in rendered and "<strong>" not in rendered
        code = html(md_code(value))
        assert code.count("<code>") == 1, (value, code)
    assert html(md_code("keep ` this")).strip() == "<p><code>keep ` this</code></p>"


def test_a_card_a_catalog_and_a_last_run_keep_hostile_values_inert():
    rec = VariantRecord(variant_id="m-en-v8", base="m", languages=["en"], multiple=8, repo_id="acme/m-en-v8",
                        fingerprint="f" * 64, status="published", checks=["proof"])
    card = str(render_card(rec, base_name=EVIL, base_link="https://evil.example/a b)(", license="mit", model_type="bert",
                           is_causal=False, policy='{"keep": ["x`y", "<b>"]}', corpora=[md_code('{"text": "<script>"}')]))
    body = card.split("---", 2)[-1]  # the YAML front matter is data, not Markdown
    rendered = html(body)
    assert "<script" not in rendered and "<img" not in rendered and "<strong>bold" not in rendered and "<b>" not in rendered
    assert 'href="https://evil.example"' not in rendered
    failed = VariantRecord(variant_id="m-fr-v8", base="m", languages=["fr"], multiple=8, repo_id="acme/m-fr-v8",
                           fingerprint="e" * 64, status="failed", error=EVIL)
    for md in (registry_markdown([rec, failed], [], {}), last_run_markdown([rec, failed], "m.yaml", "now")):
        rendered = html(md)
        assert "<script" not in rendered and "<img" not in rendered and 'href="https://evil.example"' not in rendered
        assert "<strong>bold" not in rendered
