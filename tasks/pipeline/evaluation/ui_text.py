"""The second real-text domain: user-interface strings from Unicode CLDR.

Vendored from the npm `cldr-*@48.2.0` packages (Unicode-3.0; see `data/cldr/LICENSE`) by
cldr_vendor.py as one gzip'd plain-text file per locale, one displayed string per line: unit and
relative-time patterns with numbers put in (`5 Stunden`, `vor 3 Tagen`, `1,5 GB`), formatted
dates, month and day names, language and territory names, list patterns, quotation marks and
character-picker labels. Short, number-laden and abbreviated, unlike the UDHR's legal prose, so
a variant is measured on both. Never count tokens on it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from tasks.engine.runtime.langtags import likely_script_and_territory, standardize
from tasks.pipeline.evaluation.benchmark_text import RealTextDomain, read_text_lines

CLDR_DIR = Path(__file__).resolve().parent / "data" / "cldr"
CLDR = RealTextDomain("CLDR", "user-interface strings",
                      "Unicode CLDR 48.2 (npm `cldr-*@48.2.0`): units, relative times, dates, language and "
                      "territory names, list patterns and labels as software displays them, one string per line")
UI_NAME = CLDR.name
UI_DOMAIN = CLDR.domain
UI_DESCRIPTION = CLDR.describe()


@lru_cache(maxsize=1)
def cldr_index() -> dict[str, dict]:
    """Locale tag (`de`, `sr-Latn`, `pt-PT`) -> metadata (name, coverage, numbering, lines)."""
    return json.loads((CLDR_DIR / "index.json").read_text(encoding="utf-8"))


def cldr_code(language: str) -> str | None:
    """The vendored locale for a manifest language code, or None. Tried in order: the tag itself
    (`pt_PT` -> `pt-PT`), the language in its likely script (`zh_TW` -> `zh-Hant`), the language
    (`de_AT` -> `de`); ISO 639-3 codes and old tags are standardized first (`deu` -> `de`)."""
    index = cldr_index()
    tag = standardize(language.replace("_", "-")) or language.replace("_", "-")
    lang = tag.split("-")[0]
    script, _region = likely_script_and_territory(tag.replace("-", "_"))
    for key in (tag, f"{lang}-{script}" if script else None, lang):
        if key and key in index:
            return key
    return None


def ui_lines(language: str) -> list[str] | None:
    """CLDR user-interface strings of a language, one per line; None when CLDR has no such locale."""
    code = cldr_code(language)
    return list(read_text_lines(CLDR_DIR / f"{code}.txt.gz")) if code is not None else None


def ui_label(language: str) -> str | None:
    """`CLDR German (de)`: what text a language's UI figures were measured on."""
    code = cldr_code(language)
    return None if code is None else f"{CLDR.name} {cldr_index()[code]['name']} ({code})"
