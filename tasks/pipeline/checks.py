"""Which checks a variant carries: the structural proof always; output comparison sampled.

The proof (tasks/engine/proof.py) shows, per variant and in constant memory, that the
trimmed files are the base's with rows removed. Comparing outputs loads both models (in
float64: ~8 bytes per parameter each), which for a 7 B base does not fit and for small
bases dominates a variant's build time. Its job is to check the architecture assumption
behind the proof (which tensors are vocab-sized), which is the same for every variant of
a base; so `verify.outputs: auto` compares outputs once per base model and architecture
per run, plus a deterministic sample of the others, and not at all above a size.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

from tasks.engine.gguf import read_source_info
from tasks.engine.proof import ProofReport, parameter_count
from tasks.engine.safetensors_io import LazyCheckpoint
from tasks.pipeline.manifest import Variant, VerifySpec
from tasks.pipeline.record import VariantRecord

_FIRST_OF_BASE: dict[tuple[str, str], str] = {}  # (base folder, architecture) -> variant id that compared outputs
_LOCK = threading.Lock()


def start_run() -> None:
    """Forget which bases had their outputs compared: a new run compares each base again."""
    with _LOCK:
        _FIRST_OF_BASE.clear()


@functools.lru_cache(maxsize=256)
def _base_facts(base_dir: str, mtime_ns: int) -> tuple[int, str]:
    config = json.loads((Path(base_dir) / "config.json").read_text())
    arch = ",".join(config.get("architectures") or []) or str(config.get("model_type", "unknown"))
    return parameter_count(Path(base_dir)), arch


def sampled(fingerprint: str, share: float) -> bool:
    """Deterministic: the same variant is (or is not) in the sample on every run and machine."""
    if share <= 0:
        return False
    u = int.from_bytes(hashlib.sha256(f"outputs:{fingerprint}".encode()).digest()[:8], "big") / 2**64
    return u < share


def output_check(spec: VerifySpec, variant: Variant, base_dir: Path, sample_lines: int) -> tuple[bool, str]:
    """(compare outputs?, why) for one variant about to be built."""
    if spec.outputs == "never":
        return False, "not compared: verify.outputs is never"
    if sample_lines <= 0:
        return False, "not compared: verify_sample_lines is 0"
    if spec.outputs == "always":
        return True, "compared (verify.outputs: always)"
    base = Path(base_dir).resolve()
    params, arch = _base_facts(str(base), (base / "config.json").stat().st_mtime_ns)
    if params > spec.outputs_max_params:
        return False, (f"not compared: the base has {params:,} parameters, above verify.outputs_max_params "
                       f"{spec.outputs_max_params:,} (the structural proof covers it)")
    key = (str(base), arch)
    with _LOCK:
        first = _FIRST_OF_BASE.setdefault(key, variant.id)
    if first == variant.id:
        return True, f"compared: first variant of this base and architecture ({arch}) in the run"
    if sampled(variant.fingerprint, spec.outputs_sample):
        return True, f"compared: in the {spec.outputs_sample:.0%} sample of variants"
    return False, f"not compared: {first} carried this base's output comparison in this run"


def checks_section(records: Sequence[VariantRecord]) -> list[str]:
    """Catalog lines: which variant carried which check."""
    rows = [r for r in records if r.status != "failed" and (r.checks or r.output_check)]
    if not rows:
        return []
    out = ["## Checks per variant", "",
           "Every variant carries the streamed structural proof; output comparison is sampled (`verify.outputs`).", "",
           "| variant | checks | proof | output comparison |", "|---|---|---|---|"]
    for r in rows:
        proof = "–" if r.proof_passed is None else ("passed" if r.proof_passed else "FAILED")
        if r.proof_passed is not None and r.proof_seconds is not None:
            proof += f" ({len(r.proof)} checks, {r.proof_seconds:.2f} s)"
        out.append(f"| {r.variant_id} | {', '.join(r.checks) or '–'} | {proof} | {r.output_check or '–'} |")
    return out + [""]


def proof_fields(proof: ProofReport, compared: bool, why: str) -> dict:
    """VariantRecord fields saying which checks ran and their results."""
    return {"checks": ["proof"] + (["outputs"] if compared else []), "proof": proof.checks,
            "proof_passed": proof.passed, "proof_seconds": proof.seconds, "output_check": why}


def base_weight_fields(base_dir: Path) -> dict:
    """The base's dtype (by bytes) and, for a converted GGUF, its file and quantization."""
    by_dtype: dict[str, int] = {}
    for t in LazyCheckpoint(Path(base_dir)).tensors.values():
        by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
    fields = {"dtype": DTYPE_NAMES.get(max(by_dtype, key=by_dtype.get), None) if by_dtype else None}
    info = read_source_info(Path(base_dir))
    if info and info.get("format") == "gguf":
        fields.update(source_file=info.get("file"), source_quantization=info.get("quantization"))
    return fields


DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3",
               "F8_E5M2": "float8_e5m2"}
