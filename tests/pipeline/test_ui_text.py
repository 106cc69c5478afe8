"""The second real-text domain (issue 27): CLDR user-interface strings, shipped with the package
and measured on every variant beside the UDHR, each figure named with its domain."""

from __future__ import annotations

import datetime as dt
import gzip
import re

import pytest

from tasks.engine.verify.outputs import LanguageFidelity
from tasks.pipeline.evaluation.benchmark_text import UDHR, udhr_lines
from tasks.pipeline.evaluation.ui_text import CLDR, CLDR_DIR, UI_DESCRIPTION, cldr_code, cldr_index, ui_label, ui_lines
from tasks.pipeline.report.record import LanguageScore, VariantRecord


def test_every_vendored_locale_loads_and_the_licence_ships_beside_it():
    index = cldr_index()
    assert len(index) >= 150
    for code, info in index.items():
        lines = ui_lines(code)
        assert lines and len(lines) == info["lines"] >= 40, code
        assert all(line.strip() == line and line for line in lines), code
        assert len(set(lines)) == len(lines), code  # each string once
    assert "UNICODE LICENSE V3" in (CLDR_DIR / "LICENSE").read_text(encoding="utf-8")
    assert sum(p.stat().st_size for p in CLDR_DIR.iterdir()) < 1_500_000  # small package data


def test_known_strings_and_manifest_codes():
    de = ui_lines("de")
    assert "gestern" in de  # real CLDR German
    assert {"heute", "morgen", "Januar", "Montag", "Deutsch", "Sprache: Deutsch"} <= set(de)
    assert any(re.fullmatch(r"\d+,\d (kB|MB|GB)", line) for line in de)  # German decimal comma from cldr-numbers
    assert any(re.fullmatch(r"vor \d+ (Tag|Tagen)", line) for line in de)  # a relative-time pattern, a number put in
    assert "Dienstag, 5. März 2024" in de  # a date through the locale's full date pattern
    assert "yesterday" in ui_lines("en") and "yesterday" not in de
    assert any("۱" in line for line in ui_lines("fa"))  # Persian digits: the locale's own numbering system
    assert cldr_code("deu") == "de" and cldr_code("de_AT") == "de"
    assert cldr_code("pt_PT") == "pt-PT" and cldr_code("pt_BR") == "pt"
    assert cldr_code("zh_TW") == "zh-Hant" and cldr_code("zh") == "zh"  # the likely script
    assert cldr_code("xx") is None and ui_lines("xx") is None and ui_label("xx") is None
    assert ui_label("de") == "CLDR German (de)"


def test_cldr_covers_the_udhr_languages_it_has():
    """Every major language with a UDHR also has CLDR strings, so a variant gets both domains."""
    for lang in ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "uk", "tr", "ar", "he", "fa", "hi", "bn", "zh",
                 "ja", "ko", "vi", "th", "id", "sw", "el", "sr", "ka", "eu", "ca"):
        assert udhr_lines(lang) and ui_lines(lang), lang


def test_no_root_fallback_in_a_basic_locale():
    """A locale at basic coverage inherits root's strings (English words, `M01`); those are dropped."""
    basic = [code for code, info in cldr_index().items() if info["coverage"] == "basic"]
    assert basic
    for code in basic:
        lines = set(ui_lines(code))
        assert not lines & {"yesterday", "today", "tomorrow", "M01", "M12", "Wed"}, code


def test_vendor_helpers():
    from tasks.pipeline.evaluation.cldr_vendor import _expand, _samples, format_date

    assert _expand("0.0", "0.3") == ["0.0", "0.1", "0.2", "0.3"] and _expand("2", "4") == ["2", "3", "4"]
    ru_few = "v = 0 and i % 10 = 2..4 @integer 2~4, 22~24, 102, 1002, … @decimal"
    assert _samples(ru_few, "integer") == ["2", "3", "4", "22", "23", "24"]  # everyday numbers: below 100
    assert _samples(" @integer 0, 2~3 @decimal 0.0~0.2, 10.0", "decimal") == ["0.1", "0.2"]  # with a fraction

    class Num:
        def fmt(self, s: str) -> str:
            return s

    greg = {"months": {"format": {"wide": {"3": "März"}}}, "days": {"format": {"wide": {"tue": "Dienstag"}}},
            "dayPeriods": {"format": {"abbreviated": {"pm": "PM"}}}}
    when = dt.datetime(2024, 3, 5, 14, 7, 9)
    assert format_date("EEEE, d. MMMM y 'um' HH:mm", when, greg, Num()) == "Dienstag, 5. März 2024 um 14:07"
    assert format_date("h:mm a", when, greg, Num()) == "2:07 PM"
    assert format_date("HH:mm zzzz", when, greg, Num()) is None  # a time zone: not shown


def _score(lines: int, covered: int, tokens: int, kept: int, unknown: int) -> LanguageScore:
    f = LanguageFidelity(language="de", lines=lines, covered_lines=covered, identical_covered_lines=covered,
                         tokens_per_char_before=0.3, tokens_per_char_after=0.3 * tokens / kept, tokens=tokens,
                         kept_tokens=kept, lines_gaining_unknown=unknown)
    return LanguageScore.model_validate(f, from_attributes=True)


def test_card_catalog_and_record_name_both_domains():
    from tasks.pipeline.report.card import render_card
    from tasks.pipeline.report.catalog import catalog_rows, realtext_markdown_table

    rec = VariantRecord(
        variant_id="m-de-v64", base="m", languages=["de", "xx"], multiple=64, repo_id="trimworks/m-de-v64",
        fingerprint="f" * 16, status="published", vocab_before=30522, vocab_after=9088,
        benchmark={"de": _score(91, 81, 3000, 2992, 0)}, benchmark_text={"de": "UDHR German, Standard (1996) (deu_1996)"},
        ui_text={"de": _score(436, 400, 2100, 2080, 3)}, ui_text_label={"de": "CLDR German (de)"})
    back = VariantRecord.model_validate_json(rec.model_dump_json())
    assert back.ui_text["de"].lines_gaining_unknown == 3 and back.ui_text_label == {"de": "CLDR German (de)"}
    card = str(render_card(rec, base_name="org/m", base_link="https://x", license="apache-2.0", model_type="bert",
                           is_causal=False, policy="{}", corpora=["`de`: wordfreq"]))
    assert "## Fidelity on real text: UDHR (legal prose) and CLDR (user-interface strings)" in card
    assert "### CLDR (user-interface strings)" in card and UI_DESCRIPTION in card
    assert "legal prose" in card and UDHR.title == "UDHR (legal prose)" and CLDR.title == "CLDR (user-interface strings)"
    # language, text, lines, token coverage, tokens/char ÷ base, lines gaining an unknown token, line coverage
    assert "| de | CLDR German (de) | 436 | 0.9905 | 1.0096 | 3 | 91.74% |" in card
    assert "No CLDR text for: xx." in card
    meta = card.split("---")[1]
    assert "type: cldr" in meta and "CLDR German (de) (real text, user-interface strings)" in meta
    row = catalog_rows([rec])[0]
    assert row["ui_min_token_coverage"] == pytest.approx(2080 / 2100) and row["ui_lines_gaining_unknown"] == 3
    assert row["ui_languages"] == "de" and row["udhr_min_token_coverage"] == pytest.approx(2992 / 3000)
    table = realtext_markdown_table([row])
    assert "CLDR UI min token coverage" in table and "CLDR UI lines gaining unknown" in table


def test_measured_on_picks_one_text_by_its_prefix():
    from tasks.pipeline.evaluation.realtext import measured_on, ui_labels

    f = [LanguageFidelity(language=name, lines=1, covered_lines=1, identical_covered_lines=1, tokens_per_char_before=1.0,
                          tokens_per_char_after=1.0) for name in ("de", "benchmark:de", "ui:de", "ui:fr")]
    assert sorted(measured_on(f, "ui:")) == ["de", "fr"] and measured_on(f, "ui:")["de"].language == "de"
    assert list(measured_on(f, "benchmark:")) == ["de"]
    assert ui_labels(["de", "xx"]) == {"de": "CLDR German (de)"}


def test_vendored_files_are_gzip_text_one_string_a_line():
    raw = gzip.decompress((CLDR_DIR / "de.txt.gz").read_bytes()).decode("utf-8")
    assert raw.endswith("\n") and "\r" not in raw and raw.splitlines() == ui_lines("de")
