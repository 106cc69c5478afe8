"""Streaming weight surgery: slice vocab-sized tensors, copy the rest, never load the model.

Each output shard mirrors an input shard (same name, same tensor order). Vocab-sized tensors
(found by the rule table in `architectures`) keep only the rows of the kept ids; everything
else is byte-copied. Config and generation config get the new size and remapped special ids.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.engine.architectures import SPECIAL_ID_KEYS, vocab_rule_for
from tasks.engine.atomic import write_text_atomic
from tasks.engine.errors import DroppedSpecialTokenError, ModelFolderError
from tasks.engine.failpoints import failpoint
from tasks.engine.stopping import check_stop
from tasks.engine.model_folder import ModelFolder
from tasks.engine.safetensors_io import (
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


def _take_axis(info: TensorInfo, rows: np.ndarray, axis: int, ckpt: LazyCheckpoint, out) -> None:
    out.write(np.ascontiguousarray(np.take(ckpt.load_numpy(info.name), rows, axis=axis)).tobytes())


def trim_weights(base: ModelFolder, out_dir: Path, kept_ids: np.ndarray) -> SurgeryStats:
    """Write the trimmed safetensors shards (and index) of `base` into `out_dir`."""
    ckpt = LazyCheckpoint(base.path)
    vocab_size = base.vocab_size
    if kept_ids.size and int(kept_ids.max()) >= vocab_size:
        raise ModelFolderError(
            f"{base.path}/config.json: vocab_size {vocab_size} is smaller than kept token id {int(kept_ids.max())}; "
            "tokenizer and model do not match"
        )
    warnings: list[str] = []
    sliced: list[str] = []
    params_before = params_after = bytes_before = bytes_after = emb_before = emb_after = 0
    weight_map: dict[str, str] = {}
    for shard in ckpt.shards:
        planned: list[PlannedTensor] = []
        for name in shard.tensor_names:
            info = ckpt.tensors[name]
            n_params = math.prod(info.shape)
            params_before += n_params
            bytes_before += info.nbytes
            rule = vocab_rule_for(name)
            if rule is not None and len(info.shape) > rule.axis and info.shape[rule.axis] == vocab_size:
                shape = list(info.shape)
                shape[rule.axis] = int(kept_ids.size)
                if rule.axis == 0:
                    produce = functools.partial(write_rows, info, kept_ids)
                else:
                    produce = functools.partial(_take_axis, info, kept_ids, rule.axis, ckpt)
                planned.append(PlannedTensor(name, info.dtype, tuple(shape), produce))
                sliced.append(name)
                emb_before += n_params
                emb_after += math.prod(shape)
            else:
                if rule is not None:
                    raise ModelFolderError(
                        f"{info.file}: tensor {name!r} is a {rule.role} but its shape {info.shape} does not match "
                        f"config vocab_size {vocab_size}"
                    )
                if vocab_size in info.shape and vocab_size > 1024:
                    warnings.append(f"tensor {name!r} {info.shape} has a vocab-sized axis but is not a known embedding/head; copied unchanged")
                planned.append(PlannedTensor(name, info.dtype, info.shape, functools.partial(copy_bytes, info)))
            params_after += math.prod(planned[-1].shape)
            weight_map[name] = shard.file.name
        bytes_after += write_safetensors(out_dir / shard.file.name, planned, shard.metadata)
        failpoint("surgery")
        check_stop()
    if not sliced:
        raise ModelFolderError(
            f"{base.path}: no embedding or output-head tensor with {vocab_size} rows was found; "
            "add a rule for this architecture to tasks/engine/architectures.py"
        )
    if ckpt.sharded:
        index = {"metadata": {"total_size": bytes_after}, "weight_map": weight_map}
        write_text_atomic(out_dir / INDEX_NAME, json.dumps(index, indent=2))
    warnings += _size_dependent_layer_warnings(base.path)
    for w in warnings:
        log.warning("%s: %s", base.path, w)
    largest = max(t.nbytes for t in ckpt.tensors.values())
    return SurgeryStats(params_before, params_after, bytes_before, bytes_after, emb_before, emb_after,
                        tuple(sliced), largest, tuple(warnings))


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
    new = dict(config)

    def one(key: str, value: int) -> int:
        if value not in table:
            raise DroppedSpecialTokenError(
                f"{source}: {key}={value} names a token that is not kept; add it to the selection's keep list"
            )
        return table[value]

    for key in SPECIAL_ID_KEYS:
        value = config.get(key)
        if value is None or (isinstance(value, int) and value < 0):
            continue
        new[key] = [one(key, v) for v in value] if isinstance(value, list) else one(key, int(value))
    if config.get("forced_decoder_ids"):
        new["forced_decoder_ids"] = [[pos, one("forced_decoder_ids", i)] for pos, i in config["forced_decoder_ids"]]
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        if isinstance(config.get(key), list):
            new[key] = [table[i] for i in config[key] if i in table]
    return new


def write_configs(base: ModelFolder, out_dir: Path, kept_ids: np.ndarray) -> None:
    table = {int(old): new for new, old in enumerate(kept_ids)}
    config = remap_special_ids(base.config, table, f"{base.path}/config.json")
    old_vocab = base.config["vocab_size"]
    config["vocab_size"] = int(kept_ids.size)
    if config.get("decoder_vocab_size") == old_vocab:
        config["decoder_vocab_size"] = int(kept_ids.size)
    write_text_atomic(out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    gen = base.path / "generation_config.json"
    if gen.exists():
        gen_cfg = remap_special_ids(json.loads(gen.read_text()), table, str(gen))
        write_text_atomic(out_dir / "generation_config.json", json.dumps(gen_cfg, indent=2, sort_keys=True) + "\n")


def copy_other_files(base_dir: Path, out_dir: Path, skip: set[str]) -> None:
    """Carry over everything that is not weights, configs or tokenizer files (e.g. 1_Pooling/)."""
    for item in sorted(Path(base_dir).iterdir()):
        if item.name in skip or item.suffix == ".safetensors" or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, out_dir / item.name)
        elif item.is_file():
            shutil.copy2(item, out_dir / item.name)
