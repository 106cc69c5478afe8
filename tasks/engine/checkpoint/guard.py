"""Two guards that make a silently broken trimmed model impossible.

1. `check_vocab_dims` (before any byte is written): every tensor of the base with a
   dimension equal to the tokenizer's length or to `config.vocab_size` must be sliced by a
   rule of the architecture table, or be named in its `not_vocab` list with a reason.
   A tensor left at the old size would make the folder fail to load (or, worse, load with
   a head that scores the wrong tokens).
2. `check_folder_loads` (before the output folder is renamed into place): the folder is
   instantiated with its architecture class on the meta device (no memory, no weights) and
   every checkpoint tensor's shape is compared with the parameter the config implies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from tasks.engine.checkpoint.architectures import HOW_TO_EXTEND, ArchitectureRules
from tasks.engine.errors import ModelFolderError
from tasks.engine.runtime.hf import HF_LOCK, model_class


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


def expected_shapes(folder: Path) -> tuple[dict[str, tuple[int, ...]], str]:
    """(parameter and buffer shapes the config implies, base_model_prefix), from a meta-device instance."""
    import torch

    folder = Path(folder)
    config_dict = json.loads((folder / "config.json").read_text())
    with HF_LOCK:  # resolution and construction import submodules lazily (tasks/engine/runtime/hf.py)
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - any failure means the folder does not load
            raise ModelFolderError(f"{folder}/config.json: transformers cannot read it ({exc})") from exc
        cls = model_class(config_dict)
        try:
            with torch.device("meta"):
                model = cls._from_config(config) if cls is transformers.AutoModel else cls(config)
        except Exception as exc:  # noqa: BLE001
            raise ModelFolderError(f"{folder}: {cls.__name__} cannot be built from config.json ({exc})") from exc
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, getattr(model, "base_model_prefix", "")


def check_folder_loads(folder: Path) -> int:
    """Raise unless every checkpoint tensor fits the model its config describes. Returns tensors checked."""
    from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint

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
