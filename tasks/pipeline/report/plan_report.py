"""`trimworks plan`: what a run would do, from what is on disk, without Prefect or builds.

Per variant: up to date / stale (naming the fingerprint fields that changed) / missing /
failed last time (with the error) / base unavailable; plus the counts and held-out texts a
run would make and the bases it would download or convert first. Nothing is fetched,
converted or written.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tasks.engine.counting.tokens import read_counts
from tasks.pipeline.corpus.chunk_cache import cached
from tasks.pipeline.corpus.counts_cache import counts_path, heldout_path, read_heldout
from tasks.pipeline.manifest import LoadedManifest, Variant, corpus_key, fingerprint_fields, fingerprint_parts
from tasks.pipeline.production.checks import proof_only_reason
from tasks.pipeline.production.plan import BaseState, Plan, plan
from tasks.pipeline.publish.targets import (RECORD_NAME, LocalRegistry, Publisher, files_damage, manifest_owner, ownership_conflict,
                                            publisher_for)
from tasks.pipeline.production.base_models import DIGEST_CACHE, base_folder
from tasks.pipeline.corpus.identity import corpus_content_key
from tasks.pipeline.report.disk_usage import DiskUsage, human_bytes, disk_usage

UP_TO_DATE, STALE, MISSING, FAILED, BASE_UNAVAILABLE = "up to date", "stale", "missing", "failed last time", "base unavailable"
CONFLICT = "conflict"  # the target holds another manifest's variant or a folder trimworks did not write
ORDER = (CONFLICT, FAILED, STALE, MISSING, BASE_UNAVAILABLE, UP_TO_DATE)


@dataclass(frozen=True)
class VariantStatus:
    variant: Variant
    status: str
    changed: tuple[str, ...] = ()  # stale: the fingerprint fields that differ from the published ones
    detail: str | None = None  # failed last time / base unavailable: the error


@dataclass
class PlanReport:
    manifest: str
    statuses: list[VariantStatus]
    plan: Plan
    to_count: list[tuple[str, str]] = field(default_factory=list)  # (base ids sharing the tokenizer, language)
    heldout_to_make: list[str] = field(default_factory=list)
    bases_to_materialize: list[str] = field(default_factory=list)
    registry: DiskUsage | None = None  # the local registry now: logical and on disk (shared bodies once)
    adds: RunAdds | None = None  # at most what a run would add to the disk
    proof_only: dict[str, str] = field(default_factory=dict)  # base id -> why no variant of it compares outputs
    unfit: dict[str, list[str]] = field(default_factory=dict)  # published, exact, not fit for its own real text

    def tally(self) -> Counter:
        return Counter(s.status for s in self.statuses)

    def as_json(self) -> dict:
        return {
            "manifest": self.manifest,
            "tally": dict(self.tally()),
            "would_build": [v.id for v in self.plan.to_build],
            "would_count": [{"bases": b, "language": l} for b, l in self.to_count],
            "would_make_heldout": self.heldout_to_make,
            "would_materialize": self.bases_to_materialize,
            "registry": self.registry.__dict__ if self.registry else None,
            "would_add": self.adds.__dict__ if self.adds else None,
            "proof_only": self.proof_only,
            "unfit": self.unfit,
            "variants": [{"id": s.variant.id, "status": s.status, "changed": list(s.changed), "detail": s.detail}
                         for s in self.statuses],
        }

    def render(self, show_all: bool = False) -> str:
        tally = self.tally()
        lines = [f"{self.manifest}: {len(self.statuses)} variants: "
                 + ", ".join(f"{tally[k]} {k}" for k in ORDER if tally[k])]
        if self.bases_to_materialize:
            lines.append(f"would first download/convert base(s): {', '.join(self.bases_to_materialize)}")
        if self.to_count:
            lines.append("would count: " + ", ".join(f"{lang} for {bases}" for bases, lang in self.to_count))
        if self.heldout_to_make:
            lines.append(f"would extract held-out text: {', '.join(self.heldout_to_make)}")
        groups = {(v.base, v.languages) for v in self.plan.to_build}
        lines.append(f"would build {len(self.plan.to_build)} variant(s) in {len(groups)} build task(s)")
        for vid, failures in self.unfit.items():
            lines.append(f"exact but not fit for its own real text: {vid}: {'; '.join(failures)}")
        for base_id, why in self.proof_only.items():
            lines.append(f"outputs never compared for base {base_id}: {why}")
        if self.registry is not None:
            lines.append(f"registry: {self.registry.line()}")
        if self.adds is not None and self.plan.to_build:
            lines.append(f"would add at most {human_bytes(self.adds.total_bytes)} on disk: {self.adds.line()}")
        width = max((len(s.variant.id) for s in self.statuses), default=0)
        for s in sorted(self.statuses, key=lambda s: ORDER.index(s.status)):
            if s.status == UP_TO_DATE and not show_all:
                continue
            why = f"changed: {', '.join(s.changed)}" if s.changed else (s.detail or "")
            lines.append(f"  {s.status:<17} {s.variant.id:<{width}}  {why}".rstrip())
        return "\n".join(lines)


@dataclass(frozen=True)
class RunAdds:
    """An upper bound of the bytes a run writes into the registry (and the body store)."""

    new_bodies: int  # bases whose shared body is not in the store yet
    body_bytes: int
    variants: int
    per_variant_bytes: int  # at most: the base's vocabulary-sized tensors whole (shared) or the whole base (single)
    layout: str

    @property
    def total_bytes(self) -> int:
        return self.body_bytes + self.per_variant_bytes

    def line(self) -> str:
        own = "vocab shards" if self.layout == "shared" else "whole variants"
        body = f"{self.new_bodies} new shared bod{'y' if self.new_bodies == 1 else 'ies'} ({human_bytes(self.body_bytes)}) + " \
            if self.layout == "shared" else ""
        return f"{body}{self.variants} {own} (≤ {human_bytes(self.per_variant_bytes)})"


def run_adds(m: LoadedManifest, p: Plan) -> RunAdds:
    """What the planned builds add at most, from the bases' headers alone (no selection is run)."""
    from tasks.engine.checkpoint.architectures import load_rules
    from tasks.engine.checkpoint.body import body_key, body_tensors
    from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint
    from tasks.pipeline.production.bodies import body_store

    layout = m.spec.output.layout
    rules = load_rules([m.spec.architectures] if m.spec.architectures else [])
    store = body_store(m.work_dir, publisher_for(m.spec.publish, m.output_dir))
    new_bodies = body_bytes = per_variant = 0
    for base_id in dict.fromkeys(v.base for v in p.to_build):
        base = p.bases[base_id]
        if base.folder is None:
            continue
        n = sum(v.base == base_id for v in p.to_build)
        total = sum(t.nbytes for t in LazyCheckpoint(base.folder).tensors.values())
        body = body_tensors(base.folder, rules)
        in_body = sum(t.nbytes for t in body)
        if layout == "shared":
            if not (store / body_key(base.identity or "", body) / "body.json").exists():
                new_bodies, body_bytes = new_bodies + 1, body_bytes + in_body
            per_variant += n * (total - in_body)
        else:
            per_variant += n * total
    return RunAdds(new_bodies, body_bytes, len(p.to_build), per_variant, layout)


def local_bases(m: LoadedManifest) -> list[BaseState]:
    """Each base as found on disk: ready, pending (a run would fetch/convert it) or broken."""
    out = []
    for spec in m.spec.base_models:
        try:
            folder = base_folder(m, spec)
            ready = folder is not None and (folder / "config.json").exists()
            out.append(BaseState.ready(spec.id, folder, m.work_dir / DIGEST_CACHE) if ready else BaseState.pending(spec.id))
        except Exception as exc:  # noqa: BLE001 - the run would fail this base's variants the same way
            out.append(BaseState.broken(spec.id, f"base model {spec.id}: {exc}"))
    return out


def corpus_identities(m: LoadedManifest) -> dict[str, str]:
    """Each language's corpus content identity, as a run computes it (digests cached by
    path, size, mtime and inode: unchanged files are not read again). A language whose
    corpus cannot be read is left out, as a run leaves it out."""
    out = {}
    for lang in m.spec.languages:
        try:
            out[lang] = corpus_content_key(m, lang)
        except Exception:  # noqa: BLE001 - the run reports it, located, when it counts
            continue
    return out


def last_failures(m: LoadedManifest) -> dict[str, str]:
    """Variant id -> error of the failed rows in the last run's catalog (if any)."""
    path = m.output_dir / "catalog.parquet"
    if not path.exists():
        return {}
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(path, columns=["variant_id", "status", "error"]).to_pydict()
    except Exception:  # noqa: BLE001 - an unreadable catalog only hides this column of the plan
        return {}
    return {v: e or "" for v, s, e in zip(t["variant_id"], t["status"], t["error"]) if s == "failed"}


class _Published:
    """The target's record of each variant, read once (fingerprint and its parts)."""

    def __init__(self, publisher: Publisher):
        self.publisher, self.records = publisher, {}
        self.damaged: dict[str, str] = {}  # variant id -> what is wrong with its published files
        self.root = str(publisher.root) if isinstance(publisher, LocalRegistry) else ""

    def record(self, v: Variant) -> dict:
        if v.id not in self.records:
            if isinstance(self.publisher, LocalRegistry):
                try:  # repo ids are validated safe names: no need to resolve the path to read it
                    with open(f"{self.root}/{v.repo_id}/{RECORD_NAME}", encoding="utf-8") as fh:
                        self.records[v.id] = json.load(fh)
                except (OSError, ValueError):
                    self.records[v.id] = {}
                damage = files_damage(Path(self.root) / v.repo_id, self.records[v.id])
                if damage:  # published, but not whole: due for a rebuild, as a run would find it
                    self.records[v.id], self.damaged[v.id] = {}, damage
            else:
                fp = self.publisher.published_fingerprint(v)
                self.records[v.id] = {"fingerprint": fp} if fp else {}
        return self.records[v.id]

    def fingerprint(self, v: Variant) -> str | None:
        return self.record(v).get("fingerprint")


def plan_report(m: LoadedManifest, manifest: str, publisher: Publisher | None = None) -> PlanReport:
    bases = local_bases(m)
    published = _Published(publisher or publisher_for(m.spec.publish, m.output_dir))
    content = corpus_identities(m)
    registry = publisher if isinstance(publisher, LocalRegistry) else LocalRegistry(m.output_dir)
    owner = manifest_owner(m.path, m.work_dir)
    conflict = (lambda v: ownership_conflict(registry.target(v), v.id, owner)) if m.spec.publish.target == "local" else None
    p = plan(m, bases, published.fingerprint, corpus_identity=content, conflict=conflict)
    failures = last_failures(m)
    keys = {lang: corpus_key(m, lang) for lang in m.spec.languages}
    common: dict[tuple[str, int], dict[str, str]] = {}  # the parts shared by a base x multiple

    def parts_now(v: Variant, identity: str | None) -> dict[str, str]:
        if (v.base, v.multiple) not in common:
            common[v.base, v.multiple] = fingerprint_parts(fingerprint_fields(m, m.base(v.base), (), v.multiple, identity))
        return {**common[v.base, v.multiple], **{f"corpora.{lang}": keys[lang] for lang in v.languages},
                **{f"corpus_content.{lang}": str(content.get(lang)) for lang in v.languages if content}}

    statuses = []
    for d in p.decisions:
        v, base = d.variant, p.bases[d.variant.base]
        if d.action == "fail":
            statuses.append(VariantStatus(v, CONFLICT if d.conflict else BASE_UNAVAILABLE, detail=d.reason))
        elif d.action == "skip":
            statuses.append(VariantStatus(v, UP_TO_DATE))
        elif v.id in failures:
            statuses.append(VariantStatus(v, FAILED, detail=failures[v.id]))
        elif d.published_fingerprint is None:
            damage = published.damaged.get(v.id)
            statuses.append(VariantStatus(v, MISSING, detail=f"published files damaged: {damage}" if damage else None))
        elif base.folder is None:
            statuses.append(VariantStatus(v, STALE, ("base_identity",), "base not materialized yet: cannot compare"))
        else:
            before = published.record(v).get("fingerprint_parts") or {}
            if not before:
                statuses.append(VariantStatus(v, STALE, detail="published before fingerprint fields were recorded"))
                continue
            now = parts_now(v, base.identity)
            changed = tuple(k for k in dict.fromkeys([*now, *before]) if now.get(k) != before.get(k))
            statuses.append(VariantStatus(v, STALE, changed))
    report = PlanReport(manifest, statuses, p)
    for st in statuses:
        if st.status == UP_TO_DATE and (rec := published.record(st.variant)).get("fit") is False:
            report.unfit[st.variant.id] = list(rec.get("fitness_failures") or [])
    report.bases_to_materialize = [b.id for b in bases if b.folder is None and b.error is None and b.id in
                                   {v.base for v in p.to_build}]
    sharing: dict[tuple[str | None, str], list[str]] = {}
    for base_id, lang in dict.fromkeys((v.base, lang) for v in p.to_build for lang in v.languages):
        base = p.bases[base_id]
        if base.folder is None or not cached(counts_path(m, base.tokenizer_json, lang), "counts", read_counts, repair=False):
            sharing.setdefault((base.tokenizer if base.folder else base.id, lang), []).append(base_id)
    report.to_count = [("+".join(ids), lang) for (_, lang), ids in sharing.items()]
    report.heldout_to_make = [lang for lang in p.heldout_languages()
                              if not cached(heldout_path(m, lang), "held-out text", read_heldout, repair=False)]
    for b in bases:
        if b.folder is not None and b.error is None:
            try:
                why = proof_only_reason(m.spec.verify, b.folder, m.spec.verify_sample_lines)
            except Exception:  # noqa: BLE001 - an unreadable base: the run reports it
                why = None
            if why:
                report.proof_only[b.id] = why
    if m.spec.publish.target == "local":
        report.registry = disk_usage(m.output_dir, skip_hidden=True)
    try:
        report.adds = run_adds(m, p)
    except Exception:  # noqa: BLE001 - an unreadable base is reported by the run; the plan still lists the rest
        report.adds = None
    return report
