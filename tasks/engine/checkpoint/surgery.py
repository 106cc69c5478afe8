"""Streaming weight surgery: slice vocab-sized tensors, copy the rest, never load the model.

Vocab-sized tensors (found by the rule table in `architectures`) keep only the rows of the
kept ids, the tables of an id threshold (Gemma 3n's per-layer inputs) those of the kept ids
below it, the config's threshold becoming their count; everything else is byte-copied, in the base's tensor order. Three file layouts:
`mirror` (each output shard mirrors an input shard: same names), `single` (one
model.safetensors) and `shared` (the body shard(s) every variant of a base shares, see
`body.py`, plus the variant's own vocab shard). Config and generation config get the new size
and remapped special ids.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from tasks.engine.checkpoint.architectures import (HOW_TO_EXTEND, SPECIAL_ID_KEYS, ArchitectureRules, below_threshold,
                                                   default_rules)
from tasks.engine.runtime.atomic import write_text_atomic
from tasks.engine.checkpoint.body import (BODY_METADATA, VOCAB_SHARD, Body, base_order, is_vocab_sized, place_body,
                                         write_body_files)
from tasks.engine.checkpoint.digests import copy_and_remember, too_big_to_cache
from tasks.engine.errors import DroppedSpecialTokenError, ModelFolderError
from tasks.engine.runtime.failpoints import failpoint
from tasks.engine.checkpoint.integrity import check_finite_rows
from tasks.engine.tokenizer.generation_ids import remap_config_ids
from tasks.engine.checkpoint.guard import check_id_tables, check_id_thresholds, check_vocab_dims
from tasks.engine.runtime.stopping import check_stop
from tasks.engine.checkpoint.model_folder import ModelFolder
from tasks.engine.selection.policy import old_to_new_map
from tasks.engine.checkpoint.safetensors_io import (
    INDEX_NAME,
    LazyCheckpoint,
    PlannedTensor,
    TensorInfo,
    copy_bytes,
    write_rows,
    write_safetensors,
)

log = logging.getLogger("trimworks.surgery")


@dataclass(frozen=True)
class SurgeryStats:
    params_before: int
    params_after: int
    bytes_before: int
    bytes_after: int
    embedding_params_before: int
    embedding_params_after: int
    sliced_tensors: tuple[str, ...]
    largest_tensor_bytes: int
    warnings: tuple[str, ...]
    layout: str = "mirror"
    body_digest: str | None = None  # shared layout: the proved body the variant's files link to
    body_placed: str | None = None  # link | copy | written (no body store: written into the folder)
    own_bytes: int = 0  # tensor bytes only this variant holds (all of them, except in the shared layout)


LAYOUTS = ("mirror", "single", "shared")
SINGLE_FILE = "model.safetensors"


def _take_axis(info: TensorInfo, rows: np.ndarray, axis: int, ckpt: LazyCheckpoint, out) -> None:
    kept = np.ascontiguousarray(np.moveaxis(np.take(ckpt.load_numpy(info.name), rows, axis=axis), axis, 0))
    row_bytes = kept.nbytes // kept.shape[0] if kept.shape[0] else 0
    check_finite_rows(kept.tobytes(), info.dtype, row_bytes, rows, info.name, info.file)  # per kept token id
    out.write(np.ascontiguousarray(np.moveaxis(kept, 0, axis)).tobytes())


def trim_weights(
    base: ModelFolder, out_dir: Path, kept_ids: np.ndarray, rules: ArchitectureRules | None = None,
    tokenizer_size: int | None = None, remember_base_digests: bool = False, layout: str = "mirror",
    body: Body | None = None, body_mode: str = "link",
) -> SurgeryStats:
    """Write the trimmed safetensors file(s) (and index) of `base` into `out_dir`.

    Before anything is written, the guard refuses any vocab-sized tensor no rule slices.
    `remember_base_digests` (when a proof follows): digest each copied base tensor from the
    read that copies it, so the proof reads only the output. `layout` (see the module
    docstring); with `shared`, `body` is the base's proved body from the store (placed by
    `body_mode`: link or copy), or None to write the body files into the folder itself.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: use one of {LAYOUTS}")
    rules = rules or default_rules()
    ckpt = LazyCheckpoint(base.path)
    vocab_size = base.vocab_size
    if kept_ids.size and int(kept_ids.max()) >= vocab_size:
        raise ModelFolderError(
            f"{base.path}/config.json: vocab_size {vocab_size} is smaller than kept token id {int(kept_ids.max())}; "
            "tokenizer and model do not match"
        )
    will_slice = [name for name, info in ckpt.tensors.items() if is_vocab_sized(info, rules, vocab_size)]
    shapes = {n: i.shape for n, i in ckpt.tensors.items()}
    source = f"{base.path} ({base.model_type})"
    # Tables of an id threshold (Gemma 3n's per-layer inputs) keep the rows of the kept ids below it.
    below = check_id_thresholds(base.config, shapes, kept_ids, rules, source) if will_slice else {}
    if will_slice:  # no rule matched at all: the clearer "no embedding" error below
        check_vocab_dims(shapes, will_slice + list(below), (vocab_size, tokenizer_size or 0), rules, source)
        check_id_tables(base.config, shapes, will_slice + list(below), rules, source)
    uncache = too_big_to_cache(sum(t.nbytes for t in ckpt.tensors.values()))
    sliced: list[str] = []
    params_before = params_after = bytes_before = emb_before = emb_after = 0
    planned: dict[str, PlannedTensor] = {}
    for info in base_order(ckpt):
        name = info.name
        n_params = math.prod(info.shape)
        params_before += n_params
        bytes_before += info.nbytes
        rule = rules.vocab_rule_for(name)
        if name in below:
            rows = below[name]
            planned[name] = PlannedTensor(name, info.dtype, (int(rows.size), *info.shape[1:]),
                                          functools.partial(write_rows, info, rows))
            sliced.append(name)
            emb_before += n_params
            emb_after += math.prod(planned[name].shape)
        elif is_vocab_sized(info, rules, vocab_size):
            shape = list(info.shape)
            shape[rule.axis] = int(kept_ids.size)
            if rule.axis == 0:
                produce = functools.partial(write_rows, info, kept_ids)
            else:
                produce = functools.partial(_take_axis, info, kept_ids, rule.axis, ckpt)
            planned[name] = PlannedTensor(name, info.dtype, tuple(shape), produce)
            sliced.append(name)
            emb_before += n_params
            emb_after += math.prod(shape)
        else:
            if rule is not None:
                raise ModelFolderError(
                    f"{info.file}: tensor {name!r} is a {rule.role} but its shape {info.shape} does not match "
                    f"config vocab_size {vocab_size}; if this tensor is not vocab-sized for this architecture, {HOW_TO_EXTEND}"
                )
            copy = functools.partial(copy_and_remember, uncache=uncache) if remember_base_digests else copy_bytes
            planned[name] = PlannedTensor(name, info.dtype, info.shape, functools.partial(copy, info))
        params_after += math.prod(planned[name].shape)
    if not sliced:
        raise ModelFolderError(
            f"{base.path}: no embedding or output-head tensor with {vocab_size} rows was found; "
            f"to trim architecture {base.config.get('architectures')} ({base.model_type}), {HOW_TO_EXTEND}"
        )
    body_digest = placed = None
    if layout == "shared":
        body_tensors = [ckpt.tensors[n] for n in planned if n not in set(sliced)]
        if body is not None:
            if set(body.weight_map) != {t.name for t in body_tensors}:
                raise ModelFolderError(f"{body.folder}: this shared body does not hold {base.path}'s non-vocabulary tensors; "
                                       "it belongs to another base or rule table (delete it and rerun)")
            placed, body_digest, weight_map = place_body(body, out_dir, body_mode), body.digest, dict(body.weight_map)
        else:
            placed, weight_map = "written", write_body_files(body_tensors, out_dir, remember_base_digests=remember_base_digests)
        own = [planned[n] for n in sliced]
        own_bytes = write_safetensors(out_dir / VOCAB_SHARD, own, BODY_METADATA)
        weight_map |= {n: VOCAB_SHARD for n in sliced}
        bytes_after = own_bytes + sum(t.nbytes for t in body_tensors)
        _write_index(out_dir, weight_map, bytes_after)
    elif layout == "single":
        metadata = ckpt.shards[0].metadata if ckpt.shards else {}
        bytes_after = own_bytes = write_safetensors(out_dir / SINGLE_FILE, list(planned.values()), metadata)
    else:
        bytes_after = 0
        weight_map = {}
        for shard in ckpt.shards:
            bytes_after += write_safetensors(out_dir / shard.file.name, [planned[n] for n in shard.tensor_names], shard.metadata)
            weight_map |= {n: shard.file.name for n in shard.tensor_names}
            failpoint("surgery")
            check_stop()
        own_bytes = bytes_after
        if ckpt.sharded:
            _write_index(out_dir, weight_map, bytes_after, sort=False)
    if layout != "mirror":  # mirror checks after each shard, above
        failpoint("surgery")
        check_stop()
    warnings = _size_dependent_layer_warnings(base.path)
    for w in warnings:
        log.warning("%s: %s", base.path, w)
    largest = max(t.nbytes for t in ckpt.tensors.values())
    return SurgeryStats(params_before, params_after, bytes_before, bytes_after, emb_before, emb_after,
                        tuple(sliced), largest, tuple(warnings), layout, body_digest, placed, own_bytes)


def _write_index(out_dir: Path, weight_map: dict[str, str], total_size: int, sort: bool = True) -> None:
    entries = dict(sorted(weight_map.items())) if sort else weight_map
    index = {"metadata": {"total_size": total_size}, "weight_map": entries}
    write_text_atomic(out_dir / INDEX_NAME, json.dumps(index, indent=2))


def _size_dependent_layer_warnings(folder: Path) -> list[str]:
    modules = folder / "modules.json"
    if not modules.exists():
        return []
    try:
        entries = json.loads(modules.read_text())
    except json.JSONDecodeError:
        return [f"{modules}: unreadable; could not check for layers after the embeddings"]
    dense = [e.get("path") for e in entries if "Dense" in str(e.get("type", ""))]
    if dense:
        return [f"sentence-transformers Dense module(s) {dense} follow the transformer; trimming is known to hurt such models"]
    return []


def remap_special_ids(config: dict[str, Any], table: dict[int, int], source: str) -> dict[str, Any]:
    """Remap every token-id field; a dropped special id is an error, not a silent change."""
    return remap_config_ids(config, table, source, SPECIAL_ID_KEYS)


def write_configs(
    base: ModelFolder, out_dir: Path, kept_ids: np.ndarray, rules: ArchitectureRules | None = None,
    token_of: Callable[[int], str | None] = lambda i: None, base_id_space: int | None = None,
) -> None:
    """config.json and generation_config.json with the new size(s) and every id field remapped."""
    rules = rules or default_rules()
    table = old_to_new_map(kept_ids)
    config = remap_config_ids(base.config, table, f"{base.path}/config.json", rules.special_id_keys, token_of, base_id_space)
    old_vocab = base.config["vocab_size"]
    for key in rules.vocab_size_keys:  # vocab_size, and e.g. Marian's decoder_vocab_size when it is the same
        if config.get(key) == old_vocab:
            config[key] = int(kept_ids.size)
    for spec, size in rules.thresholds_in(base.config):  # each kept id keeps its side of the threshold
        config[spec.config_key] = int(below_threshold(kept_ids, size).size)
    write_text_atomic(out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    gen = base.path / "generation_config.json"
    if gen.exists():
        gen_cfg = remap_config_ids(json.loads(gen.read_text()), table, str(gen), rules.special_id_keys, token_of, base_id_space)
        write_text_atomic(out_dir / "generation_config.json", json.dumps(gen_cfg, indent=2, sort_keys=True) + "\n")


# What a variant carries over from its base besides weights, configs and tokenizer files: an
# allow-list, so no pickle, Python module, custom code or untrimmed export ever rides along.
CARRIED_FILES = re.compile(
    r"^((LICEN[CS]E|NOTICE|COPYING|USE_POLICY)([._-].*)?|modules\.json|config_sentence_transformers\.json"
    r"|sentence_bert_config\.json|data_config\.json|chat_template\.(jinja|json)|special_tokens_map\.json"
    r"|preprocessor_config\.json|trimworks_source\.json)$",
    re.IGNORECASE)
MODULE_DIR = re.compile(r"^\d+_[A-Za-z]\w*$")  # sentence-transformers modules: 1_Pooling, 2_Dense, 3_Normalize
MODULE_FILES = {".json", ".txt", ".md", ".safetensors"}  # their configs (and a Dense layer's own weights)


def module_dirs(base_dir: Path) -> set[str]:
    """The sentence-transformers module folders: named in modules.json, or named as they are."""
    names = {p.name for p in Path(base_dir).iterdir() if p.is_dir() and MODULE_DIR.match(p.name)}
    try:
        names |= {str(m.get("path")) for m in json.loads((Path(base_dir) / "modules.json").read_text())
                  if isinstance(m, dict) and m.get("path") and "/" not in str(m.get("path")) and str(m.get("path")) != ".."}
    except (OSError, ValueError, TypeError):
        pass
    return names


def copy_other_files(base_dir: Path, out_dir: Path, skip: set[str]) -> list[str]:
    """Carry over the base's licence and notice files, chat template and sentence-transformers
    modules (their data files only); returns what was left behind (pickles, Python modules,
    custom code, other exports), which the trim logs."""
    base_dir = Path(base_dir)
    modules = module_dirs(base_dir)
    left: list[str] = []
    for item in sorted(base_dir.iterdir()):
        if item.name in skip or item.suffix == ".safetensors" or item.name.startswith("."):
            continue
        if item.is_dir() and item.name in modules:
            for f in sorted(item.rglob("*")):
                rel = f.relative_to(base_dir)
                if f.is_file() and f.suffix in MODULE_FILES and not any(p.startswith(".") for p in rel.parts):
                    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, out_dir / rel)
                elif f.is_file():
                    left.append(str(rel))
        elif item.is_file() and CARRIED_FILES.match(item.name):
            shutil.copy2(item, out_dir / item.name)
        else:
            left.append(item.name + ("/" if item.is_dir() else ""))
    if left:
        log.info("%s: not carried into the variant (not on the allow-list): %s", base_dir, ", ".join(left[:12])
                 + (" …" if len(left) > 12 else ""))
    return left