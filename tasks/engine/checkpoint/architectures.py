"""Which tensors are vocab-sized is *data*, not code: `data/architectures.json`.

Each rule names a tensor (by a regex on its checkpoint key) and the axis that indexes the
vocabulary. Tied heads are simply absent from the checkpoint; untied heads, MLM decoder
biases and BART/Marian's `final_logits_bias` are listed like any embedding. `not_vocab`
entries name tensors whose dimension only happens to equal the vocabulary size (the guard
in `guard.py` otherwise refuses them). Users extend the packaged table without editing
code: a manifest's `architectures:` section or `trimworks trim|prove|verify --architectures FILE`, both
in the same schema as the packaged file (`ArchitectureData`); their rules are tried first.

`id_thresholds` describe models that treat a token id by value: a config key P below which an
id reads its own row of some tables (Gemma 3n's `vocab_size_per_layer_input` and
`embed_tokens_per_layer`), ids at or above it a fallback row. Kept ids are renumbered in sorted
order, so every kept id keeps its side of P when P becomes the count of kept ids below it and
those tables keep the rows of the kept ids below it; the fallback id must be kept (as new id 0).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.engine.errors import ModelFolderError

DATA_FILE = "architectures.json"
HOW_TO_EXTEND = (
    "describe it without editing code: add an `architectures: {vocab_tensors: [{pattern: REGEX, axis: 0, role: TEXT}]}` "
    "section to the manifest, or pass `trimworks trim --architectures FILE` with a JSON/YAML file of that schema "
    "(use `not_vocab: [{pattern: REGEX, reason: TEXT}]` for a tensor whose dimension only happens to equal the vocabulary size)"
)


class VocabTensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pattern: str = Field(description="regex searched in the checkpoint key")
    axis: int = Field(ge=0, description="axis that indexes the vocabulary")
    role: str = Field(default="user rule", description="what the tensor is (shown in errors)")

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        re.compile(v)
        return v


class NotVocabSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pattern: str = Field(description="regex searched in the checkpoint key")
    reason: str = Field(min_length=1, description="why the vocab-sized dimension is not the vocabulary")

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        re.compile(v)
        return v


class IdThresholdSpec(BaseModel):
    """A config key that splits token ids by value, and the tables it sizes (rows by token id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    config_key: str = Field(min_length=1, description="top-level config key holding the threshold P")
    tensors: tuple[str, ...] = Field(min_length=1, description="regexes of tables with P rows, row = token id")
    fallback_id: int | None = Field(default=None, ge=0, description="row that ids >= P read (None: none); "
                                    "ids 0..fallback_id are then always kept, so that row keeps its id")
    role: str = Field(default="user rule", description="what the threshold does (shown in errors)")

    @field_validator("tensors")
    @classmethod
    def _regexes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in v:
            re.compile(pattern)
        return v

    def governs(self, name: str) -> bool:
        return any(re.search(p, name) for p in self.tensors)


class ArchitectureData(BaseModel):
    """The schema of the packaged table and of every user extension (all lists additive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    vocab_tensors: tuple[VocabTensorSpec, ...] = ()
    not_vocab: tuple[NotVocabSpec, ...] = ()
    special_id_keys: tuple[str, ...] = ()
    vocab_size_keys: tuple[str, ...] = ()
    auto_classes: dict[str, str] = {}
    id_thresholds: tuple[IdThresholdSpec, ...] = ()


@dataclass(frozen=True)
class VocabTensorRule:
    pattern: str
    axis: int
    role: str

    def matches(self, name: str) -> bool:
        return re.search(self.pattern, name) is not None


@dataclass(frozen=True)
class ArchitectureRules:
    """The merged table the engine works from (packaged data + user extensions)."""

    vocab_tensors: tuple[VocabTensorRule, ...]
    not_vocab: tuple[NotVocabSpec, ...]
    special_id_keys: tuple[str, ...]
    vocab_size_keys: tuple[str, ...]
    auto_classes: tuple[tuple[str, str], ...]
    id_thresholds: tuple[IdThresholdSpec, ...] = ()

    def thresholds_in(self, config: Mapping) -> list[tuple[IdThresholdSpec, int]]:
        """The id thresholds this config sets (top-level keys only: a nested config, e.g. a
        multimodal model's `text_config`, is not described and stays refused), with their P."""
        seen: set[str] = set()
        found = []
        for spec in self.id_thresholds:
            value = config.get(spec.config_key)
            if spec.config_key not in seen and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                seen.add(spec.config_key)
                found.append((spec, int(value)))
        return found

    def threshold_required_ids(self, config: Mapping) -> list[int]:
        """Ids the selection must keep so the fallback row of each threshold keeps its id."""
        return [i for spec, _ in self.thresholds_in(config) if spec.fallback_id is not None
                for i in range(spec.fallback_id + 1)]

    def threshold_for(self, name: str, config: Mapping) -> tuple[IdThresholdSpec, int] | None:
        """The threshold (and its P) whose table `name` is, for this config; None if none."""
        for spec, size in self.thresholds_in(config):
            if spec.governs(name):
                return spec, size
        return None

    def vocab_rule_for(self, name: str) -> VocabTensorRule | None:
        for rule in self.vocab_tensors:
            if rule.matches(name):
                return rule
        return None

    def not_vocab_reason(self, name: str) -> str | None:
        for spec in self.not_vocab:
            if re.search(spec.pattern, name):
                return spec.reason
        return None

    def auto_class_name(self, config: dict) -> str:
        for arch in config.get("architectures") or []:
            for suffix, auto in self.auto_classes:
                if arch.endswith(suffix):
                    return auto
        return "AutoModel"

    def extended(self, *extra: ArchitectureData) -> ArchitectureRules:
        """User data first (so a user rule wins over a packaged one), then this table."""
        out = self
        for d in extra:
            out = ArchitectureRules(
                tuple(VocabTensorRule(s.pattern, s.axis, s.role) for s in d.vocab_tensors) + out.vocab_tensors,
                tuple(d.not_vocab) + out.not_vocab,
                _unique(out.special_id_keys + tuple(d.special_id_keys)),
                _unique(out.vocab_size_keys + tuple(d.vocab_size_keys)),
                tuple(d.auto_classes.items()) + out.auto_classes,
                tuple(d.id_thresholds) + out.id_thresholds,
            )
        return out


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _rules_from(data: ArchitectureData) -> ArchitectureRules:
    return ArchitectureRules((), (), (), (), (), ()).extended(data)


def below_threshold(kept_ids: np.ndarray, threshold: int) -> np.ndarray:
    """The kept ids below `threshold` (kept ids are sorted): their count is the trimmed P."""
    kept = np.asarray(kept_ids, dtype=np.int64)
    return kept[: int(np.searchsorted(kept, threshold))]


@lru_cache(maxsize=1)
def default_rules() -> ArchitectureRules:
    """The table shipped with the package (tasks/engine/checkpoint/data/architectures.json)."""
    text = resources.files("tasks.engine.checkpoint").joinpath("data", DATA_FILE).read_text(encoding="utf-8")
    return _rules_from(ArchitectureData.model_validate_json(text))


def read_architecture_file(path: Path) -> ArchitectureData:
    """A user's extension file (JSON or YAML, same schema as the packaged one)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelFolderError(f"{path}: cannot read architecture file ({exc})") from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text) or {}
        else:
            raw = json.loads(text)
        return ArchitectureData.model_validate(raw)
    except (ValueError, ValidationError) as exc:  # yaml.YAMLError subclasses Exception, handled below
        raise ModelFolderError(f"{path}: invalid architecture file: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a YAML syntax error
        raise ModelFolderError(f"{path}: invalid architecture file: {exc}") from exc


def load_rules(extra: Iterable[ArchitectureData | Path] = ()) -> ArchitectureRules:
    """Packaged rules extended by user data or files (later arguments win)."""
    datas = [e if isinstance(e, ArchitectureData) else read_architecture_file(Path(e)) for e in extra]
    return default_rules().extended(*datas)


# Module-level views of the packaged table (kept for callers that need no user rules).
VOCAB_TENSOR_RULES: tuple[VocabTensorRule, ...] = default_rules().vocab_tensors
SPECIAL_ID_KEYS: tuple[str, ...] = default_rules().special_id_keys
VOCAB_SIZE_KEYS: tuple[str, ...] = default_rules().vocab_size_keys


def vocab_rule_for(name: str) -> VocabTensorRule | None:
    return default_rules().vocab_rule_for(name)


def auto_class_name(config: dict) -> str:
    return default_rules().auto_class_name(config)
