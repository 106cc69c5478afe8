"""Choosing the kept token ids from counts, a policy and a size multiple.

Exactness rules: always keep specials/added tokens and what keeps every string encodable;
for BPE, close the kept set under merges (a token whose parents are gone is unreachable);
round the size *up* to the multiple with the next most frequent real tokens, never dummies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.engine.selection.backstop import select_backstop
from tasks.engine.counting.tokens import TokenCounts
from tasks.engine.errors import SelectionError
from tasks.engine.tokenizer.vocab import Vocab


# Vocabulary multiples beyond this never trim a real model (the largest vocabularies are
# ~262k tokens); per base, a multiple that would keep the whole vocabulary is an error too
# (tasks/pipeline/production/build.py, once the base's vocabulary is known).
MAX_MULTIPLE = 65536


def multiple_problem(multiple: object) -> str | None:
    """The one rule for a vocabulary multiple, wherever one comes in (the manifest, `trimworks
    trim --multiple`): None when it is fine, else what is wrong."""
    if isinstance(multiple, bool) or not isinstance(multiple, int):
        return f"a vocabulary multiple is a whole number, got {multiple!r}"
    if not 1 <= multiple <= MAX_MULTIPLE:
        return f"a vocabulary multiple is from 1 to {MAX_MULTIPLE:,} (8 or 64 suit GPUs), got {multiple:,}"
    return None


class KeepTextFile(BaseModel):
    """A UTF-8 file of texts to encode exactly (the whole file and each line); relative to the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str


class SelectionPolicy(BaseModel):
    """How many tokens to keep. `top_k` is an exact final size; otherwise min_count/coverage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_count: int | None = Field(default=None, ge=1, description="keep tokens seen at least this often in some language")
    coverage: float | None = Field(default=None, gt=0, le=1, description="keep the most frequent tokens until this share of token mass")
    top_k: int | None = Field(default=None, ge=1, description="exact final vocabulary size, specials included")
    keep: tuple[str, ...] = Field(default=(), description="tokens always kept (exact token strings)")
    keep_texts: tuple[str | KeepTextFile, ...] = Field(
        default=(), description="texts (inline, or {file: path}) whose every token is kept, so they encode exactly")
    weighting: Literal["equal", "proportional"] = "equal"

    @model_validator(mode="after")
    def _one_size_rule(self) -> SelectionPolicy:
        if self.top_k is not None and (self.min_count is not None or self.coverage is not None):
            raise ValueError("top_k is an exact size; do not combine it with min_count or coverage")
        return self

    @property
    def effective_min_count(self) -> int:
        return self.min_count if self.min_count is not None else 1


@dataclass(frozen=True)
class Selection:
    """The kept old ids (ascending: new id = position) and how they were chosen."""

    kept_ids: np.ndarray
    base_vocab_size: int
    multiple: int
    n_always: int
    n_policy: int
    n_merge_closure: int
    n_rounding: int
    notes: tuple[str, ...]
    n_backstop: int = 0  # tokens kept only by the character backstop (its cost)
    backstop_scripts: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return int(self.kept_ids.shape[0])


def old_to_new_map(kept_ids: np.ndarray) -> dict[int, int]:
    """Base id -> trimmed id: kept ids are renumbered 0.. in their (ascending) order."""
    return {int(old): new for new, old in enumerate(kept_ids)}


def combined_scores(counts: Sequence[TokenCounts], n: int, weighting: str) -> tuple[np.ndarray, np.ndarray]:
    """(score, max raw count) per id. 'equal': mean of per-language frequencies, so a small
    language is not drowned by a big one; 'proportional': pooled raw counts."""
    score = np.zeros(n, dtype=np.float64)
    maxcount = np.zeros(n, dtype=np.int64)
    for c in counts:
        v = np.zeros(n, dtype=np.int64)
        m = min(n, c.vocab_size)
        v[:m] = c.counts[:m]
        maxcount = np.maximum(maxcount, v)
        if weighting == "equal":
            total = v.sum()
            if total:
                score += v / total / len(counts)
        else:
            score += v
    return score, maxcount


class _KeptSet:
    def __init__(self, vocab: Vocab, merge_closure: bool):
        self.vocab = vocab
        self.mask = np.zeros(vocab.id_space, dtype=bool)
        self.merge_closure = merge_closure and vocab.kind == "BPE"
        self.closure_added = 0

    @property
    def size(self) -> int:
        return int(self.mask.sum())

    def missing_closure(self, token_id: int) -> list[int]:
        """Ids not yet kept that keeping `token_id` requires (itself and its merge ancestors)."""
        if self.mask[token_id]:
            return []
        if not self.merge_closure:
            return [token_id]
        out, seen, stack = [], {token_id}, [token_id]
        while stack:
            t = stack.pop()
            out.append(t)
            for a, b in self.vocab.producers.get(t, ()):
                for p in (a, b):
                    if p not in seen and not self.mask[p]:
                        seen.add(p)
                        stack.append(p)
        return out

    def add(self, ids: Iterable[int]) -> None:
        for i in ids:
            new = self.missing_closure(int(i))
            if new:
                self.mask[new] = True
                self.closure_added += len(new) - 1

    def fill(self, order: np.ndarray, target: int) -> None:
        """Add tokens in `order` (with closure) without overshooting `target`."""
        size = self.size  # counted as we go: a mask.sum() per token was O(vocab^2) (16 s for Qwen2's 152 k)
        for i in order:
            if size >= target:
                return
            new = self.missing_closure(int(i))
            if new and len(new) <= target - size:
                self.mask[new] = True
                size += len(new)


def select_kept_ids(
    vocab: Vocab,
    counts: Sequence[TokenCounts],
    policy: SelectionPolicy,
    multiple: int,
    extra_required: Iterable[int] = (),
    merge_closure: bool = True,
    languages: Sequence[str] = (),
) -> Selection:
    """Pick the kept ids. `merge_closure=False` exists only to demonstrate why closure matters.
    `languages` (ISO codes) name the scripts of the character backstop, with the counted ones."""
    if problem := multiple_problem(multiple):
        raise SelectionError(problem)
    if not counts:
        raise SelectionError("no counts tables given: count at least one corpus first")
    n = vocab.id_space
    score, maxcount = combined_scores(counts, n, policy.weighting)
    exists = np.zeros(n, dtype=bool)
    exists[list(vocab.id_to_token)] = True
    notes: list[str] = []

    unknown = [t for t in policy.keep if t not in vocab.token_to_id]
    if unknown:
        raise SelectionError(f"keep-list tokens not in the vocabulary: {unknown[:10]}")
    required = set(vocab.always_keep) | {vocab.token_to_id[t] for t in policy.keep}
    for i in extra_required:
        if i is not None and 0 <= int(i) < n and exists[int(i)]:
            required.add(int(i))
    if vocab.kind == "WordPiece":
        required |= _wordpiece_seen_characters(vocab, maxcount)
    backstop, scripts = select_backstop(
        vocab, [c.counts for c in counts], languages,
        byte_level="byte-level alphabet" in vocab.always_keep.values())
    backstop_only = backstop - required
    required |= backstop

    kept = _KeptSet(vocab, merge_closure)
    kept.add(sorted(required))
    n_always = kept.size
    # Rank: score descending, ties by id ascending; only ids that name a token.
    ids = np.flatnonzero(exists)
    order = ids[np.lexsort((ids, -score[ids]))]

    total = int(exists.sum())
    if policy.top_k is not None:
        target = policy.top_k
        if target % multiple:
            raise SelectionError(f"top_k {target} is not a multiple of {multiple}; choose a multiple of it")
        if n_always > target:
            raise SelectionError(f"top_k {target} is smaller than the {n_always} tokens that must always be kept")
        if target > total:
            raise SelectionError(f"top_k {target} is larger than the vocabulary ({total} tokens)")
        kept.fill(order, target)
        if kept.size != target:
            raise SelectionError(f"could not reach exactly top_k={target} tokens (got {kept.size})")
        n_policy, n_rounding = kept.size - n_always, 0
    else:
        picked = order[maxcount[order] >= policy.effective_min_count]
        if policy.coverage is not None:
            mass = np.cumsum(score[order])
            need = policy.coverage * mass[-1] if mass.size else 0
            n_cov = int(np.searchsorted(mass, need, side="left")) + 1
            picked = np.intersect1d(picked, order[:n_cov], assume_unique=True)
        closure_before = kept.closure_added
        kept.add(picked)
        n_policy = kept.size - n_always - (kept.closure_added - closure_before)
        target = math.ceil(kept.size / multiple) * multiple
        if target > total:
            notes.append(
                f"vocabulary has only {total} tokens, fewer than the next multiple of {multiple} ({target}); kept them all"
            )
            target = total
        before = kept.size
        kept.fill(order, target)
        n_rounding = kept.size - before
        if kept.size != target:
            raise SelectionError(f"could not round the vocabulary to a multiple of {multiple} (stuck at {kept.size})")
    kept_ids = np.flatnonzero(kept.mask).astype(np.int64)
    n_backstop = sum(1 for i in backstop_only if maxcount[i] < policy.effective_min_count)
    return Selection(
        kept_ids=kept_ids,
        base_vocab_size=total,
        multiple=multiple,
        n_always=n_always,
        n_policy=n_policy,
        n_merge_closure=kept.closure_added,
        n_rounding=n_rounding,
        notes=tuple(notes),
        n_backstop=n_backstop,
        backstop_scripts=scripts,
    )


def _wordpiece_seen_characters(vocab: Vocab, maxcount: np.ndarray) -> set[int]:
    """Single characters (and their '##' forms) of every counted token, so words made of
    seen characters stay encodable instead of collapsing to [UNK]."""
    chars: set[str] = set()
    for i in np.flatnonzero(maxcount):
        tok = vocab.id_to_token.get(int(i))
        if tok is None or int(i) in vocab.added_ids:
            continue
        chars.update(tok[2:] if tok.startswith("##") else tok)
    out = set()
    for ch in chars:
        for form in (ch, "##" + ch):
            if form in vocab.token_to_id:
                out.add(vocab.token_to_id[form])
    return out
