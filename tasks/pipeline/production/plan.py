"""What a run will do, decided before any work is done: pure, no Prefect.

    manifest + materialised bases -> variants -> each one: build / skip (up to date) / fail
    early (broken base) -> what to count (once per tokenizer x language), which held-out
    text, which coverage plots -> after counting: build groups (one per base x language
    subset) or failures (a count or held-out text that could not be made).

The flow submits what the plan names and collects; the benchmark's plain loop and a
`trimworks plan` command walk the same plan without Prefect.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tasks.engine.errors import ManifestError
from tasks.engine.checkpoint.model_folder import TOKENIZER_JSON, tokenizer_fingerprint
from tasks.engine.runtime.redact import redact
from tasks.pipeline.manifest import LoadedManifest, Variant, expand, langs_label
from tasks.pipeline.production.base_models import base_identity


@dataclass(frozen=True)
class BaseState:
    """A base model as this run found it: a local folder, or why there is none."""

    id: str
    folder: Path | None = None
    error: str | None = None
    identity: str | None = None  # content identity: part of every variant's fingerprint
    tokenizer: str | None = None  # tokenizer fingerprint: bases sharing a tokenizer share counts

    @classmethod
    def ready(cls, base_id: str, folder: Path, digest_cache: Path | None = None) -> BaseState:
        """Inspect a materialised folder (raises if it is unreadable: the caller records that).
        `digest_cache` spares rehashing unchanged weight files (keyed by path, size, mtime, inode)."""
        folder = Path(folder)
        return cls(base_id, folder, identity=base_identity(folder, digest_cache),
                   tokenizer=tokenizer_fingerprint(folder / TOKENIZER_JSON))

    @classmethod
    def broken(cls, base_id: str, error: str) -> BaseState:
        return cls(base_id, error=error)

    @classmethod
    def pending(cls, base_id: str) -> BaseState:
        """Not materialised yet (a Hub download or GGUF conversion a run would do first)."""
        return cls(base_id)

    @property
    def tokenizer_json(self) -> Path:
        assert self.folder is not None, f"base {self.id} has no folder: {self.error}"
        return self.folder / TOKENIZER_JSON


Action = Literal["build", "skip", "fail"]


@dataclass(frozen=True)
class Decision:
    """One variant's fate before counting, and why (the published fingerprint it was compared to)."""

    variant: Variant
    action: Action
    reason: str
    published_fingerprint: str | None = None
    conflict: bool = False  # failed because the target is another manifest's or a user's folder


@dataclass(frozen=True)
class CountKey:
    """Token counts are made once per tokenizer (by fingerprint) and language."""

    tokenizer: str
    language: str


@dataclass(frozen=True)
class Outcome:
    """What a count or held-out task produced: a file, or the error that stopped it."""

    path: Path | None = None
    error: str | None = None


@dataclass
class BuildGroup:
    """One build task: the vocab multiples of one base x language subset, sharing their inputs."""

    base: BaseState
    languages: tuple[str, ...]
    variants: list[Variant]
    counts: dict[str, Path]
    heldout: dict[str, Path]

    @property
    def name(self) -> str:
        return f"{self.base.id}-{langs_label(self.languages)}"


@dataclass
class Plan:
    """Every variant of the run (manifest order) with its decision, and the work it implies."""

    decisions: list[Decision]
    bases: dict[str, BaseState]
    force: bool = False
    _by_action: dict[str, list[Variant]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_action = {"build": [], "skip": [], "fail": []}
        for d in self.decisions:
            self._by_action[d.action].append(d.variant)

    @property
    def variants(self) -> list[Variant]:
        return [d.variant for d in self.decisions]

    @property
    def to_build(self) -> list[Variant]:
        return self._by_action["build"]

    @property
    def up_to_date(self) -> list[Variant]:
        return self._by_action["skip"]

    @property
    def failed_early(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == "fail"]

    def count_jobs(self) -> dict[CountKey, Path]:
        """Counts the builds need: tokenizer.json to count with, per (tokenizer, language)."""
        jobs: dict[CountKey, Path] = {}
        for v in self.to_build:
            base = self.bases[v.base]
            if base.folder is None:  # not materialised (`trimworks plan`): its tokenizer is unknown yet
                continue
            for lang in v.languages:
                jobs[CountKey(base.tokenizer, lang)] = base.tokenizer_json
        return jobs

    def heldout_languages(self) -> list[str]:
        """Languages whose held-out text the builds verify on (first-use order)."""
        return list(dict.fromkeys(lang for v in self.to_build for lang in v.languages))

    def plot_languages(self) -> dict[str, list[str]]:
        """Base id -> the languages its coverage plot shows (those of the variants built)."""
        out: dict[str, set[str]] = {}
        for v in self.to_build:
            out.setdefault(v.base, set()).update(v.languages)
        return {base: sorted(langs) for base, langs in out.items()}

    def count_key(self, base_id: str, language: str) -> CountKey:
        return CountKey(self.bases[base_id].tokenizer, language)

    def groups(self, counts: Mapping[CountKey, Outcome],
               heldout: Mapping[str, Outcome]) -> tuple[list[BuildGroup], dict[str, tuple[Variant, str]]]:
        """Split the builds into build groups, once counts and held-out text exist.

        A variant whose counts or held-out text failed fails here with those errors (its
        siblings in other subsets still build). Returns (groups in first-use order,
        variant id -> (variant, error))."""
        groups: dict[tuple[str, tuple[str, ...]], BuildGroup] = {}
        failed: dict[str, tuple[Variant, str]] = {}
        for v in self.to_build:
            outcomes = [counts[self.count_key(v.base, l)] for l in v.languages] + [heldout[l] for l in v.languages]
            errors = [o.error for o in outcomes if o.error]
            if errors:
                failed[v.id] = (v, "; ".join(dict.fromkeys(errors)))
                continue
            key = (v.base, v.languages)
            if key not in groups:
                groups[key] = BuildGroup(
                    self.bases[v.base], v.languages, [],
                    counts={l: counts[self.count_key(v.base, l)].path for l in v.languages},
                    heldout={l: heldout[l].path for l in v.languages})
            groups[key].variants.append(v)
        return list(groups.values()), failed

    def fail_builds(self, reason: str) -> None:
        """Every variant still to build fails with `reason` (e.g. an unwritable output, found
        before any work is done)."""
        self.decisions = [Decision(d.variant, "fail", reason) if d.action == "build" else d for d in self.decisions]
        self.__post_init__()

    def summary(self) -> str:
        return (f"{len(self.decisions)} variants: {len(self.to_build)} to build, {len(self.up_to_date)} up to date, "
                f"{len(self.failed_early)} failed early")


def select_variants(variants: list[Variant], only: list[str] | None, manifest: str) -> list[Variant]:
    """`only` these ids, in manifest order; an unknown id is refused with close matches."""
    if not only:
        return variants
    ids = {v.id for v in variants}
    unknown = [o for o in only if o not in ids]
    if unknown:
        hints = {u: difflib.get_close_matches(u, ids, n=3) for u in unknown}
        raise ManifestError(f"{manifest}: no variant(s) {unknown}; close matches: {hints}. `trimworks list` shows all ids")
    return [v for v in variants if v.id in set(only)]


def decide(variant: Variant, base: BaseState, published: Callable[[Variant], str | None], force: bool,
           conflict: Callable[[Variant], str | None] | None = None) -> Decision:
    """Build, skip or fail one variant. `published` asks the target for its fingerprint
    (only when the answer matters: a Hub target costs a request); `conflict` says why the
    target is not this manifest's to replace (another manifest's variant, a user's folder)."""
    if base.error is not None:
        return Decision(variant, "fail", base.error)
    problem = conflict(variant) if conflict is not None else None
    if problem:
        return Decision(variant, "fail", problem, conflict=True)
    try:  # per variant: an unreachable Hub fails these variants, not the run
        if base.folder is None:  # only `trimworks plan` knows such bases: it downloads/converts nothing
            return Decision(variant, "build", "base not materialized yet", published(variant))
        if force:
            return Decision(variant, "build", "forced")
        current = published(variant)
    except Exception as exc:  # noqa: BLE001
        return Decision(variant, "fail", redact(f"{variant.id}: cannot read the published state "
                                                f"({type(exc).__name__}: {exc})"))
    if current == variant.fingerprint:
        return Decision(variant, "skip", "up to date", current)
    return Decision(variant, "build", "not published" if current is None else "fingerprint changed", current)


def plan(m: LoadedManifest, bases: list[BaseState], published: Callable[[Variant], str | None],
         force: bool = False, only: list[str] | None = None, corpus_identity: dict[str, str] | None = None,
         conflict: Callable[[Variant], str | None] | None = None) -> Plan:
    """The run's plan: manifest -> variants (fingerprints from the bases' and corpora's
    content identities) -> decisions (`conflict`: see `decide`)."""
    by_id = {b.id: b for b in bases}
    identities = {b.id: b.identity for b in bases if b.error is None}
    variants = select_variants(expand(m, identities, corpus_identity), only, str(m.path))
    return Plan([decide(v, by_id[v.base], published, force, conflict) for v in variants], by_id, force)
