"""The character backstop: single-character tokens kept whatever the counts say.

A trimmed WordPiece model turns a whole word into [UNK] when one of its characters has no
piece; a trimmed Unigram model puts <unk> where a single-character piece was dropped. Real
text always holds characters the counting corpus never showed (a rare letter, a symbol, a
digit), so every single-character token of the target languages' scripts, plus ASCII
digits, punctuation and symbols and the symbol blocks of Unicode that real text uses
(SYMBOL_BLOCKS: punctuation, super/subscripts, currency, arrows, mathematical operators,
bullets and shapes, Greek letters as symbols), is always kept.
Scripts come from CLDR's likely subtags (via `langcodes`) for the named languages and from
the letters of the counted corpus. Byte-level BPE keeps its 256-symbol byte alphabet as
before (nothing can become unknown); there the backstop keeps the tokens that spell one whole
multi-byte character, so such a character does not cost 2-3 byte tokens.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import regex

from tasks.engine.runtime.langtags import likely_script_and_territory
from tasks.engine.runtime.memo import ObjectMemo, array_key
from tasks.engine.tokenizer.vocab import Vocab, byte_level_decoder

# ISO 15924 codes the `regex` module knows; a CLDR script that stands for several (Jpan, Kore,
# Hans/Hant) is expanded to the scripts its text really uses.
_COMPOSITE = {"Jpan": ("Hani", "Hira", "Kana"), "Kore": ("Hang", "Hani"), "Hans": ("Hani",), "Hant": ("Hani",),
              "Hanb": ("Hani", "Bopo")}
# Scripts a corpus's letters are classified into (those of any language wordfreq/CLDR knows well).
KNOWN_SCRIPTS = ("Latn", "Cyrl", "Grek", "Arab", "Hebr", "Hani", "Hira", "Kana", "Hang", "Deva", "Beng", "Guru", "Gujr",
                 "Orya", "Taml", "Telu", "Knda", "Mlym", "Sinh", "Thai", "Laoo", "Tibt", "Mymr", "Geor", "Armn", "Ethi",
                 "Khmr", "Mong", "Thaa", "Syrc", "Bopo", "Cher", "Cans", "Tfng", "Olck", "Java", "Bali", "Copt")
# Unicode punctuation, symbols and digits real text uses across scripts, by block: man pages write
# ⟨file⟩ and ≥, units μs and 10⁶, prose • ● → ✓, and German UI text quotes Cyrillic letters; a
# WordPiece model turns the whole word around a dropped one into [UNK]. Each block's single-character tokens of the base are kept (only those
# the base has: the cost is measured per base in docs/fidelity.md).
SYMBOL_BLOCKS: tuple[tuple[str, int, int], ...] = (
    ("Latin-1 Supplement punctuation and symbols (º ª ² ³ ¹ ° µ ·)", 0x00A0, 0x00BF),
    ("multiplication and division signs (× ÷)", 0x00D7, 0x00D7),
    ("multiplication and division signs (× ÷)", 0x00F7, 0x00F7),
    ("Spacing Modifier Letters (ʻ ˚)", 0x02B0, 0x02FF),
    ("Greek letters used as symbols (μ π Ω α Δ)", 0x0391, 0x03C9),
    ("basic Cyrillic letters (names and keyboard layouts quoted in other text: »З« und »Ж«)", 0x0400, 0x045F),
    ("General Punctuation (– — ‘ ’ “ ” • … ‰)", 0x2010, 0x205E),
    ("Superscripts and Subscripts (⁴ ⁶ ₂)", 0x2070, 0x209F),
    ("Currency Symbols (€ ₹)", 0x20A0, 0x20C0),
    ("Letterlike Symbols (™ ℃ №)", 0x2100, 0x214F),
    ("Number Forms (½ ⅓ Ⅳ)", 0x2150, 0x218F),
    ("Arrows (→ ⇒ ↔)", 0x2190, 0x21FF),
    ("Mathematical Operators (≥ ≤ ≠ ∗ ⋅ ∞)", 0x2200, 0x22FF),
    ("Miscellaneous Technical (⌘ ⏎ ⌀)", 0x2300, 0x23FF),
    ("Enclosed Alphanumerics (① ⓐ)", 0x2460, 0x24FF),
    ("Box Drawing (─ │ └ ├)", 0x2500, 0x257F),
    ("Geometric Shapes (● ■ ▶ ◦)", 0x25A0, 0x25FF),
    ("Miscellaneous Symbols (★ ☆ ♪ ☐)", 0x2600, 0x26FF),
    ("Dingbats (✓ ✔ ✗ ❯)", 0x2700, 0x27BF),
    ("Miscellaneous Mathematical Symbols-A (⟨ ⟩)", 0x27C0, 0x27EF),
    ("Supplemental Arrows-A (⟶ ⟹)", 0x27F0, 0x27FF),
    ("CJK Symbols and Punctuation (、 。 「 」)", 0x3000, 0x303F),
    ("Halfwidth and Fullwidth Forms (！ （ ）)", 0xFF01, 0xFF65),
)
_COMMON_RANGES = tuple((lo, hi) for _name, lo, hi in SYMBOL_BLOCKS)
METASPACE = "\u2581"
BACKSTOP_RULES = "3"  # part of every variant fingerprint: bump when the kept characters change


@lru_cache(maxsize=None)
def _script_re(script: str) -> regex.Pattern:
    return regex.compile(rf"\p{{Script={script}}}")


def language_scripts(languages: Iterable[str]) -> set[str]:
    """ISO 15924 scripts of languages per CLDR's likely subtags (`pt_BR` -> Latn, `sr` -> Cyrl,
    `ja` -> Hani+Hira+Kana). A language CLDR does not know adds nothing."""
    out: set[str] = set()
    for code in languages:
        script, _territory = likely_script_and_territory(code)
        if script:
            out.update(_COMPOSITE.get(script, (script,)))
    return out


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str | None:
    for s in KNOWN_SCRIPTS:
        if _script_re(s).match(ch):
            return s
    return None


def corpus_scripts(vocab: Vocab, counts: np.ndarray, min_share: float = 0.01) -> set[str]:
    """Scripts holding at least `min_share` of the letters in the counted tokens (count-weighted),
    so a stray Greek letter in a French corpus does not pull in the Greek alphabet."""
    mass: dict[str, float] = {}
    total = 0.0
    for i in np.flatnonzero(counts):
        tok = vocab.id_to_token.get(int(i))
        if tok is None or int(i) in vocab.added_ids:
            continue
        c = float(counts[i])
        for ch in tok:
            if ch.isalpha():
                s = char_script(ch)
                if s is not None:
                    mass[s] = mass.get(s, 0.0) + c
                total += c
    return {s for s, m in mass.items() if total and m / total >= min_share}


def is_backstop_char(ch: str, scripts: set[str]) -> bool:
    """ASCII printable, common punctuation/symbols, or a letter/mark/digit of one of `scripts`."""
    o = ord(ch)
    if 0x21 <= o <= 0x7E:
        return True
    if any(lo <= o <= hi for lo, hi in _COMMON_RANGES) and unicodedata.category(ch)[0] != "C":
        return True
    return any(_script_re(s).match(ch) for s in scripts) and unicodedata.category(ch)[0] in "LMN"


def backstop_ids(vocab: Vocab, scripts: set[str], byte_level: bool = False) -> set[int]:
    """Ids of the single-character tokens of `scripts` (+ ASCII and common punctuation), in every
    form the model uses: bare, WordPiece `##x`, SentencePiece `▁x` and the metaspace itself."""
    out: set[int] = set()
    t2i = vocab.token_to_id
    if byte_level:
        return _byte_level_backstop(vocab, scripts)
    for tok, i in t2i.items():
        if i in vocab.added_ids:
            continue
        ch = tok[2:] if vocab.kind == "WordPiece" and tok.startswith("##") else tok
        if len(ch) == 2 and ch[0] == METASPACE:
            ch = ch[1]
        if len(ch) == 1 and is_backstop_char(ch, scripts):
            out.add(i)
    if METASPACE in t2i:
        out.add(t2i[METASPACE])
    return out


def _byte_level_backstop(vocab: Vocab, scripts: set[str]) -> set[int]:
    """Byte-level BPE already keeps its 256 byte symbols, so nothing becomes unknown; a character
    of several UTF-8 bytes (é, ‐, ж) would still cost 2-3 tokens. Keep the tokens that spell one
    whole backstop character (with or without the leading space); merge closure keeps their parents."""
    dec = byte_level_decoder()
    out = set()
    for tok, i in vocab.token_to_id.items():
        if i in vocab.added_ids or len(tok) < 2 or len(tok) > 5 or any(ch not in dec for ch in tok):
            continue
        try:
            text = bytes(dec[ch] for ch in tok).decode("utf-8")
        except UnicodeDecodeError:
            continue
        ch = text[1:] if text.startswith(" ") and len(text) == 2 else text
        if len(ch) == 1 and ord(ch) > 0x7F and is_backstop_char(ch, scripts):
            out.add(i)
    return out


# Both walk the whole vocabulary in Python (a quarter second at 49 k tokens); every vocab
# multiple of a subset, and every subset of the same scripts, asks the same question.
_CORPUS_SCRIPTS: ObjectMemo[frozenset[str]] = ObjectMemo(64)
_BACKSTOP_IDS: ObjectMemo[frozenset[int]] = ObjectMemo(32)


def select_backstop(vocab: Vocab, counts: Sequence[np.ndarray], languages: Iterable[str] = (),
                    byte_level: bool = False) -> tuple[set[int], tuple[str, ...]]:
    """(backstop ids, scripts used): scripts of the named languages (CLDR) and of the counted letters."""
    scripts = language_scripts(languages)
    for c in counts:
        scripts |= _CORPUS_SCRIPTS.get(vocab, array_key(c), lambda c=c: frozenset(corpus_scripts(vocab, c)))
    ids = _BACKSTOP_IDS.get(vocab, (frozenset(scripts), byte_level), lambda: frozenset(backstop_ids(vocab, scripts, byte_level)))
    return set(ids), tuple(sorted(scripts))
