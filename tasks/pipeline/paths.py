"""Paths a manifest names: `pkg://package/rel` files inside installed packages, paths relative
to the manifest's folder, and globs. Below the manifest and the corpus sources, which both use it."""

from __future__ import annotations

import glob
import importlib.util
import re
from pathlib import Path


def resolve_path(value: str, base_dir: Path) -> Path:
    """`pkg://package/rel` -> the file inside an installed package; relative -> manifest dir."""
    if value.startswith("pkg://"):
        package, _, rel = value[len("pkg://"):].partition("/")
        spec = importlib.util.find_spec(package) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", package) else None
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {package!r} is not installed (run `make install`)")
        root = Path(list(spec.submodule_search_locations)[0])
        matches = sorted(root.glob(rel)) if any(c in rel for c in "*?[") else [root / rel]
        return (matches[0] if matches else root / rel).resolve()
    p = Path(value).expanduser()
    return (p if p.is_absolute() else (base_dir / p)).resolve()


def expand_globs(values: list[str], base_dir: Path) -> list[Path]:
    out: list[Path] = []
    for v in values:
        p = resolve_path(v, base_dir)
        if any(c in str(p) for c in "*?["):
            out.extend(Path(x) for x in sorted(glob.glob(str(p), recursive=True)))
        else:
            out.append(p)
    return out
