"""Language codes: one canonical spelling per language, and a check against the LID model.

A manifest may say `fra`, `fr`, `FR`, `pt-BR` or `pt_br`; they are normalised to the shortest
ISO 639 form with the region after an underscore (`fr`, `pt_BR`), so `fra` and `fr` cannot
be counted twice under two names. Before this, `fra` passed validation and then matched no
fastText label, so language ID silently dropped every line.
"""

from __future__ import annotations

import difflib
import functools
import re
import struct
from collections.abc import Iterable
from pathlib import Path

from tasks.engine.runtime.langtags import standardize

# fastText's lid.176 labels a few languages by an older or macro-language code.
LID_ALIASES = {"nb": "no", "sr_Latn": "sh"}
_FASTTEXT_MAGIC = 793712314


def normalize_language(code: str) -> str:
    """'fra' -> 'fr', 'deu'/'ger' -> 'de', 'pt-br'/'PT_BR' -> 'pt_BR', 'iw' -> 'he'.

    A code langcodes cannot parse is returned unchanged, so the validator reports it as given."""
    if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*", code):
        return code
    tag = standardize(code.replace("_", "-"))
    return tag.replace("-", "_") if tag is not None else code


def normalize_languages(data: dict) -> dict:
    """The raw manifest mapping with `languages` keys and `subsets` entries normalised.

    Two keys naming the same language (e.g. `fr` and `fra`) raise a ValueError."""
    langs = data.get("languages")
    if not isinstance(langs, dict):
        return data
    renamed: dict = {}
    origin: dict[str, str] = {}
    for code, spec in langs.items():
        norm = normalize_language(code)
        if norm in renamed:
            raise ValueError(f"languages: {origin[norm]!r} and {code!r} are the same language ({norm!r}); keep one")
        renamed[norm], origin[norm] = spec, code
    out = {**data, "languages": renamed}
    if isinstance(data.get("subsets"), list):
        out["subsets"] = [[normalize_language(c) for c in s] if isinstance(s, list) else s for s in data["subsets"]]
    return out


def lid_code(language: str) -> str:
    """The fastText label (without `__label__`) a manifest code maps to."""
    language = language.replace("-", "_")
    if language in LID_ALIASES:
        return LID_ALIASES[language]
    lang = language.split("_")[0].lower()
    return LID_ALIASES.get(lang, lang)


@functools.lru_cache(maxsize=4)
def _labels(path: str, mtime_ns: int) -> frozenset[str]:
    with open(path, "rb") as fh:
        head = fh.read(1 << 22)  # the dictionary of lid.176 sits in the first ~100 kB
    magic, _version = struct.unpack_from("<ii", head, 0)
    if magic != _FASTTEXT_MAGIC:
        raise ValueError(f"{path}: not a fastText model file")
    off = 8 + 12 * 4 + 8  # Args: 12 int32 and one double
    size, _nwords, nlabels = struct.unpack_from("<iii", head, off)
    off += 12 + 16  # ntokens, pruneidx_size (int64)
    labels = []
    for _ in range(size):
        end = head.index(b"\0", off)
        word = head[off:end].decode("utf-8")
        _count, kind = struct.unpack_from("<qb", head, end + 1)
        off = end + 10
        if kind == 1:
            labels.append(word.removeprefix("__label__"))
    if len(labels) != nlabels:
        raise ValueError(f"{path}: could not read the model's {nlabels} labels")
    return frozenset(labels)


def lid_model_labels(model_path: Path) -> frozenset[str]:
    """Language codes a fastText LID model predicts, read from its dictionary (0.1 s; loading
    the whole lid.176.ftz takes seconds)."""
    p = Path(model_path)
    try:
        return _labels(str(p), p.stat().st_mtime_ns)
    except (ValueError, struct.error):
        import fasttext

        fasttext.FastText.eprint = lambda *a, **k: None
        labels = fasttext.load_model(str(p)).get_labels()
        return frozenset(lab.removeprefix("__label__") for lab in labels)


def unknown_to_lid(languages: Iterable[str], labels: frozenset[str]) -> dict[str, list[str]]:
    """Languages the LID model has no label for -> close labels it does have."""
    out = {}
    for lang in languages:
        if lid_code(lang) not in labels:
            out[lang] = difflib.get_close_matches(lid_code(lang), sorted(labels), n=3, cutoff=0.5)
    return out
