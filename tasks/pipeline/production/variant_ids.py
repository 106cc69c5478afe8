"""Variant ids a user typed, checked against the manifest before anything starts."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from tasks.engine.errors import ManifestError


def suggestions(wanted: str, ids: Sequence[str], n: int = 3) -> list[str]:
    """Close ids, ignoring case (`smollm2-de-v64` finds `SmolLM2-135M-Instruct-de-v64`)."""
    by_lower: dict[str, str] = {}
    for i in ids:
        by_lower.setdefault(i.lower(), i)
    w = wanted.lower()
    if w in by_lower:
        return [by_lower[w]]
    close = difflib.get_close_matches(w, list(by_lower), n=n, cutoff=0.6)
    contains = [k for k in by_lower if w in k or (len(k) > 3 and k in w)]
    parts = [k for k in by_lower if all(p in k for p in w.split("-") if p)] if "-" in w else []
    ordered = list(dict.fromkeys(close + sorted(contains, key=len) + sorted(parts, key=len)))
    return [by_lower[k] for k in ordered[:n]]


def check_variant_ids(wanted: Sequence[str], ids: Sequence[str], manifest: str) -> None:
    """Raise one ManifestError listing every unknown id with its suggestions."""
    known = set(ids)
    unknown = [w for w in wanted if w not in known]
    if not unknown:
        return
    lines = []
    for u in unknown:
        hint = suggestions(u, ids)
        lines.append(f"  {u}: " + (f"did you mean {', '.join(hint)}?" if hint else "no similar id"))
    raise ManifestError(f"{manifest}: no variant with id(s) {', '.join(unknown)} in this manifest\n" + "\n".join(lines)
                        + f"\n  `trimworks list {manifest}` shows all {len(ids)} ids")
