"""A streamed structural proof that a trimmed folder is its base with rows removed, nothing else.

Comparing model outputs needs both models in memory (two float64 copies of a 7 B model are
~112 GB); this proof needs a few 16 MiB buffers, whatever the model size, and instantiates
nothing. It checks, from the files on disk:

(a) every tensor that is not vocab-sized has the base's name, dtype, shape and bytes
    (xxh3-128 digests of both, read in blocks; the base's digests are remembered per
    process, so a base that serves many variants is read once);
(b) every vocab-sized tensor has the base's dtype, the kept-vocabulary shape, and row i
    equal to the base's row at kept id i (compared byte for byte, one read per run of
    consecutive kept ids);
(c) `config.json` and `generation_config.json` equal the base's except the remapped
    fields (vocab size and token ids), and each remapped id points at the same token;
(d) tokenization identity on the given texts (held-out, benchmark): every covered line
    tokenizes to the base's ids, mapped through the kept-id table.

A transformer's output at a position depends on the token ids only through the embedding
rows of those ids and, for heads, on the head rows of the kept ids; (a)-(d) together mean
the trimmed model computes the base's function restricted to the kept tokens on covered text.
A model that also treats ids by value does so through an id threshold of the architecture
data (Gemma 3n: ids below `vocab_size_per_layer_input` read their own per-layer row, the rest
row 0); (b) then also checks that each threshold became the count of kept ids below it, that
its tables hold the base rows of those ids, and that the fallback row kept its id, so every
kept id still reads what it read in the base. A model with any other id table is refused
before it is trimmed (`guard.check_id_tables`).
xxh3-128 is a non-cryptographic digest: it detects accidental differences (a collision
chance of 2^-128), not an adversary who crafts one; both files here are our own.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from pydantic import BaseModel, PrivateAttr

from tasks.engine.checkpoint.body import Body, FileStamp, body_file_proved
from tasks.engine.checkpoint.architectures import HOW_TO_EXTEND, ArchitectureRules, below_threshold, default_rules
from tasks.engine.counting.tokens import load_plain_tokenizer
from tasks.engine.checkpoint.digests import tensor_digest, thread_buffer
from tasks.engine.checkpoint.safetensors_io import BLOCK_BYTES, LazyCheckpoint, TensorInfo, row_runs
from tasks.engine.verify.outputs import LanguageFidelity, load_kept_ids, tokenization_fidelity

MAX_DETAILS = 5  # failures named per check (the first few are what a user needs)
ID_LIST_KEYS = ("suppress_tokens", "begin_suppress_tokens")
CONFIG_FILES = ("config.json", "generation_config.json")


class ProofCheck(BaseModel):
    """One check of the proof: what was compared, how many items, and the first failures."""

    name: str
    passed: bool
    items: int = 0
    detail: str = ""
    failures: list[str] = []


class ProofReport(BaseModel):
    checks: list[ProofCheck]
    languages: list[LanguageFidelity] = []
    body_digest: str | None = None  # the shared body the weights check rests on (shared layout)
    bytes_read: int = 0
    seconds: float = 0.0
    # Per text set, the lines the kept vocabulary covers (the chat check's message contents);
    # not serialised: records keep the figures, not the text.
    _covered: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    def covered_lines(self, names: Sequence[str]) -> dict[str, list[str]]:
        return {n: self._covered.get(n, []) for n in names}

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        return [f"{c.name}: {f}" for c in self.checks if not c.passed for f in (c.failures or [c.detail])]


def _rows_equal(base: TensorInfo, trimmed: TensorInfo, kept: np.ndarray, buf_a: memoryview, buf_b: memoryview) -> tuple[int | None, int]:
    """First trimmed row that differs from the base row at its old id (None: all equal), bytes read."""
    row_bytes = base.nbytes // base.shape[0] if base.shape[0] else 0
    if not row_bytes:
        return None, 0
    rows_per_block = max(1, len(buf_a) // row_bytes)
    read = 0
    fa, fb = os.open(base.file, os.O_RDONLY), os.open(trimmed.file, os.O_RDONLY)
    try:
        new_row = 0
        for first, length in row_runs(kept).tolist():
            done = 0
            while done < length:
                n_rows = min(rows_per_block, length - done)
                nbytes = n_rows * row_bytes
                a = buf_a[:nbytes]
                b = buf_b[:nbytes]
                if os.preadv(fa, [a], base.start + (first + done) * row_bytes) != nbytes or \
                        os.preadv(fb, [b], trimmed.start + (new_row + done) * row_bytes) != nbytes:
                    raise OSError(f"{trimmed.file}: unexpected end of file in tensor {trimmed.name!r}")
                read += 2 * nbytes
                if xxhash.xxh3_128_digest(a) != xxhash.xxh3_128_digest(b):  # ~10 GB/s; memoryview == runs at ~80 MB/s
                    diff = np.frombuffer(a, np.uint8).reshape(n_rows, row_bytes) != np.frombuffer(b, np.uint8).reshape(n_rows, row_bytes)
                    return new_row + done + int(np.flatnonzero(diff.any(axis=1))[0]), read
                done += n_rows
            new_row += length
    finally:
        os.close(fa)
        os.close(fb)
    return None, read


# --- (a) + (b): weights ----------------------------------------------------------------
DIGEST_THREADS = 2
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _digest_pool() -> ThreadPoolExecutor:
    """One pool for the process: its threads keep their 16 MiB buffers. A pool per proof
    allocated new ones each variant, and glibc kept the freed ones in per-thread arenas."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=DIGEST_THREADS, thread_name_prefix="proof-digest")
        return _POOL


def _both_digests(pair: tuple[TensorInfo, TensorInfo]) -> tuple[str, str, int]:
    """(base digest, trimmed digest, bytes read) of one copied tensor; the base's is usually
    remembered (surgery or an earlier variant read it), so only the variant is read."""
    buf = thread_buffer()
    b, t = pair
    db, rb = tensor_digest(b, buf, True)
    dt, rt = tensor_digest(t, buf)
    return db, dt, rb + rt


def prove_weights(base_dir: Path, trimmed_dir: Path, kept_ids: np.ndarray, vocab_size: int,
                  body: Body | None = None, rules: ArchitectureRules | None = None) -> tuple[list[ProofCheck], int]:
    """Checks (a) and (b), plus the tensor set and dtypes; returns the checks and bytes read.

    `rules`: the architecture table the variant was trimmed with (the user's rules first, as
    `trim --architectures` and the manifest's `architectures:` give them); which tensors are
    vocabulary-sized, and on which axis, comes from it alone.

    `body`: the base's proved shared body (`body.ensure_body`, keyed by the base's content
    identity). A tensor in one of its files stands on that proof once the file is shown to be
    the proved one: constant time for a hard link (same inode, size, mtime), one read for a copy."""
    rules = rules or default_rules()
    base, trim = LazyCheckpoint(Path(base_dir)), LazyCheckpoint(Path(trimmed_dir))
    kept = np.asarray(kept_ids, dtype=np.int64)
    base_config = json.loads((Path(base_dir) / "config.json").read_text())
    thresholds = rules.thresholds_in(base_config)
    threshold_fail = [f"ids >= {spec.config_key} ({size}) read row {spec.fallback_id}, but old id {spec.fallback_id} "
                      "is not at that new id: they would read another token's row"
                      for spec, size in thresholds
                      if spec.fallback_id is not None and below_threshold(kept, size).size < kept.size
                      and not (kept.size > spec.fallback_id and int(kept[spec.fallback_id]) == spec.fallback_id)]
    n_threshold = n_threshold_rows = 0
    missing = sorted(set(base.tensors) - set(trim.tensors))
    extra = sorted(set(trim.tensors) - set(base.tensors))
    names_fail = [f"missing tensor {n!r}" for n in missing[:MAX_DETAILS]] + [f"unexpected tensor {n!r}" for n in extra[:MAX_DETAILS]]
    dtype_fail: list[str] = []
    copy_fail: list[str] = []
    rows_fail: list[str] = []
    n_copied = n_sliced = n_rows = 0
    read = 0
    buf_a = memoryview(bytearray(BLOCK_BYTES))
    buf_b = memoryview(bytearray(BLOCK_BYTES))
    order = sorted((t for t in base.tensors.values() if t.name in trim.tensors), key=lambda t: (str(t.file), t.start))
    copied: list[tuple[TensorInfo, TensorInfo]] = []
    body_files: dict[str, str | None] = {}  # variant body file -> why it is not the proved one (None: it is)
    n_body = 0
    for b in order:
        t = trim.tensors[b.name]
        if t.dtype != b.dtype:
            dtype_fail.append(f"{b.name}: dtype {t.dtype}, base {b.dtype}")
            continue
        rule = rules.vocab_rule_for(b.name)
        governed = rules.threshold_for(b.name, base_config)
        if governed is not None:  # rows of the kept ids below the threshold, in order
            spec, size = governed
            n_threshold += 1
            rows = below_threshold(kept, size)
            want = [int(rows.size), *b.shape[1:]]
            if list(b.shape[:1]) != [size] or list(t.shape) != want:
                threshold_fail.append(f"{b.name}: shape {list(t.shape)}, expected {want} (the kept ids below "
                                      f"{spec.config_key} = {size}, base shape {list(b.shape)})")
                continue
            bad, nbytes = _rows_equal(b, t, rows, buf_a, buf_b)
            read += nbytes
            n_threshold_rows += int(rows.size)
            if bad is not None:
                threshold_fail.append(f"{b.name}: row {bad} differs from base row {int(rows[bad])} (its old id)")
        elif rule is not None and len(b.shape) > rule.axis and b.shape[rule.axis] == vocab_size:
            n_sliced += 1
            want = list(b.shape)
            want[rule.axis] = int(kept.size)
            if list(t.shape) != want:
                rows_fail.append(f"{b.name}: shape {list(t.shape)}, expected {want}")
                continue
            if rule.axis == 0:
                bad, nbytes = _rows_equal(b, t, kept, buf_a, buf_b)
                read += nbytes
            else:  # another axis (final_logits_bias [1, vocab], MobileBERT's head [H - E, vocab]): in memory
                ref = np.take(base.load_numpy(b.name), kept, axis=rule.axis)
                got = trim.load_numpy(t.name)
                read += b.nbytes + t.nbytes
                diff = np.flatnonzero((ref != got).reshape(-1, kept.size).any(axis=0)) if ref.size else []
                bad = int(diff[0]) if len(diff) else None
            n_rows += int(kept.size)
            if bad is not None:
                rows_fail.append(f"{b.name}: row {bad} differs from base row {int(kept[bad])} (its old id)")
        else:
            n_copied += 1
            if t.shape != b.shape:
                copy_fail.append(f"{b.name}: shape {list(t.shape)}, base {list(b.shape)}" + _unknown_rule_hint(b, t, vocab_size, kept.size))
                continue
            if body is not None and t.file.name in body.stamps:
                if t.file.name not in body_files:
                    linked = FileStamp.of(t.file) == body.stamps[t.file.name]
                    body_files[t.file.name] = body_file_proved(body, t.file)
                    read += 0 if linked else t.file.stat().st_size  # a copy is read once
                why = body_files[t.file.name]
                if why is None and body.weight_map.get(b.name) != t.file.name:
                    why = f"not in {t.file.name} of the proved body"
                if why is not None:
                    copy_fail.append(f"{b.name}: {why}")
                n_body += 1
                continue
            copied.append((b, t))
    # Two tensors at a time: reading (from disk, or from the page cache a fresh variant is
    # still in) and xxh3 both release the GIL, so a second thread is a second core's worth.
    for (b, t), (db, dt, nbytes) in zip(copied, _digest_pool().map(_both_digests, copied)):
        read += nbytes
        if db != dt:
            copy_fail.append(f"{b.name}: bytes differ from the base's (xxh3-128 {dt[:12]}… vs {db[:12]}…)")
    checks = [
        ProofCheck(name="tensor_set", passed=not names_fail, items=len(base.tensors),
                   detail=f"{len(base.tensors)} tensors, same names as the base" if not names_fail else "tensor names differ",
                   failures=names_fail),
        ProofCheck(name="dtypes", passed=not dtype_fail, items=len(order),
                   detail="every tensor keeps the base's dtype" if not dtype_fail else f"{len(dtype_fail)} tensors changed dtype",
                   failures=dtype_fail[:MAX_DETAILS]),
        ProofCheck(name="non_vocab_tensors_identical", passed=not copy_fail, items=n_copied,
                   detail=(f"{n_copied} tensors byte-identical to the base (xxh3-128, streamed)" if not n_body else
                           f"{n_copied} tensors byte-identical to the base: {n_body} in shared body {body.digest}, "
                           f"proved against the base once, its files here the proved ones"
                           + (f"; {n_copied - n_body} streamed" if n_copied > n_body else ""))
                   if not copy_fail else f"{len(copy_fail)} of {n_copied} tensors differ", failures=copy_fail[:MAX_DETAILS]),
        ProofCheck(name="kept_rows_identical", passed=not rows_fail and n_sliced > 0, items=n_rows,
                   detail=f"{n_sliced} vocab-sized tensors, {n_rows:,} kept rows equal the base rows at their old ids"
                   if not rows_fail and n_sliced else (f"{len(rows_fail)} of {n_sliced} vocab-sized tensors differ" if n_sliced
                                                       else f"no vocab-sized tensor with {vocab_size} rows in the base"),
                   failures=rows_fail[:MAX_DETAILS]),
    ]
    if thresholds:
        keys = ", ".join(f"{spec.config_key} {size}" for spec, size in thresholds)
        checks.append(ProofCheck(
            name="id_threshold_tables", passed=not threshold_fail and n_threshold > 0, items=n_threshold_rows,
            detail=(f"{n_threshold} tables of an id threshold ({keys}): {n_threshold_rows:,} rows equal the base rows of "
                    "the kept ids below it, ids above it read the base's fallback row") if not threshold_fail and n_threshold
            else (f"{len(threshold_fail)} problems with the id threshold ({keys})" if threshold_fail
                  else f"no table of the id threshold ({keys}) in the base"),
            failures=threshold_fail[:MAX_DETAILS]))
    return checks, read


def _unknown_rule_hint(base: TensorInfo, trimmed: TensorInfo, vocab_size: int, kept: int) -> str:
    """What to do when a tensor was sliced on a vocabulary axis by a rule this proof was not given."""
    axes = [i for i, (a, b) in enumerate(zip(base.shape, trimmed.shape))
            if a != b and a == vocab_size and b == kept] if len(base.shape) == len(trimmed.shape) else []
    if not axes:
        return ""
    return (f": axis {axes[0]} is the vocabulary ({vocab_size} -> {kept} kept), sliced by a rule this proof was not given. "
            "Give prove the rules the variant was trimmed with (`trimworks prove --architectures FILE`, the same file as "
            f"`trim --architectures`; the manifest's `architectures:` in the pipeline); to write such a rule, {HOW_TO_EXTEND}")


# --- (c): configs ----------------------------------------------------------------------
def _config_diffs(base: dict[str, Any], trimmed: dict[str, Any], kept: np.ndarray, vocab_size: int,
                  rules: ArchitectureRules | None = None, thresholds: Mapping[str, int] | None = None) -> tuple[list[str], int]:
    """Every way `trimmed` differs from `base` other than the remapped fields; and fields checked.
    `thresholds`: id-threshold keys and the value each must have (the count of kept ids below the base's)."""
    rules = rules or default_rules()
    special_keys, size_keys = rules.special_id_keys, rules.vocab_size_keys
    problems: list[str] = []
    k = int(kept.size)
    thresholds = thresholds or {}

    def same_token(new: Any, old: int) -> bool:
        return isinstance(new, int) and 0 <= new < k and int(kept[new]) == old

    for key in sorted(set(base) | set(trimmed)):
        if key not in base or key not in trimmed:
            problems.append(f"{key}: {'added' if key not in base else 'removed'}")
            continue
        old, new = base[key], trimmed[key]
        if key in thresholds:
            if new != thresholds[key]:
                problems.append(f"{key}={new}, expected {thresholds[key]}: the count of kept ids below the base's {old}, "
                                "so that every kept id keeps its side of it")
        elif key in size_keys and old == vocab_size:
            if new != k:
                problems.append(f"{key}={new}, expected the kept vocabulary size {k}")
        elif key in special_keys and isinstance(old, int) and not isinstance(old, bool) and old >= 0:
            if not same_token(new, old):
                problems.append(f"{key}={new} does not name the base's token {old}")
        elif key in special_keys and isinstance(old, list):
            if not isinstance(new, list) or len(new) != len(old) or not all(same_token(n, o) for n, o in zip(new, old)):
                problems.append(f"{key}={new} does not name the base's tokens {old}")
        elif key == "forced_decoder_ids" and old:
            ok = isinstance(new, list) and len(new) == len(old) and all(
                n[0] == o[0] and same_token(n[1], o[1]) for n, o in zip(new, old))
            if not ok:
                problems.append(f"{key}={new} does not name the base's tokens {old}")
        elif key in ID_LIST_KEYS and isinstance(old, list):
            table = {int(o): i for i, o in enumerate(kept)}
            if new != [table[i] for i in old if i in table]:
                problems.append(f"{key}={new} is not the base's list remapped to kept ids")
        elif old != new:
            problems.append(f"{key}: {json.dumps(new)[:80]}, base {json.dumps(old)[:80]} (not a remapped field)")
    return problems, len(set(base) | set(trimmed))


def prove_configs(base_dir: Path, trimmed_dir: Path, kept_ids: np.ndarray, vocab_size: int,
                  rules: ArchitectureRules | None = None) -> list[ProofCheck]:
    """Check (c): config.json and generation_config.json differ only in remapped fields."""
    rules = rules or default_rules()
    kept = np.asarray(kept_ids, dtype=np.int64)
    checks = []
    for name in CONFIG_FILES:
        b, t = Path(base_dir) / name, Path(trimmed_dir) / name
        check = name.removesuffix(".json")
        if not b.exists() and not t.exists():
            continue
        if b.exists() != t.exists():
            checks.append(ProofCheck(name=check, passed=False, detail=f"{name} {'missing' if b.exists() else 'added'}",
                                     failures=[f"{name} exists in {'the base only' if b.exists() else 'the trimmed folder only'}"]))
            continue
        base_cfg = json.loads(b.read_text())
        thresholds = {spec.config_key: int(below_threshold(kept, size).size)
                      for spec, size in rules.thresholds_in(base_cfg)} if name == "config.json" else {}
        problems, n = _config_diffs(base_cfg, json.loads(t.read_text()), kept, vocab_size, rules, thresholds)
        checks.append(ProofCheck(name=check, passed=not problems, items=n,
                                 detail=f"{n} fields: equal to the base's, or remapped to the same tokens" if not problems
                                 else f"{len(problems)} fields differ beyond the remapping", failures=problems[:MAX_DETAILS]))
    return checks


# --- (d): tokenization -----------------------------------------------------------------
def prove_tokenization(
    base_dir: Path, trimmed_dir: Path, kept_ids: np.ndarray, texts: Mapping[str, Sequence[str]],
    covered: dict[str, list[str]] | None = None,
) -> tuple[list[ProofCheck], list[LanguageFidelity]]:
    """Check (d), per text set (e.g. `fr` held-out, `benchmark:fr`): covered lines tokenize
    identically. `covered` (if given) receives each set's covered lines."""
    if not texts:
        return [], []
    base_tok = load_plain_tokenizer(Path(base_dir) / "tokenizer.json")
    trim_tok = load_plain_tokenizer(Path(trimmed_dir) / "tokenizer.json", word_cache=False)
    checks, fids = [], []
    kept = np.asarray(kept_ids, dtype=np.int64)
    for name, lines in texts.items():
        fid, covered_lines = tokenization_fidelity(base_tok, trim_tok, kept, name, list(lines))
        fids.append(fid)
        if covered is not None:
            covered[name] = covered_lines
        bad = fid.covered_lines - fid.identical_covered_lines
        checks.append(ProofCheck(
            name=f"tokenization:{name}", passed=bad == 0, items=fid.covered_lines,
            detail=f"{fid.identical_covered_lines} of {fid.covered_lines} covered lines ({fid.lines} lines) tokenize identically",
            failures=[f"differs: {line[:80]!r}" for line in fid.mismatches[:MAX_DETAILS]],
        ))
    return checks, fids


def prove_variant(
    base_dir: Path,
    trimmed_dir: Path,
    texts: Mapping[str, Sequence[str]] | None = None,
    kept_ids: np.ndarray | None = None,
    body: Body | None = None,
    rules: ArchitectureRules | None = None,
) -> ProofReport:
    """The whole proof (a)-(d) of one trimmed folder against its base, in constant memory.
    `body`: the base's proved shared body (see `prove_weights`); `rules`: the architecture
    table the variant was trimmed with (packaged rules when None)."""
    t0 = time.perf_counter()
    kept = load_kept_ids(trimmed_dir) if kept_ids is None else np.asarray(kept_ids, dtype=np.int64)
    vocab_size = int(json.loads((Path(base_dir) / "config.json").read_text())["vocab_size"])
    checks, read = prove_weights(base_dir, trimmed_dir, kept, vocab_size, body, rules)
    checks += prove_configs(base_dir, trimmed_dir, kept, vocab_size, rules)
    covered: dict[str, list[str]] = {}
    tok_checks, fids = prove_tokenization(base_dir, trimmed_dir, kept, texts or {}, covered)
    checks += tok_checks
    report = ProofReport(checks=checks, languages=fids, bytes_read=read, seconds=round(time.perf_counter() - t0, 3),
                         body_digest=body.digest if body is not None else None)
    report._covered = covered
    return report


def parameter_count(folder: Path) -> int:
    """Parameters of a safetensors folder, from its headers alone."""
    return sum(math.prod(t.shape) for t in LazyCheckpoint(Path(folder)).tensors.values())
