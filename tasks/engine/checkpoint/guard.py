"""Guards that make a silently broken trimmed model impossible: two on the way out, one on the way in.

1. `check_vocab_dims` (before any byte is written): every tensor of the base with a
   dimension equal to the tokenizer's length or to `config.vocab_size` must be sliced by a
   rule of the architecture table, or be named in its `not_vocab` list with a reason.
   A tensor left at the old size would make the folder fail to load (or, worse, load with
   a head that scores the wrong tokens).
2. `check_folder_loads` (before the output folder is renamed into place): every checkpoint
   tensor's shape is compared with the parameter the config implies, as the architecture class
   instantiated on the meta device (no memory, no weights) gives it (`shape_template`: asked
   once per base config and library version, then predicted for each variant's vocab size).
3. `check_tensor_names` (before a base is trimmed): tensor names that do not belong to the
   architecture (a shard header edited or mixed up) raise an error naming the shard and the
   tensor, checked against the same meta-device instance (no weights loaded).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from tasks.engine.checkpoint.architectures import HOW_TO_EXTEND, ArchitectureRules, below_threshold
from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint
from tasks.engine.checkpoint.shape_template import expected_shapes
from tasks.engine.errors import ModelFolderError
from tasks.engine.runtime.hf import model_class


def check_vocab_dims(
    shapes: Mapping[str, tuple[int, ...]],
    sliced: Iterable[str],
    vocab_sizes: Iterable[int],
    rules: ArchitectureRules,
    source: str,
) -> None:
    """Refuse an unsliced tensor with a vocab-sized dimension, naming it and how to describe it."""
    sizes = {int(v) for v in vocab_sizes if v and int(v) > 1}
    done = set(sliced)
    bad = []
    for name, shape in shapes.items():
        if name in done or not sizes.intersection(shape):
            continue
        if rules.not_vocab_reason(name) is None:
            bad.append(f"{name!r} {list(shape)}")
    if bad:
        raise ModelFolderError(
            f"{source}: tensor(s) {', '.join(bad)} have a dimension equal to the vocabulary size "
            f"({sorted(sizes)}) but no vocab-tensor rule slices them; the trimmed folder would not load "
            f"(or would score the wrong tokens). If the tensor indexes the vocabulary, or if that dimension "
            f"is not the vocabulary, {HOW_TO_EXTEND}"
        )


def id_table_sizes(config: Mapping, vocab_size_keys: Iterable[str], prefix: str = "") -> dict[str, int]:
    """Config entries that size a table by token id apart from the vocabulary itself
    (`vocab_size_per_layer_input`): `path -> size`. Not `type_vocab_size` and the like: those
    tables are indexed by other ids (segments, modalities), which trimming leaves alone."""
    found: dict[str, int] = {}
    keys = set(vocab_size_keys)
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(id_table_sizes(value, keys, path + "."))
        elif isinstance(value, int) and not isinstance(value, bool) and value > 1 and key not in keys \
                and key.startswith("vocab_size_"):
            found[path] = value
    return found


def check_id_tables(config: Mapping, shapes: Mapping[str, tuple[int, ...]], sliced: Iterable[str],
                    rules: ArchitectureRules, source: str) -> None:
    """Refuse a model that indexes a table of its own size by token id unless the architecture
    data describes that threshold (`id_thresholds`: Gemma 3n's per-layer inputs, top-level key).
    Trimming renumbers ids, so undescribed ones would cross that line and reach other rows:
    outputs would change while every embedding row is right, which the structural proof cannot see."""
    vocab = int(config.get("vocab_size") or 0)
    described = {spec.config_key for spec, _ in rules.thresholds_in(config)}
    tables = {k: v for k, v in id_table_sizes(config, rules.vocab_size_keys).items() if v != vocab and k not in described}
    done = set(sliced)
    for key, size in tables.items():
        hit = [f"{name!r} {list(shape)}" for name, shape in shapes.items()
               if name not in done and shape and shape[0] == size and rules.not_vocab_reason(name) is None]
        if hit:
            raise ModelFolderError(
                f"{source}: config {key} = {size} sizes {', '.join(hit[:3])}, a table indexed by token id "
                f"apart from the vocabulary ({vocab}): the model treats ids by value, and trimming renumbers them, "
                "so outputs would change even with every embedding row right. trimworks does not trim this "
                "architecture yet (docs/architectures.md: an `id_thresholds` entry describes such a table when ids "
                f"below the key read their own row). If that dimension is not indexed by token id, {HOW_TO_EXTEND}")


def check_id_thresholds(config: Mapping, shapes: Mapping[str, tuple[int, ...]], kept_ids: np.ndarray,
                        rules: ArchitectureRules, source: str) -> dict[str, np.ndarray]:
    """The rows each described id-threshold table keeps (`name -> old ids`), after checking it
    has P rows and that the fallback row ids >= P read is kept (as new id 0); else an error."""
    out: dict[str, np.ndarray] = {}
    kept = np.asarray(kept_ids, dtype=np.int64)
    for spec, size in rules.thresholds_in(config):
        names = [n for n in shapes if spec.governs(n)]
        if not names:
            raise ModelFolderError(f"{source}: config {spec.config_key} = {size} but no tensor matches "
                                   f"{list(spec.tensors)} ({spec.role}); the architecture data does not fit this model")
        rows = below_threshold(kept, size)
        r = spec.fallback_id
        if r is not None and rows.size < kept.size and not (kept.size > r and int(kept[r]) == r):
            raise ModelFolderError(
                f"{source}: ids >= {spec.config_key} ({size}) read row {r} ({spec.role}), so token ids 0..{r} must be "
                f"kept (they keep their ids); keep them (keep_texts, or their tokens in the counts) and rerun")
        for name in names:
            if not shapes[name] or shapes[name][0] != size:
                raise ModelFolderError(f"{source}: {name!r} {list(shapes[name])} should have {spec.config_key} = {size} "
                                       f"rows ({spec.role}); the architecture data does not fit this model")
            out[name] = rows
    return out


def check_folder_loads(folder: Path) -> int:
    """Raise unless every checkpoint tensor fits the model its config describes. Returns tensors checked."""
    folder = Path(folder)
    expected, prefix = expected_shapes(folder)
    ckpt = LazyCheckpoint(folder)
    mismatched, checked = [], 0
    for name, info in ckpt.tensors.items():
        key = name
        if key not in expected and prefix:
            if f"{prefix}.{name}" in expected:
                key = f"{prefix}.{name}"
            elif name.startswith(prefix + ".") and name[len(prefix) + 1:] in expected:
                key = name[len(prefix) + 1:]
        if key not in expected:
            continue  # a key the class renames or ignores on load: not a shape question
        checked += 1
        if tuple(expected[key]) != tuple(info.shape):
            mismatched.append(f"{name!r}: checkpoint {list(info.shape)}, config implies {list(expected[key])}")
    if mismatched:
        raise ModelFolderError(
            f"{folder}: the trimmed folder would not load: {'; '.join(mismatched[:5])}"
            f"{' …' if len(mismatched) > 5 else ''}. A vocab-sized tensor was not sliced consistently; {HOW_TO_EXTEND}"
        )
    if not checked:
        raise ModelFolderError(f"{folder}: no checkpoint tensor matches a parameter of {model_class(json.loads((folder / 'config.json').read_text())).__name__}; the folder would not load")
    config = json.loads((folder / "config.json").read_text())
    tok = folder / "tokenizer.json"
    if tok.exists():
        from tokenizers import Tokenizer

        n = Tokenizer.from_file(str(tok)).get_vocab_size(with_added_tokens=True)
        if n > int(config["vocab_size"]):
            raise ModelFolderError(f"{folder}: tokenizer has {n} tokens but config vocab_size is {config['vocab_size']}")
    return checked


def _expected_names(folder: Path) -> tuple[dict[str, tuple[int, ...]], str] | None:
    """Parameter and persistent buffer names of the folder's architecture, and its
    base_model_prefix; None when the class cannot be built here (an unknown architecture:
    surgery's own rules still apply)."""
    try:
        shapes, prefix = expected_shapes(folder)
    except ModelFolderError:
        return None
    return shapes, prefix or ""


@functools.lru_cache(maxsize=32)
def _check_names_cached(folder: str, stamp: tuple) -> None:
    import difflib

    path = Path(folder)
    expected = _expected_names(path)
    if expected is None:
        return
    shapes, prefix = expected
    ckpt = LazyCheckpoint(path)

    def strip(n: str) -> str:
        return n[len(prefix) + 1:] if prefix and n.startswith(prefix + ".") else n

    want = {strip(n): (n, shape) for n, shape in shapes.items()}
    have = {strip(n): info for n, info in ckpt.tensors.items()}
    missing = {n: want[n] for n in want if n not in have}
    # A renamed tensor leaves an unknown name with the shape of a missing one. Unknown names
    # alone are legacy buffers (e.g. attn.bias); missing ones alone are tied weights.
    for name, info in have.items():
        if name in want:
            continue
        same_shape = [m for m, (_, shape) in missing.items() if shape == tuple(info.shape)]
        if not same_shape:
            continue
        closest = (difflib.get_close_matches(name, same_shape, n=1, cutoff=0) or same_shape)[0]
        raise ModelFolderError(
            f"{info.file}: tensor {info.name!r} in the shard header is not a weight of {ckpt_arch(path)} "
            f"(and {missing[closest][0]!r}, of the same shape {tuple(info.shape)}, is missing): the header was altered "
            "or belongs to another model. Restore the shard (re-download or re-convert) and rerun"
        )


def ckpt_arch(folder: Path) -> str:
    try:
        cfg = json.loads((folder / "config.json").read_text())
        return ",".join(cfg.get("architectures") or [cfg.get("model_type", "this model")])
    except (OSError, ValueError):
        return "this model"


def check_tensor_names(folder: Path) -> None:
    """Every tensor name in the shards belongs to the model's architecture (cached per folder
    state: shard names, sizes and mtimes)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        return  # reported by the folder checks
    stamp = tuple(sorted((p.name, os.stat(p).st_size, os.stat(p).st_mtime_ns)
                         for p in folder.glob("*.safetensors"))) + ((folder / "config.json").stat().st_mtime_ns,)
    _check_names_cached(str(folder.resolve()), stamp)
