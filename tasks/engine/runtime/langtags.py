"""Language-tag facts from CLDR (via `langcodes`), safe to ask from several build threads.

`langcodes` caches parsed tags and fills in likely subtags by mutating shared objects; two
threads maximizing at once failed a variant with "Couldn't fill in likely values. This
represents a problem with the LIKELY_SUBTAGS data." Every call goes through one lock, and
answers are remembered (a run asks about the same few languages for every variant)."""

from __future__ import annotations

import threading
from functools import lru_cache

_LOCK = threading.Lock()


@lru_cache(maxsize=4096)
def likely_script_and_territory(code: str) -> tuple[str | None, str | None]:
    """CLDR's likely script and territory of a language tag (`sr` -> Cyrl, RS); (None, None)
    for a tag langcodes cannot parse."""
    with _LOCK:
        import langcodes

        try:
            lang = langcodes.Language.get(code.replace("_", "-")).maximize()
        except (ValueError, LookupError):
            return None, None
        return lang.script, lang.territory


@lru_cache(maxsize=4096)
def standardize(code: str) -> str | None:
    """langcodes' standard form of a valid tag ('fra' -> 'fr', 'iw' -> 'he'); None when invalid."""
    with _LOCK:
        import langcodes

        if not langcodes.tag_is_valid(code):
            return None
        try:
            return langcodes.standardize_tag(code)
        except (ValueError, LookupError):
            return None
