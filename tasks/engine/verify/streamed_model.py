"""A model whose weights stay in the checkpoint until a call needs them.

The output comparison runs a base and its variant on a few lines in float64. Loaded whole,
a model costs its checkpoint's size even in its own dtype (XLM-R-base: 1.1 GB of float32;
transformers memory-maps a bf16 checkpoint, and the mapped pages count as the process's
memory once read). Here the model is built with its weights on the meta device; each layer
reads its weights from the checkpoint (`pread`, no mapping) in the compute dtype for the call
that uses them and gives them back after, an embedding reads only the rows of the ids it
looks up, and a vocabulary-sized head is read a block of rows at a time. A process holds one
layer, one block of the head and one line's activations, whatever the model's size.

Which checkpoint tensor fills which weight follows `from_pretrained`'s plain rules (same
name, or with the base model's prefix added or removed; tied weights read their one stored copy).
A model those rules do not cover (renamed or fused checkpoint keys, a tied pair stored
twice, a weight missing) raises `StreamingUnsupported`, and the caller loads it whole."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tasks.engine.errors import ModelFolderError
from tasks.engine.runtime.hf import HF_LOCK
from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint, TensorInfo, row_runs

TORCH_DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}
# A Linear above this (at 8 bytes an item) is read and multiplied in blocks of rows this size.
# 8 MiB, not 32: with 32 the default manifest's run peaked 0.2 GB higher (glibc keeps freed heap).
HEAD_BLOCK_BYTES = 8 << 20


class StreamingUnsupported(Exception):
    """The model's weights cannot be matched one to one to checkpoint tensors by plain names."""


class CheckpointReader:
    """Tensors (or some of their rows) read from a safetensors checkpoint with `pread`: the
    bytes land in memory the tensor owns and is freed with, never in a mapping of the file."""

    def __init__(self, folder: Path) -> None:
        self.checkpoint = LazyCheckpoint(folder)
        self._fds: dict[Path, int] = {}

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _read(self, info: TensorInfo, offset: int, out: memoryview) -> None:
        fd = self._fds.get(info.file)
        if fd is None:
            fd = self._fds[info.file] = os.open(info.file, os.O_RDONLY)
        done = 0
        while done < len(out):
            n = os.preadv(fd, [out[done:]], info.start + offset + done)
            if n <= 0:
                raise ModelFolderError(f"{info.file}: unexpected end of file in tensor {info.name!r}")
            done += n

    def _as_tensor(self, info: TensorInfo, buf: bytearray, shape: tuple[int, ...]):
        import torch

        if not buf:
            return torch.empty(shape, dtype=getattr(torch, TORCH_DTYPE_NAMES[info.dtype]))
        return torch.frombuffer(buf, dtype=getattr(torch, TORCH_DTYPE_NAMES[info.dtype])).reshape(shape)

    def tensor(self, name: str):
        info = self.checkpoint.tensors[name]
        buf = bytearray(info.nbytes)
        self._read(info, 0, memoryview(buf))
        return self._as_tensor(info, buf, info.shape)

    def row_block(self, name: str, first: int, stop: int):
        """Rows first..stop-1 along axis 0."""
        info = self.checkpoint.tensors[name]
        row_bytes = info.nbytes // info.shape[0]
        buf = bytearray((stop - first) * row_bytes)
        self._read(info, first * row_bytes, memoryview(buf))
        return self._as_tensor(info, buf, (stop - first, *info.shape[1:]))

    def rows(self, name: str, ids: np.ndarray):
        """The rows at sorted unique `ids`, one read per run of consecutive ids."""
        info = self.checkpoint.tensors[name]
        row_bytes = info.nbytes // info.shape[0]
        buf = bytearray(ids.size * row_bytes)
        view, at = memoryview(buf), 0
        for first, length in row_runs(ids).tolist():
            self._read(info, first * row_bytes, view[at: at + length * row_bytes])
            at += length * row_bytes
        return self._as_tensor(info, buf, (ids.size, *info.shape[1:]))


@contextlib.contextmanager
def streamed_model(model_dir: Path, cls: type, dtype) -> Iterator:
    """`cls` built from `model_dir`'s config, in eval mode, computing in `dtype`, its weights read
    from the checkpoint per call (see the module's docstring). Raises StreamingUnsupported."""
    from accelerate import init_empty_weights

    if getattr(cls, "config_class", None) is None:
        raise StreamingUnsupported(f"{cls.__name__} is not a model class (config.json names no known architecture)")
    reader = CheckpointReader(Path(model_dir))
    try:
        # init_empty_weights patches torch.nn.Module process-wide while it builds: every other
        # construction of a transformers model holds the same lock (tasks/engine/runtime/hf.py).
        with HF_LOCK:
            config = cls.config_class.from_pretrained(str(model_dir), local_files_only=True)
            with init_empty_weights(include_buffers=False):
                model = cls._from_config(config, dtype=dtype)
            model.tie_weights()
        model.eval()
        keys = checkpoint_keys(model, reader.checkpoint.tensors)
        _load_persistent_buffers(model, keys, reader, dtype)
        _stream_weights(model, keys, reader, dtype)
        yield model
    finally:
        reader.close()


def checkpoint_keys(model, stored: dict[str, TensorInfo]) -> dict[str, str]:
    """Checkpoint tensor for each weight name (tied names included) and each stored buffer;
    StreamingUnsupported where from_pretrained would rename, convert or initialise instead."""
    prefix = f"{model.base_model_prefix}." if getattr(model, "base_model_prefix", "") else ""

    def find(name: str) -> str | None:
        for key in (name, prefix + name, name.removeprefix(prefix) if prefix else name):
            if key in stored:
                return key
        return None

    names_of: dict[int, list[str]] = {}  # a parameter's names: several when tied
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, param in params.items():
        names_of.setdefault(id(param), []).append(name)
    keys: dict[str, str] = {}
    for names in names_of.values():
        # Stored under two tied names, from_pretrained unties them or not by comparing values.
        found = {k for k in map(find, names) if k is not None}
        if len(found) != 1:
            what = "is not in the checkpoint" if not found else f"is stored {len(found)} times ({', '.join(sorted(found))})"
            raise StreamingUnsupported(f"weight {' = '.join(names)} {what}")
        info = stored[found.pop()]
        shape = tuple(params[names[0]].shape)
        if shape != info.shape or info.dtype not in TORCH_DTYPE_NAMES:
            raise StreamingUnsupported(f"weight {names[0]} {shape} does not match {info.name} {info.shape} {info.dtype}")
        keys.update(dict.fromkeys(names, info.name))
    persistent = set(model.state_dict().keys())
    for name, buf in model.named_buffers():
        key = find(name) if name in persistent else None
        if key is not None:
            if tuple(buf.shape) != stored[key].shape:
                raise StreamingUnsupported(f"buffer {name} {tuple(buf.shape)} does not match {key} {stored[key].shape}")
            keys[name] = key
    return keys


def _owner(model, name: str):
    path, _, leaf = name.rpartition(".")
    return (model.get_submodule(path) if path else model), leaf


def _load_persistent_buffers(model, keys: dict[str, str], reader: CheckpointReader, dtype) -> None:
    """Stored buffers (BART's final_logits_bias) are read once: from_pretrained fills them too."""
    for name, buf in list(model.named_buffers()):
        if name in keys:
            owner, leaf = _owner(model, name)
            value = reader.tensor(keys[name])
            owner._buffers[leaf] = value.to(buf.dtype if not buf.is_floating_point() else dtype)


def _stream_weights(model, keys: dict[str, str], reader: CheckpointReader, dtype) -> None:
    """Hooks: each layer of the outermost ModuleLists reads all its weights for its call (its
    code may read a child's weight, as T5's feed-forward does), every other module its own;
    embeddings gather rows, vocabulary-sized Linear layers read blocks of rows."""
    import torch

    layers, inside = outermost_layers(model)
    qualified = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
    units: dict[int, str] = {}  # every module that reads weights for its call, by name
    for layer in layers:
        prefix = qualified[id(layer)]
        names = [f"{prefix}.{n}" for n, _ in layer.named_parameters(remove_duplicate=False)]
        _read_during_call(layer, model, names, keys, reader, dtype)
        units[id(layer)] = prefix
    for module in model.modules():
        own = list(module._parameters)
        if id(module) in inside or not own:
            continue
        prefix = qualified[id(module)]
        units[id(module)] = prefix or type(module).__name__
        names = [f"{prefix}.{n}" if prefix else n for n in own if module._parameters[n] is not None]
        if type(module) is torch.nn.Embedding and module.max_norm is None:
            _gather_rows(module, keys[names[0]], reader, dtype)
        elif type(module) is torch.nn.Linear and module.weight.numel() * 8 > HEAD_BLOCK_BYTES:
            _linear_from_blocks(module, keys[f"{prefix}.weight"],
                                keys[f"{prefix}.bias"] if module.bias is not None else None, reader, dtype)
        else:
            _read_during_call(module, model, names, keys, reader, dtype)
    _refuse_weights_read_outside_calls(model, units, {id(layer) for layer in layers})


def _refuse_weights_read_outside_calls(model, units: dict[int, str], layer_ids: set[int]) -> None:
    """Code that reads a module's weight without calling the module (MobileBERT's head reads
    `decoder.weight` and `dense.weight` itself) would compute with the placeholder, and torch
    gives uninitialised values for some ops on it rather than an error. Every weight-holding
    module must have been called by the end of the model's call; StreamingUnsupported otherwise
    (the comparison then loads the model whole)."""
    called: set[int] = set()
    weights: dict[int, set[int]] = {}  # a unit's weights (the placeholders: tied ones are one object)
    for module in model.modules():
        if id(module) in units:
            module.register_forward_pre_hook(lambda m, _args: called.add(id(m)))
            own = module.parameters(recurse=id(module) in layer_ids)  # a layer reads all of its weights
            weights[id(module)] = {id(p) for p in own}

    def check(_m, _args, _out) -> None:
        read = set().union(*(weights[i] for i in called))  # a tied weight read through the other module counts
        missed = [name for i, name in units.items() if i not in called and not weights[i] <= read]
        called.clear()
        if missed:
            raise StreamingUnsupported(f"the weights of {', '.join(missed[:3])} are read outside their module's call")

    model.register_forward_hook(check)


def outermost_layers(model) -> tuple[list, set[int]]:
    """The items of the outermost ModuleLists (a model's layers), and the ids of every module
    inside them: each layer is handled as one unit, as its code may read a child's weight."""
    import torch

    layers, inside = [], set()

    def add(items) -> None:
        for layer in items:
            if isinstance(layer, (torch.nn.ModuleList, torch.nn.ModuleDict)):  # never called itself (Funnel's blocks)
                inside.add(id(layer))
                add(layer.values() if isinstance(layer, torch.nn.ModuleDict) else layer)
                continue
            layers.append(layer)
            inside.update(id(m) for m in layer.modules())

    for module in model.modules():  # parents before children
        if isinstance(module, torch.nn.ModuleList) and id(module) not in inside:
            add(module)
    return layers, inside


def _read_during_call(module, model, names: list[str], keys: dict[str, str], reader: CheckpointReader, dtype) -> None:
    import torch

    slots = [_owner(model, n) + (keys[n],) for n in names]
    placeholders = [owner._parameters[leaf] for owner, leaf, _key in slots]  # the meta tensors, put back after the call

    def read(_m, _args):
        for owner, leaf, key in slots:
            owner._parameters[leaf] = torch.nn.Parameter(reader.tensor(key).to(dtype), requires_grad=False)

    def give_back(_m, _args, _out):
        for (owner, leaf, _key), placeholder in zip(slots, placeholders):
            owner._parameters[leaf] = placeholder

    module.register_forward_pre_hook(read)
    module.register_forward_hook(give_back)


def _gather_rows(module, key: str, reader: CheckpointReader, dtype) -> None:
    """The embedding's forward reads just the rows of the ids it is given (same values as F.embedding)."""
    import torch

    def forward(ids):
        flat = ids.reshape(-1).numpy()
        if flat.size and (flat.min() < 0 or flat.max() >= module.num_embeddings):
            raise IndexError(f"index out of range in self ({module.num_embeddings} embeddings)")
        unique, where = np.unique(flat, return_inverse=True)
        rows = reader.rows(key, unique.astype(np.int64)).to(dtype)
        return rows[torch.as_tensor(where.reshape(-1))].reshape(*ids.shape, module.embedding_dim)

    module.forward = forward


def _linear_from_blocks(module, weight_key: str, bias_key: str | None, reader: CheckpointReader, dtype) -> None:
    """A vocabulary-sized head read from the checkpoint a block of rows at a time: a 250 k x 768
    head would otherwise be read whole (1.5 GB in float64)."""
    bias = reader.tensor(bias_key).to(dtype) if bias_key is not None else None
    rows = max(1, HEAD_BLOCK_BYTES // (8 * module.weight.shape[1]))
    linear_in_row_blocks(module, lambda i, j: reader.row_block(weight_key, i, j), bias, rows, dtype)


def linear_in_row_blocks(module, weight_rows: Callable[[int, int], object], bias, rows: int, dtype) -> None:
    """Replace a Linear's forward: output columns computed `rows` weight rows at a time
    (`weight_rows(i, j)`, widened to `dtype`; `bias` already in `dtype` or None), written into
    one output buffer. Each output is the same dot product as with the whole matrix; only
    BLAS's blocking (~1e-13 in float64) can differ."""
    import torch

    n_rows, width = module.weight.shape

    def forward(x):
        flat = x.to(dtype).reshape(-1, width)
        out = torch.empty(flat.shape[0], n_rows, dtype=dtype)
        for i in range(0, n_rows, rows):
            block = weight_rows(i, min(i + rows, n_rows)).to(dtype)
            out[:, i: i + rows] = torch.nn.functional.linear(flat, block, None if bias is None else bias[i: i + rows])
        return out.reshape(*x.shape[:-1], n_rows)

    module.forward = forward
