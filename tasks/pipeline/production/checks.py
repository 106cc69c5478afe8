"""Which checks a variant carries: the structural proof always; output comparison sampled.

The proof (tasks/engine/verify/proof.py) shows, per variant and in constant memory, that the
trimmed files are the base's with rows removed. Comparing outputs loads both models (one
after the other, in the checkpoint's dtype, computing in float64), which for a 7 B base
does not fit and for small bases dominates a variant's build time. Its job is to check the
architecture assumption behind the proof (which tensors are vocab-sized), which is the same
for every variant of a base; so `verify.outputs: auto` compares outputs once per base model
and architecture per run, plus a deterministic sample of the others, and not at all above a
size.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tasks.engine.checkpoint.gguf import read_source_info
from tasks.engine.errors import TrimworksError
from tasks.engine.verify.proof import ProofReport, parameter_count
from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint
from tasks.pipeline.manifest import Variant, VerifySpec
from tasks.pipeline.report.record import VariantRecord

FLOAT64_TOLERANCE = 1e-5
FLOAT32_TOLERANCE = 1e-3
# (base folder, architecture) -> variant id that compared outputs, for callers that pass no
# carrier (a plain loop in one process); the flow passes the carrier it chose instead.
_FIRST_OF_BASE: dict[tuple[str, str], str] = {}
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


class OutputCheck(NamedTuple):
    """Whether a variant compares model outputs, why, and in which precision."""

    compare: bool
    why: str
    dtype: str = "float64"
    tolerance: float = FLOAT64_TOLERANCE


def _precision(spec: VerifySpec, params: int) -> tuple[str, float] | None:
    """float64 where the weights fit the memory budget, else float32, else None.

    The rule counts a full copy of the weights in that precision (8 or 4 bytes a parameter):
    an upper bound, as the comparison streams one layer at a time from the checkpoint
    (tasks/engine/verify/streamed_model.py), or, for a model the stream cannot build, keeps the
    checkpoint's dtype and widens one layer at a time (verify.compute_in).

    float64 makes BLAS's shape-dependent rounding ~1e-13, so any real difference stands out;
    float32 halves the memory but leaves ~1e-5 of rounding on logits, hence its wider tolerance
    (a wrong row or tensor moves outputs by far more)."""
    budget = spec.outputs_memory_gb * 1e9
    if 8 * params <= budget:
        return "float64", FLOAT64_TOLERANCE
    if 4 * params <= budget:
        return "float32", FLOAT32_TOLERANCE
    return None


def comparison_key(base_dir: Path) -> tuple[str, str]:
    """What one output comparison per run covers: a base folder and its architecture."""
    base = Path(base_dir).resolve()
    return str(base), _base_facts(str(base), (base / "config.json").stat().st_mtime_ns)[1]


def choose_carriers(variants: Sequence[tuple[str, Path]]) -> dict[str, str]:
    """Variant id -> the id of the variant that carries its base's output comparison in this
    run: the first of each base and architecture in the given (plan) order.

    The flow decides this once, so worker processes need no shared state; a base whose
    config or weights cannot be read keys on its folder alone (its build reports the problem)."""
    first: dict[tuple[str, str], str] = {}
    out = {}
    for variant_id, base_dir in variants:
        try:
            key = comparison_key(base_dir)
        except (OSError, ValueError, TrimworksError):  # no config, no weights, an unreadable header
            key = (str(Path(base_dir).resolve()), "")
        out[variant_id] = first.setdefault(key, variant_id)
    return out


COMPARE_STAGE = "compare"  # the build stage of the output comparison (build.py, runtime/stages.py)
CRASHED_STAGE = "crashed"  # the build task itself died (a killed worker, a crash): any stage, the comparison too


def vouched_failure(record: VariantRecord) -> str | None:
    """Why the other variants of a carrier's base must not publish: its output comparison ran
    and failed or crashed. A carrier that failed before comparing vouches for nothing (the next
    variant carries the comparison instead)."""
    if record.status == "failed" and record.failed_stage == COMPARE_STAGE:
        return f"not published: the output comparison of its base failed on {record.variant_id}: {record.error}"
    if record.status == "failed" and record.failed_stage == CRASHED_STAGE:
        return (f"not published: the build carrying its base's output comparison ({record.variant_id}) crashed: "
                f"{record.error}; rerun")
    return None


def compared_outputs(record: VariantRecord) -> bool:
    return record.status == "published" and "outputs" in record.checks


PROOF_ONLY = "only the structural proof stands for this base"


def proof_only_reason(spec: VerifySpec, base_dir: Path, sample_lines: int) -> str | None:
    """Why no variant of this base has its outputs compared (the proof alone vouches for
    them), or None when one will be. Shown on the cards and catalog, listed by `trimworks plan`."""
    if spec.outputs == "never":
        return f"{PROOF_ONLY}: verify.outputs is never"
    if sample_lines <= 0:
        return f"{PROOF_ONLY}: verify_sample_lines is 0"
    if spec.outputs == "always":
        return None
    base = Path(base_dir).resolve()
    params, _arch = _base_facts(str(base), (base / "config.json").stat().st_mtime_ns)
    if params > spec.outputs_max_params:
        return (f"{PROOF_ONLY}: it has {params:,} parameters, above verify.outputs_max_params "
                f"{spec.outputs_max_params:,}")
    if _precision(spec, params) is None:
        return (f"{PROOF_ONLY}: its {params:,} parameters need {4 * params / 1e9:.1f} GB even in float32, above "
                f"verify.outputs_memory_gb {spec.outputs_memory_gb:g}")
    return None


def loss_skipped_reason(spec: VerifySpec, base_dir: Path) -> str | None:
    """Why this base's variants do not measure the loss on uncovered lines (None: every variant
    does). It runs within the output comparison's size budget: a forward of the base per line."""
    if spec.loss_sample <= 0:
        return "verify.loss_sample is 0"
    base = Path(base_dir).resolve()
    params, _arch = _base_facts(str(base), (base / "config.json").stat().st_mtime_ns)
    if params > spec.outputs_max_params:
        return f"the base has {params:,} parameters, above verify.outputs_max_params {spec.outputs_max_params:,}"
    return None


def output_check(spec: VerifySpec, variant: Variant, base_dir: Path, sample_lines: int,
                 carrier: str | None = None) -> OutputCheck:
    """Whether (and how) one variant about to be built compares outputs.

    `carrier` is the id of the variant that carries this base's comparison in the run, as the
    flow decided it (`choose_carriers`); without it, the first variant of the base to get here
    in this process carries it (`start_run` forgets)."""
    reason = proof_only_reason(spec, base_dir, sample_lines)
    if reason is not None:
        return OutputCheck(False, f"not compared: {reason}")
    base = Path(base_dir).resolve()
    params, arch = _base_facts(str(base), (base / "config.json").stat().st_mtime_ns)
    precision = _precision(spec, params)
    if spec.outputs == "always":
        dtype, tol = precision or ("float32", FLOAT32_TOLERANCE)
        return OutputCheck(True, f"compared in {dtype} (verify.outputs: always)", dtype, tol)
    dtype, tol = precision
    if carrier is not None:
        first = carrier
    else:
        with _LOCK:
            first = _FIRST_OF_BASE.setdefault((str(base), arch), variant.id)
    if first == variant.id:
        return OutputCheck(True, f"compared in {dtype}: first variant of this base and architecture ({arch}) in the run",
                           dtype, tol)
    if sampled(variant.fingerprint, spec.outputs_sample):
        return OutputCheck(True, f"compared in {dtype}: in the {spec.outputs_sample:.0%} sample of variants", dtype, tol)
    return OutputCheck(False, f"not compared: {first} carried this base's output comparison in this run")


# A comparison (two float64 forwards a line, then the loss) costs about this many variants' other
# work (select, write, prove, card): SmolLM2's 12 s + 5 s against 1.2 s (bench row 6).
COMPARE_COST = 12


def build_cost(spec: VerifySpec, variants: Sequence[Variant], base_dir: Path, sample_lines: int,
               carriers: dict[str, str]) -> float:
    """A build group's expected work, in variant-builds of a one-parameter model: what the run
    starts first among the groups that may start (costliest first), so that a long group
    (one carrying a comparison, a big base) does not end the run alone on one worker."""
    try:
        params = _base_facts(str(Path(base_dir).resolve()), (Path(base_dir) / "config.json").stat().st_mtime_ns)[0]
        compares = sum(output_check(spec, v, base_dir, sample_lines, carriers.get(v.id)).compare for v in variants)
    except (OSError, ValueError, TrimworksError):  # the build reports an unreadable base
        return 0.0
    return float(params) * (len(variants) + COMPARE_COST * compares)


def proof_only_lines(records: Sequence[VariantRecord]) -> list[str]:
    """Catalog lines naming the bases whose published variants rest on the proof alone."""
    bases = sorted({r.base for r in records if r.status != "failed" and PROOF_ONLY in (r.output_check or "")})
    if not bases:
        return []
    return [f"No variant of {', '.join(bases)} had its outputs compared: {PROOF_ONLY} "
            "(its variants' cards say why).", ""]


def checks_section(records: Sequence[VariantRecord]) -> list[str]:
    """Catalog lines: which variant carried which check."""
    rows = [r for r in records if r.status != "failed" and (r.checks or r.output_check)]
    if not rows:
        return []
    out = ["## Checks per variant", "",
           "Every variant carries the streamed structural proof; output comparison is sampled (`verify.outputs`).", ""]
    out += proof_only_lines(rows)
    out += ["| variant | checks | proof | output comparison |", "|---|---|---|---|"]
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


class VouchedSchedule:
    """Which build groups may start, so that no variant is published on the proof alone while
    its base's output comparison is pending or has failed (verify.outputs: auto).

    Groups are keyed by their base's carrier (`choose_carriers`). The group holding the carrier
    starts first; when it ends, the base's other groups start if a variant of it published (the
    comparison passed, or the base's budget allows none), or fail with the carrier's reason if
    its comparison failed; if every variant of it failed before comparing, the next group
    carries the comparison. With `sequential=False` (outputs always or never: no variant
    vouches for another) every group starts at once."""

    def __init__(self, groups: Sequence[Any], carriers: dict[str, str], sequential: bool):
        self._waiting: dict[str, list[Any]] = {}
        self._base_of: dict[int, str] = {}
        self.ready: list[tuple[Any, str]] = []  # (group, carrier id) to start now
        for g in groups:
            key = carriers[g.variants[0].id]
            self._base_of[id(g)] = key
            if not sequential:
                self.ready.append((g, key))
            elif key in self._waiting:
                self._waiting[key].append(g)
            else:
                self._waiting[key] = []
                self.ready.append((g, key))

    def take_ready(self) -> list[tuple[Any, str]]:
        ready, self.ready = self.ready, []
        return ready

    def finished(self, group: Any, records: Sequence[VariantRecord]) -> list[tuple[Any, str]]:
        """After a group ends: the groups to fail now, with the reason; the ones to start are in `ready`."""
        key = self._base_of[id(group)]
        waiting = self._waiting.get(key)
        if not waiting:
            return []
        reason = next((r for r in map(vouched_failure, records) if r), None)
        if reason is not None:
            self._waiting[key] = []
            return [(g, reason) for g in waiting]
        carrier = next((r.variant_id for r in records if compared_outputs(r)), None)
        if carrier is not None or any(r.status == "published" for r in records):
            self._waiting[key] = []
            self.ready += [(g, carrier or key) for g in waiting]
        else:  # nothing of this group got as far as comparing: the next group carries it
            nxt = waiting.pop(0)
            self.ready.append((nxt, nxt.variants[0].id))
        return []
