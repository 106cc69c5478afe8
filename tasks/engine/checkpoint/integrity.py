"""Corruption detected where it starts, not blamed on trimming later: non-finite values
(NaN/Inf) in the embedding rows a variant keeps raise an error naming the tensor and the row
(token id), checked on the bytes surgery reads anyway.

Pure bytes, no model class: `safetensors_io` calls it while it streams rows. The check of a
shard's tensor names against the architecture lives in `guard` (`check_tensor_names`).
"""

from __future__ import annotations

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
