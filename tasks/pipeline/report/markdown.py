"""Values from a manifest, a base, a corpus or an error, made inert in Markdown.

Cards, catalog.md and last-run.md are rendered by Markdown renderers, many of which pass raw
HTML through: a display name like `[<script>…](…)` or a keep token with a backtick must show as
text, never become a link, a tag or the end of a code span.
"""

from __future__ import annotations

import re
from urllib.parse import quote

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~&])")  # not ( ) ! +: with [ ] escaped they make no link or image


def md_text(value: object) -> str:
    """Plain text: every character Markdown (or inline HTML) could act on is backslash-escaped,
    line breaks become spaces (a value never opens a new block)."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(value).splitlines()))


def md_code(value: object) -> str:
    """A code span holding `value` literally, fenced by more backticks than it contains."""
    text = " ".join(str(value).splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"


class Markdown(str):
    """Markdown trimworks built itself from escaped parts (a link to a card): table cells keep it as it is."""


def md_url(value: object) -> str:
    """A link target: spaces, parentheses and angle brackets percent-encoded."""
    return quote(str(value).strip(), safe=":/?#@!$&'*+,;=%-._~")
