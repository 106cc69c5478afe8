"""Corruption detected where it starts, not blamed on trimming later.

* Non-finite values (NaN/Inf) in the embedding rows a variant keeps: an error naming the
  tensor and the row (token id). Checked on the bytes surgery reads anyway.
* Tensor names that do not belong to the architecture (a shard header edited or mixed up):
  an error naming the shard and the tensor, checked against the model class's own
  parameter names on the meta device (no weights loaded).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np

from tasks.engine.errors import ModelFolderError

FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def nonfinite_rows(data: bytes | memoryview, dtype: str, row_bytes: int) -> np.ndarray:
    """Indices of rows (of `row_bytes` each) holding a NaN or an infinity."""
    if dtype not in FLOAT_DTYPES or not row_bytes:
        return np.empty(0, dtype=np.int64)
    raw = np.frombuffer(data, dtype=np.uint8)
    n_rows = raw.size // row_bytes
    if dtype in ("F64", "F32", "F16"):
        vals = raw[: n_rows * row_bytes].view({"F64": np.float64, "F32": np.float32, "F16": np.float16}[dtype])
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(vals.sum(dtype=np.float64 if dtype == "F64" else np.float32)):
                return np.empty(0, dtype=np.int64)  # fast path: NaN/Inf anywhere make the sum non-finite
        bad = ~np.isfinite(vals)
    elif dtype == "BF16":
        bits = raw[: n_rows * row_bytes].view(np.uint16)
        bad = (bits & 0x7F80) == 0x7F80  # exponent all ones: inf or NaN
    elif dtype == "F8_E5M2":
        bad = (raw[: n_rows * row_bytes] & 0x7C) == 0x7C
    else:  # F8_E4M3 (fn): only NaN, S.1111.111
        bad = (raw[: n_rows * row_bytes] & 0x7F) == 0x7F
    per_row = bad.reshape(n_rows, -1).any(axis=1)
    return np.flatnonzero(per_row)


def check_finite_rows(data: bytes | memoryview, dtype: str, row_bytes: int, row_ids, tensor: str, file: Path) -> None:
    """Raise naming the tensor and token row if any of these kept rows is not finite."""
    bad = nonfinite_rows(data, dtype, row_bytes)
    if bad.size:
        ids = [int(row_ids[i]) for i in bad[:5]]
        raise ModelFolderError(
            f"{file}: tensor {tensor!r} row {ids[0]} (token id {ids[0]}) holds NaN or infinite values"
            + (f" (also rows {ids[1:]}{' …' if bad.size > 5 else ''})" if len(ids) > 1 else "")
            + "; the base checkpoint is corrupt. Restore it (re-download or re-convert) and rerun"
        )


def _expected_names(folder: Path) -> tuple[dict[str, tuple[int, ...]], str] | None:
    """Parameter and persistent buffer names of the folder's architecture, and its
    base_model_prefix; None when the class cannot be built here (an unknown architecture:
    surgery's own rules still apply)."""
    from tasks.engine.checkpoint.guard import expected_shapes

    try:
        shapes, prefix = expected_shapes(folder)
    except ModelFolderError:
        return None
    return shapes, prefix or ""


@functools.lru_cache(maxsize=32)
def _check_names_cached(folder: str, stamp: tuple) -> None:
    import difflib

    from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint

    path = Path(folder)
    expected = _expected_names(path)
    if expected is None:
        return
    shapes, prefix = expected
    ckpt = LazyCheckpoint(path)

    def strip(n: str) -> str:
        return n[len(prefix) + 1:] if prefix and n.startswith(prefix + ".") else n

    want = {strip(n): (n, shape) for n, shape in shapes.items()}
    have = {strip(n): info for n, info in ckpt.tensors.items()}
    missing = {n: want[n] for n in want if n not in have}
    # A renamed tensor leaves an unknown name with the shape of a missing one. Unknown names
    # alone are legacy buffers (e.g. attn.bias); missing ones alone are tied weights.
    for name, info in have.items():
        if name in want:
            continue
        same_shape = [m for m, (_, shape) in missing.items() if shape == tuple(info.shape)]
        if not same_shape:
            continue
        closest = (difflib.get_close_matches(name, same_shape, n=1, cutoff=0) or same_shape)[0]
        raise ModelFolderError(
            f"{info.file}: tensor {info.name!r} in the shard header is not a weight of {ckpt_arch(path)} "
            f"(and {missing[closest][0]!r}, of the same shape {tuple(info.shape)}, is missing): the header was altered "
            "or belongs to another model. Restore the shard (re-download or re-convert) and rerun"
        )


def ckpt_arch(folder: Path) -> str:
    try:
        cfg = json.loads((folder / "config.json").read_text())
        return ",".join(cfg.get("architectures") or [cfg.get("model_type", "this model")])
    except (OSError, ValueError):
        return "this model"


def check_tensor_names(folder: Path) -> None:
    """Every tensor name in the shards belongs to the model's architecture (cached per folder
    state: shard names, sizes and mtimes)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        return  # reported by the folder checks
    stamp = tuple(sorted((p.name, os.stat(p).st_size, os.stat(p).st_mtime_ns)
                         for p in folder.glob("*.safetensors"))) + ((folder / "config.json").stat().st_mtime_ns,)
    _check_names_cached(str(folder.resolve()), stamp)
