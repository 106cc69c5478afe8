"""`{wordfreq: {lines, words, seed, style}}`: text generated from the real word-frequency
lists of the `wordfreq` PyPI package, an always-available, offline corpus for any language
it knows. Language-pure by construction, so the LID filter is off for it unless the spec
says `lid: true`; synthetic, so the card says held-out coverage measures the generator.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from tasks.engine.errors import CorpusError
from tasks.pipeline.corpus.sources.base import CorpusBase, CorpusPlace, StrictSpec


class WordfreqSpec(StrictSpec):
    lines: int = Field(default=20000, ge=1)
    words: int = Field(default=5000, ge=10)
    seed: int = 0
    style: Literal["sentences", "text", "technical"] = Field(
        default="sentences", description="sentences: frequency-weighted lower-case pseudo-sentences; "
        "text: every listed word in turn, with capitals, punctuation and numbers (see wordfreq_text below); "
        "technical: the same words in user-interface and technical frames: placeholders, options, paths, "
        "acronyms, units, menus (see wordfreq_technical below)")


class WordfreqCorpus(CorpusBase):
    kind = "wordfreq"
    lid_default = False
    synthetic = True

    wordfreq: WordfreqSpec = WordfreqSpec()

    def lines(self, place: CorpusPlace) -> Iterator[str]:
        w = self.wordfreq
        make = {"text": wordfreq_text, "technical": wordfreq_technical}.get(w.style, wordfreq_sentences)
        return iter(make(place.language, w.lines, w.words, w.seed))

    def expected_lines(self) -> int | None:
        return min(self.wordfreq.lines, self.max_lines or self.wordfreq.lines)

    def describe(self) -> str:
        w = self.wordfreq
        return f"wordfreq pseudo-text ({w.style}, top {w.words:,} words, synthetic)"


def wordfreq_sentences(lang: str, n_lines: int, words: int = 5000, seed: int = 0) -> list[str]:
    """Pseudo-sentences of words drawn by their real frequency in `lang` (deterministic)."""
    from wordfreq import available_languages, get_frequency_dict

    code = lang.replace("_", "-")
    if code not in available_languages():
        code = code.split("-")[0]
    if code not in available_languages():
        raise CorpusError(f"wordfreq has no word list for language {lang!r}")
    # The frequency dict needs no word segmenter (word_frequency would want MeCab for ja).
    top = sorted(get_frequency_dict(code).items(), key=lambda kv: -kv[1])[:words]
    vocab = [w for w, _ in top]
    weights = [f for _, f in top]
    cumulative = list(itertools.accumulate(weights))  # once: choices(weights=) re-sums per call
    rng = random.Random(f"{lang}-{seed}")
    return [" ".join(rng.choices(vocab, cum_weights=cumulative, k=rng.randint(4, 14))).capitalize() + "."
            for _ in range(n_lines)]


# Per-language quotation marks and number styles, so the text holds what real text holds.
_QUOTES = {"fr": [("« ", " »"), ("“", "”")], "de": [("„", "“"), ("»", "«")], "en": [("“", "”"), ("‘", "’"), ('"', '"')]}
_DECIMAL_COMMA = {"fr", "de", "es", "it", "pt", "nl", "pl", "cs", "ru", "uk", "sv", "da", "fi", "nb", "tr", "ro", "hu"}
_PUNCT_AFTER = [",", ",", ",", ";", ":", " –", " -", "…"]
_SENTENCE_END = [".", ".", ".", ".", "?", "!", ":", "…"]


def _number(rng: random.Random, lang: str) -> str:
    """A number as real text writes it: years, counts, decimals, percentages, ordinals, dates."""
    comma = lang.split("_")[0] in _DECIMAL_COMMA
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.randint(1800, 2030))
    if kind == 1:
        return str(rng.randint(0, 100))
    if kind == 2:
        whole, frac = rng.randint(0, 999), rng.randint(0, 99)
        return f"{whole},{frac}" if comma else f"{whole}.{frac}"
    if kind == 3:
        return f"{rng.randint(1, 100)}{' %' if comma else '%'}"
    if kind == 4:
        n = rng.randint(1000, 9_999_999)
        return f"{n:,}".replace(",", "." if comma else ",")
    if kind == 5:
        return f"{rng.randint(1, 31)}.{rng.randint(1, 12)}.{rng.randint(1900, 2030)}" if comma else f"{rng.randint(1, 12)}/{rng.randint(1, 31)}/{rng.randint(1900, 2030)}"
    if kind == 6:
        return f"{rng.randint(1, 99)}." if lang.startswith("de") else f"({rng.randint(1, 20)})"
    if kind == 7:
        return f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
    return str(rng.randint(0, 9))


def wordfreq_text(lang: str, n_lines: int, words: int = 5000, seed: int = 0) -> list[str]:
    return list(_wordfreq_text(lang, n_lines, words, seed))


@functools.lru_cache(maxsize=4)  # counting per tokenizer and the held-out split read it again
def _wordfreq_text(lang: str, n_lines: int, words: int, seed: int) -> tuple[str, ...]:
    """Text-like lines from wordfreq's list: every one of the `words` most frequent words in
    turn (so each is counted, not only the frequent ones), lower case mid-sentence, Titlecase at
    a sentence start and as a name, with commas, quotes, parentheses, numbers, dates and
    sentence ends. Every word starts a line once per `words` lines: use `lines` >= 2 x `words`. wordfreq's lists are case-folded and hold no digits or punctuation: the
    plain pseudo-sentences lose every capitalised form and every symbol real text has.
    Deterministic; the word order is reshuffled on every pass over the list."""
    from wordfreq import available_languages, get_frequency_dict

    code = lang.replace("_", "-")
    if code not in available_languages():
        code = code.split("-")[0]
    if code not in available_languages():
        raise CorpusError(f"wordfreq has no word list for language {lang!r}")
    # Digit runs come as '0', '00', '000' (wordfreq folds digits); real numbers are added below.
    vocab = [w for w, _ in sorted(get_frequency_dict(code).items(), key=lambda kv: -kv[1])[:words]]
    rng = random.Random(f"text-{lang}-{seed}")
    quotes = _QUOTES.get(lang.split("_")[0], [("“", "”"), ('"', '"')])
    french = lang.split("_")[0] == "fr"  # a space before ; : ! ? (French typography)

    def stream() -> Iterator[tuple[str, bool]]:
        npass = 0
        while True:
            order = vocab[:]
            rng.shuffle(order)
            titled = npass % 3 == 2  # every third pass: the Titlecase form mid-sentence too
            for w in order:
                yield w, titled
            npass += 1

    words_it, initial_it = stream(), stream()
    out = []
    for _ in range(n_lines):
        parts = []
        for k in range(rng.randint(3, 12)):
            # The line's first word comes from its own pass over the list: line-initial forms
            # differ from mid-line ones (byte-level BPE: "Word" vs " Word").
            w, titled = next(initial_it) if k == 0 else next(words_it)
            if k == 0 or titled:
                w = w[:1].upper() + w[1:]
            r = rng.random()
            if r < 0.04:
                o, c = rng.choice(quotes)
                w = f"{o}{w}{c}"
            elif r < 0.06:
                w = f"({w})"
            parts.append(w)
            r = rng.random()
            if r < 0.12:
                p = rng.choice(_PUNCT_AFTER)
                parts[-1] += " " + p if french and p in (";", ":") else p
            elif r < 0.2:
                parts.append(_number(rng, lang))
        line = " ".join(parts).rstrip(",;:–-… ")
        end = rng.choice(_SENTENCE_END)
        out.append(line + (" " + end if french and end in ("?", "!", ":") else end))
    return tuple(out)



# The English of software that translations keep: commands, identifiers, acronyms. A short
# fixed list, not wordfreq's English (keeping English's vocabulary would double a variant).
_TECH_WORDS = (
    "file files path name names value values type types id key keys data date time size mode user users group "
    "server client host port url uri http https ftp ssh ssl tls tcp udp ip dns api json xml html css sql csv pdf "
    "utf ascii unicode encoding charset locale config configuration option options setting settings default "
    "version release build commit branch tag merge push pull remote origin repository repo diff patch log status "
    "error errors warning info debug trace fatal failed success ok true false null none nil void int float bool "
    "string char chars byte bytes bit bits list array map set hash index item items object class method function "
    "module package pkg lib library plugin extension driver device disk partition volume mount filesystem folder "
    "directory dir home root admin sudo shell bash terminal console command cmd script input output stdin stdout "
    "stderr buffer cache memory cpu gpu ram swap thread process pid signal timeout queue job task service daemon "
    "network proxy gateway firewall password passwd login logout account token session cookie email mail smtp imap "
    "message msg text font image icon window tab menu button dialog toolbar panel widget view edit copy paste cut "
    "undo redo save open close quit exit new delete remove rename move select search find replace help about "
    "update upgrade install uninstall download upload import export sync backup restore reset start stop restart "
    "enable disable show hide print preview format source target destination link symlink owner permission access "
    "read write exec run query table column row field record database schema transaction lock unlock usage "
    "example examples manual docs documentation license copyright author maintainer translator gnu linux unix "
    "windows mac posix x11 wayland gtk qt kde gnome usb bluetooth wifi audio video codec stream channel sample rate"
).split()
_PLACEHOLDERS = ["%s", "%d", "%u", "%i", "%f", "%x", "%c", "%ld", "%lu", "%zu", "%1$s", "%2$s", "%1$d", "%.2f",
                 "%3d", "%%", "{0}", "{1}", "{}", "{name}", "{count}", "{path}", "$1", "${var}", "%(name)s", "@s"]
_UNITS = ["B", "KB", "KiB", "MB", "MiB", "GB", "GiB", "TB", "kB/s", "MB/s", "Mbit/s", "ms", "s", "min", "h", "Hz",
          "kHz", "MHz", "GHz", "px", "pt", "dpi", "%", "°C", "mm", "cm", "m", "km", "kg", "V", "W", "mAh", "fps", "x"]
_KEYS = ["Ctrl", "Alt", "Shift", "Strg", "Esc", "Tab", "Enter", "Del", "Entf", "Home", "End", "F1", "F2", "F5", "F11"]


def wordfreq_technical(lang: str, n_lines: int, words: int = 5000, seed: int = 0) -> list[str]:
    return list(_wordfreq_technical(lang, n_lines, words, seed))


@functools.lru_cache(maxsize=4)
def _wordfreq_technical(lang: str, n_lines: int, words: int, seed: int) -> tuple[str, ...]:
    """User-interface and technical lines in `lang`: its most frequent words (from the `text`
    style's lines) in the frames software messages use — printf and brace placeholders in
    quotes and parentheses, command-line options, paths and URLs, key=value, comparisons,
    acronyms and identifiers (a short list of software English, upper case and CamelCase),
    numbers with units, keyboard shortcuts, menus and ellipses. Deterministic."""
    base = _wordfreq_text(lang, max(n_lines, 2 * words), words, seed)
    rng = random.Random(f"technical-{lang}-{seed}")
    comma = lang.split("_")[0] in _DECIMAL_COMMA
    quotes = _QUOTES.get(lang.split("_")[0], [("“", "”")]) + [("'", "'"), ('"', '"'), ("`", "'"), ("`", "`")]

    def tech() -> str:
        w = rng.choice(_TECH_WORDS)
        r = rng.random()
        if r < 0.3:
            return w.upper()
        if r < 0.45:
            return w[:1].upper() + w[1:]
        if r < 0.55:
            return w + rng.choice(_TECH_WORDS).capitalize()  # camelCase
        if r < 0.65:
            return w + "_" + rng.choice(_TECH_WORDS)
        return w

    def number_with_unit() -> str:
        n = f"{rng.randint(0, 999)},{rng.randint(0, 9)}" if comma and rng.random() < 0.5 else str(rng.randint(0, 4096))
        return f"{n}{rng.choice(['', ' '])}{rng.choice(_UNITS)}"

    # The frames around a word, each equally likely: (word, placeholder, open quote, close quote) -> text.
    frames = (
        lambda w, ph, o, c: f"{o}{ph}{c}",
        lambda w, ph, o, c: f"({ph})",
        lambda w, ph, o, c: f"--{tech().lower()}" + (f"={ph}" if rng.random() < 0.3 else ""),
        lambda w, ph, o, c: f"-{rng.choice('abcdefhilnqrvx')}",
        lambda w, ph, o, c: f"[{rng.choice(['-', '--', ''])}{tech().lower()}]",
        lambda w, ph, o, c: f"<{tech().lower()}>",
        lambda w, ph, o, c: "/" + "/".join(tech().lower() for _ in range(rng.randint(1, 3)))
        + rng.choice(["", "/", f"/{ph}", ".conf"]),
        lambda w, ph, o, c: f"{rng.choice(['https', 'http', 'ftp', 'file'])}://{tech().lower()}."
        f"{rng.choice(['org', 'com', 'net', 'de', 'fr'])}/",
        lambda w, ph, o, c: f"{tech()}={ph}",
        lambda w, ph, o, c: f"{tech()} {rng.choice(['!=', '==', '<=', '>=', '->', '=>', '|', '&&', '||', '<', '>', '='])} {ph}",
        lambda w, ph, o, c: tech(),
        lambda w, ph, o, c: number_with_unit(),
        lambda w, ph, o, c: "+".join(rng.sample(_KEYS, 2)),
        lambda w, ph, o, c: f"{w} > {rng.choice(base).split(' ')[0]}",
        lambda w, ph, o, c: f"{w}…" if rng.random() < 0.5 else f"{w}...",
        lambda w, ph, o, c: f"{o}{w}{c}",
        lambda w, ph, o, c: f"{w}:",
        lambda w, ph, o, c: f"{tech()}()",
        lambda w, ph, o, c: f"{ph}/{ph}",
        lambda w, ph, o, c: f"{ph}:{ph}",
        lambda w, ph, o, c: f"{tech()}-{rng.randint(1, 9)}.{rng.randint(0, 20)}",
        lambda w, ph, o, c: f"{o}{tech()}{c}",
    )

    def frame(word: str) -> str:
        kind = rng.randrange(len(frames))
        ph = rng.choice(_PLACEHOLDERS)
        o, c = rng.choice(quotes)
        return frames[kind](word, ph, o, c)

    out = []
    for i in range(n_lines):
        words_of_line = base[i % len(base)].split(" ")
        line = []
        for w in words_of_line:
            line.append(w)
            if rng.random() < 0.35:
                line.append(frame(w.strip(".,;:!?…")))
        if rng.random() < 0.3:
            line.insert(0, rng.choice(["Error:", "Warning:", "Fehler:", "Erreur :", "Note:", "*", "-", "•", "#", "==>"]
                                      if rng.random() < 0.5 else [tech().upper() + ":"]))
        out.append(" ".join(line))
    return tuple(out)
