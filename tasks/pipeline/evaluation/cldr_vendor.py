"""Vendor user-interface strings from Unicode CLDR 48.2 (the npm `cldr-*` packages, Unicode-3.0).

Run once by a maintainer (needs `npm`); the result is committed as package data:

    cd /tmp/cldr && npm pack cldr-core@48.2.0 cldr-units-full@48.2.0 cldr-dates-full@48.2.0 \\
        cldr-localenames-full@48.2.0 cldr-misc-full@48.2.0 cldr-numbers-full@48.2.0
    for f in cldr-*-48.2.0.tgz; do d="${f%-48.2.0.tgz}"; mkdir -p "$d" && tar xzf "$f" -C "$d"; done
    python -m tasks.pipeline.evaluation.cldr_vendor /tmp/cldr tasks/pipeline/evaluation/data/cldr

Each locale becomes `<tag>.txt.gz` (`de`, `sr-Latn`, `pt-PT`): one string software displays per
line, built only from CLDR's own strings. Unit patterns (long and short) and relative-time
patterns get a number of each plural category the locale has, taken from CLDR's own plural
samples (`5 Stunden`, `vor 3 Tagen`, `1,5 GB`) and written with the locale's digits and decimal
separator; a few fixed dates go through the locale's date and time patterns. Then date fields,
month, day and quarter names, language, territory and script names, list patterns, quotation
marks and the character picker's labels. Deterministic: the same packages give the same bytes.

Locales: every CLDR locale with a coverage level (basic, moderate, modern) that is a language,
or a language in a script other than its likely one (`sr-Latn`, `zh-Hant`), plus the regional
locales the UDHR has a declaration for (`pt-PT`). A string equal to root's for the same key is
root's fallback (English words, `M01`) unless the locale is at modern coverage, and is dropped.
`index.json` keeps per locale its English name, coverage level, numbering system and line count.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

VERSION = "48.2.0"
UNITS = ["digital-byte", "digital-kilobyte", "digital-megabyte", "digital-gigabyte", "digital-terabyte", "digital-bit",
         "digital-megabit", "duration-millisecond", "duration-second", "duration-minute", "duration-hour", "duration-day",
         "duration-week", "duration-month", "duration-year", "length-millimeter", "length-centimeter", "length-meter",
         "length-kilometer", "mass-gram", "mass-kilogram", "volume-liter", "speed-kilometer-per-hour",
         "temperature-celsius", "concentr-percent", "frequency-megahertz", "frequency-gigahertz", "power-watt",
         "energy-kilowatt-hour", "graphics-pixel", "graphics-megapixel"]
FIELDS = ["year", "quarter", "month", "week", "day", "hour", "minute", "second"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
LANGUAGES = ["en", "de", "fr", "es", "it", "pt", "nl", "sv", "pl", "ru", "uk", "tr", "ar", "he", "fa", "hi", "bn", "ur",
             "zh", "ja", "ko", "vi", "th", "id", "sw"]
TERRITORIES = ["001", "150", "EU", "US", "GB", "DE", "FR", "ES", "IT", "BR", "PT", "MX", "CA", "AU", "IN", "CN", "JP",
               "KR", "RU", "TR", "EG", "NG", "ZA", "KE", "AR"]
SCRIPTS = ["Latn", "Cyrl", "Arab", "Hans", "Hant", "Deva", "Grek", "Hebr"]
LABELS = ["emoji", "smileys_people", "animals_nature", "food_drink", "travel_places", "activities", "objects", "symbols",
          "flags", "arrows", "currency_symbols", "digits", "math_symbols", "punctuation", "technical_symbols",
          "weather", "miscellaneous", "other", "numbers", "whitespace"]
DATES = [dt.datetime(2024, 3, 5, 14, 7, 9), dt.datetime(2025, 11, 23, 9, 30, 0), dt.datetime(2023, 7, 1, 21, 45, 30)]
_DATE_TOKEN = re.compile(r"'(?:[^']|'')*'|([A-Za-z])\1*|[^A-Za-z']+")


class Locale:
    """One CLDR locale's JSON, read from the extracted packages."""

    def __init__(self, root: Path, tag: str) -> None:
        self.root, self.tag = root, tag

    def get(self, package: str, file: str, *path: str) -> dict:
        f = self.root / package / "package" / "main" / self.tag / f"{file}.json"
        if not f.is_file():
            return {}
        node = json.loads(f.read_text(encoding="utf-8"))["main"][self.tag]
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        return node


def _expand(lo: str, hi: str) -> list[str]:
    """A sample range (`2~16`, `0.0~1.5`) as its numbers, in steps of its last digit."""
    places = len(lo.partition(".")[2])
    if places != len(hi.partition(".")[2]):
        return [lo, hi]
    a, b = (round(float(x) * 10**places) for x in (lo, hi))
    return [f"{n / 10**places:.{places}f}" for n in range(a, min(b, 999 * 10**places) + 1)]


def _samples(rule: str, kind: str) -> list[str]:
    """CLDR's sample numbers of a plural rule (`@integer 2~4, 22~24, …`) below 1000, ranges expanded;
    the everyday ones where there are any (2 to 99, a decimal with a fraction: `1.5`, not `10.0`)."""
    m = re.search(rf"@{kind}([^@]*)", rule)
    out: list[str] = []
    for item in (m.group(1).split(",") if m else []):
        item = item.strip()
        if not item or item == "…" or "c" in item or "e" in item:
            continue
        lo, _, hi = item.partition("~")
        out += _expand(lo, hi) if hi else [lo]
    out = [s for s in out if float(s) < 1000]
    everyday = [s for s in out if (1 < float(s) < 100 if kind == "integer" else s.rstrip("0")[-1] != ".")]
    return everyday or out


class Numbers:
    """Plural samples and number formatting of a locale (its default numbering system)."""

    def __init__(self, loc: Locale, core: Path) -> None:
        supp = core / "package" / "supplemental"
        plurals = json.loads((supp / "plurals.json").read_text(encoding="utf-8"))["supplemental"]["plurals-type-cardinal"]
        lang = loc.tag.split("-")[0]
        rules = plurals.get(loc.tag) or plurals.get(lang) or plurals["und"]
        self.integers = {k.removeprefix("pluralRule-count-"): _samples(v, "integer") for k, v in rules.items()}
        self.decimals = {k.removeprefix("pluralRule-count-"): _samples(v, "decimal") for k, v in rules.items()}
        nums = loc.get("cldr-numbers-full", "numbers", "numbers")
        self.system = nums.get("defaultNumberingSystem", "latn")
        systems = json.loads((supp / "numberingSystems.json").read_text(encoding="utf-8"))["supplemental"]["numberingSystems"]
        self.digits = systems.get(self.system, {}).get("_digits", "0123456789")
        symbols = nums.get(f"symbols-numberSystem-{self.system}") or nums.get("symbols-numberSystem-latn") or {}
        self.decimal = symbols.get("decimal", ".")

    def fmt(self, sample: str) -> str:
        return sample.translate(str.maketrans("0123456789.", self.digits + self.decimal))

    def sample(self, count: str, key: str, decimal: bool = False) -> str | None:
        """A sample number of a plural category, picked by the key (varied, deterministic)."""
        pool = (self.decimals if decimal else self.integers).get(count) or []
        return self.fmt(pool[zlib.crc32(key.encode()) % len(pool)]) if pool else None


def _patterns(node: dict, prefix: str) -> Iterator[tuple[str, str]]:
    """(plural category, pattern) of `prefix-count-*` keys (no grammatical cases)."""
    for k, v in node.items():
        if k.startswith(prefix + "-count-") and isinstance(v, str):
            yield k.removeprefix(prefix + "-count-"), v


def unit_lines(loc: Locale, num: Numbers) -> Iterator[tuple[str, ...]]:
    units = loc.get("cldr-units-full", "units", "units")
    for unit in UNITS:
        long, short = units.get("long", {}).get(unit, {}), units.get("short", {}).get(unit, {})
        if name := long.get("displayName"):
            yield f"units/long/{unit}/name", name
        for count, pattern in _patterns(long, "unitPattern"):
            if (n := num.sample(count, unit)) is not None:
                yield f"units/long/{unit}/{count}", pattern.replace("{0}", n), pattern
        # One short form: a decimal where the locale's plural rules give one (`1,5 GB`), else an integer.
        short_forms = sorted(_patterns(short, "unitPattern"), key=lambda cp: cp[0] != "other")
        for decimal in (True, False):
            picked = next(((c, p, n) for c, p in short_forms if (n := num.sample(c, unit, decimal=decimal)) is not None), None)
            if picked:
                yield f"units/short/{unit}/{picked[0]}", picked[1].replace("{0}", picked[2]), picked[1]
                break


def relative_lines(loc: Locale, num: Numbers) -> Iterator[tuple[str, ...]]:
    fields = loc.get("cldr-dates-full", "dateFields", "dates", "fields")
    for name in ["era", *FIELDS, "weekday", "dayperiod", "zone"]:
        if text := fields.get(name, {}).get("displayName"):
            yield f"fields/{name}/name", text
    for name in FIELDS + WEEKDAYS:
        for width in ("", "-short"):
            f = fields.get(name + width, {})
            if not width:
                for k in sorted(k for k in f if k.startswith("relative-type-")):
                    yield f"fields/{name}/{k}", f[k]
            for when in ("future", "past"):
                for count, pattern in _patterns(f.get(f"relativeTime-type-{when}", {}), "relativeTimePattern"):
                    if (n := num.sample(count, name + width + when)) is not None:
                        yield f"fields/{name}{width}/{when}/{count}", pattern.replace("{0}", n), pattern


def format_date(pattern: str, when: dt.datetime, greg: dict, num: Numbers) -> str | None:
    """A date through a CLDR pattern (the fields a UI shows; None for a time zone or an unknown letter)."""
    def names(kind: str, width: str) -> dict:
        return greg.get(kind, {}).get("format", {}).get(width, {})

    out = []
    for m in _DATE_TOKEN.finditer(pattern):
        tok, letter = m.group(0), m.group(1)
        n = len(tok)
        if letter is None:  # a literal: quoted (`'um'`, `''` for a quote) or punctuation and spaces
            out.append(tok[1:-1].replace("''", "'") or "'" if tok.startswith("'") else tok)
            continue
        wd = WEEKDAYS[(when.weekday() + 1) % 7]
        if letter == "y":
            value = num.fmt(f"{when.year % 100:02d}" if n == 2 else str(when.year))
        elif letter in "ML" and n >= 3:
            value = names("months", "wide" if n == 4 else "abbreviated").get(str(when.month))
        elif letter in "ML":
            value = num.fmt(f"{when.month:0{n}d}")
        elif letter == "d":
            value = num.fmt(f"{when.day:0{n}d}")
        elif letter in "Ec":
            value = names("days", "wide" if n == 4 else "abbreviated").get(wd)
        elif letter in "Hh":
            hour = when.hour if letter == "H" else (when.hour % 12 or 12)
            value = num.fmt(f"{hour:0{n}d}")
        elif letter in "ms":
            value = num.fmt(f"{when.minute if letter == 'm' else when.second:0{n}d}")
        elif letter == "a":
            value = names("dayPeriods", "abbreviated").get("pm" if when.hour >= 12 else "am")
        else:
            return None
        if value is None:
            return None
        out.append(value)
    return "".join(out)


def calendar_lines(loc: Locale, num: Numbers) -> Iterator[tuple[str, str]]:
    greg = loc.get("cldr-dates-full", "ca-gregorian", "dates", "calendars", "gregorian")
    for kind, keys in (("months", [str(i) for i in range(1, 13)]), ("days", WEEKDAYS), ("quarters", ["1", "2", "3", "4"])):
        for width in ("wide", "abbreviated"):
            if kind == "quarters" and width == "abbreviated":
                continue
            names = greg.get(kind, {}).get("format", {}).get(width, {})
            for k in keys:
                if k in names:
                    yield f"{kind}/{width}/{k}", names[k]
    periods = greg.get("dayPeriods", {}).get("format", {}).get("wide", {})
    for k in ("am", "pm", "midnight", "noon", "morning1", "afternoon1", "evening1", "night1"):
        if k in periods:
            yield f"dayPeriods/{k}", periods[k]
    for kind in ("dateFormats", "timeFormats"):
        for width, pattern in greg.get(kind, {}).items():
            if "-alt-" in width or not isinstance(pattern, str):
                continue
            for i, when in enumerate(DATES if kind == "dateFormats" else DATES[:1]):
                if (text := format_date(pattern, when, greg, num)) is not None:
                    yield f"{kind}/{width}/{i}", text


def name_lines(loc: Locale) -> Iterator[tuple[str, str]]:
    names = loc.get("cldr-localenames-full", "languages", "localeDisplayNames", "languages")
    regions = loc.get("cldr-localenames-full", "territories", "localeDisplayNames", "territories")
    scripts = loc.get("cldr-localenames-full", "scripts", "localeDisplayNames", "scripts")
    display = loc.get("cldr-localenames-full", "localeDisplayNames", "localeDisplayNames")
    own = loc.tag.split("-")[0]
    for code in dict.fromkeys([own, *LANGUAGES]):
        if code in names:
            yield f"languages/{code}", names[code]
    for code in TERRITORIES:
        if code in regions:
            yield f"territories/{code}", regions[code]
    for code in SCRIPTS:
        if code in scripts:
            yield f"scripts/{code}", scripts[code]
    patterns = display.get("codePatterns", {})
    for kind, value in (("language", names.get(own)), ("script", scripts.get("Latn")), ("territory", regions.get("001"))):
        if kind in patterns and value:
            yield f"codePatterns/{kind}", patterns[kind].replace("{0}", value)
    locale_pattern = display.get("localeDisplayPattern", {}).get("localePattern")
    if locale_pattern and names.get(own) and regions.get("001"):
        yield "localePattern", locale_pattern.replace("{0}", names[own]).replace("{1}", regions["001"])


def misc_lines(loc: Locale) -> Iterator[tuple[str, str]]:
    greg = loc.get("cldr-dates-full", "ca-gregorian", "dates", "calendars", "gregorian")
    days = greg.get("days", {}).get("format", {}).get("wide", {})
    months = greg.get("months", {}).get("format", {}).get("wide", {})
    lists = loc.get("cldr-misc-full", "listPatterns", "listPatterns")
    for kind in ("standard", "or", "unit"):
        p = lists.get(f"listPattern-type-{kind}", {})
        items = [days.get(d) for d in ("mon", "wed", "fri")] if kind != "unit" else [months.get(m) for m in ("1", "2", "3")]
        if p and all(items):
            yield f"lists/{kind}/2", p["2"].replace("{0}", items[0]).replace("{1}", items[1])
            yield f"lists/{kind}/3", p["start"].replace("{0}", items[0]).replace("{1}", p["end"].replace("{0}", items[1]).replace("{1}", items[2]))
    quotes = loc.get("cldr-misc-full", "delimiters", "delimiters")
    if quotes and days.get("mon"):
        yield "delimiters/quotation", quotes["quotationStart"] + days["mon"] + quotes["quotationEnd"]
        yield "delimiters/alternate", quotes["alternateQuotationStart"] + days["mon"] + quotes["alternateQuotationEnd"]
    labels = loc.get("cldr-misc-full", "characterLabels", "characterLabels")
    for k in LABELS:
        if k in labels:
            yield f"characterLabels/{k}", labels[k]


def keyed_lines(root: Path, tag: str) -> dict[str, tuple[str, str]]:
    """Key -> (displayed string, the CLDR string it came from) of one locale, in the order above.
    A number put into a pattern is compared with root's by its pattern (`{0} byte`), not its digits."""
    loc = Locale(root, tag)
    num = Numbers(loc, root / "cldr-core")
    out: dict[str, tuple[str, str]] = {}
    for part in (unit_lines(loc, num), relative_lines(loc, num), calendar_lines(loc, num), name_lines(loc), misc_lines(loc)):
        for key, text, *source in part:
            text = " ".join(text.split()) if "\n" in text else text.strip()
            if text:
                out.setdefault(key, (text, source[0] if source else text))
    return out


def locales(root: Path, udhr_tags: set[str]) -> dict[str, str]:
    """Vendored locale tag -> coverage level (see the module docstring)."""
    core = root / "cldr-core" / "package"
    levels = json.loads((core / "coverageLevels.json").read_text(encoding="utf-8"))["effectiveCoverageLevels"]
    likely = json.loads((core / "supplemental" / "likelySubtags.json").read_text(encoding="utf-8"))["supplemental"]["likelySubtags"]
    out = {}
    for tag, level in sorted(levels.items()):
        parts = tag.split("-")
        if tag == "und" or not (root / "cldr-units-full" / "package" / "main" / tag).is_dir():
            continue
        script_only = len(parts) == 2 and len(parts[1]) == 4
        default_script = (likely.get(parts[0], "").split("-") + ["", ""])[1]
        if len(parts) == 1 or (script_only and parts[1] != default_script) or tag in udhr_tags:
            out[tag] = level
    return out


def main(root: Path, dst: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from tasks.pipeline.evaluation.benchmark_text import udhr_index

    udhr_tags = {str(i.get("bcp47") or "") for i in udhr_index().values()}
    base = keyed_lines(root, "und")
    english = Locale(root, "en").get("cldr-localenames-full", "languages", "localeDisplayNames", "languages")
    dst.mkdir(parents=True, exist_ok=True)
    index = {}
    for tag, level in locales(root, udhr_tags).items():
        keyed = keyed_lines(root, tag)
        lines = list(dict.fromkeys(text for key, (text, source) in keyed.items()
                                   if level == "modern" or base.get(key, ("", ""))[1] != source))
        if len(lines) < 40:  # next to nothing of its own: root's fallback
            continue
        data = ("\n".join(lines) + "\n").encode("utf-8")
        (dst / f"{tag}.txt.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        index[tag] = {"name": english.get(tag) or english.get(tag.split("-")[0]) or tag, "coverage": level,
                      "numbering": Numbers(Locale(root, tag), root / "cldr-core").system, "lines": len(lines)}
    (dst / "index.json").write_text(json.dumps(index, ensure_ascii=False, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    (dst / "LICENSE").write_bytes((root / "cldr-core" / "package" / "LICENSE").read_bytes())
    print(f"{len(index)} locales, {sum(i['lines'] for i in index.values())} lines -> {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
