"""GGUF -> safetensors, once: the engine trims safetensors folders only.

transformers dequantizes a GGUF checkpoint on load but then refuses `save_pretrained`
("quantized with gguf and is not serializable"); the weights are plain tensors by then, so
clearing the quantizer flag saves them faithfully.

The weights are stored in a chosen dtype (default bfloat16, what published base models
use), not float32: a 4-bit GGUF dequantized to float32 would make every variant twice the
size of the published base, and size reductions would be measured against an inflated
copy. `trimworks_source.json` in the folder names the GGUF file and its quantization, so
cards can say where the weights came from.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.engine.checkpoint.content_id import sha256_file
from tasks.engine.runtime.atomic import atomic_folder
from tasks.engine.errors import ModelFolderError
from tasks.engine.runtime.hf import HF_LOCK

SOURCE_INFO_NAME = "trimworks_source.json"
GGUF_DTYPES = ("bfloat16", "float16", "float32")


@contextlib.contextmanager
def one_parse_per_file() -> Iterator[None]:
    """`gguf.GGUFReader` parses every field of the file (~10 s for SmolLM2's 49 k-token
    vocabulary), and transformers builds a new reader for the config, the tokenizer and the
    weights, and a tensor-name map per module (397 for SmolLM2, 11 s). Inside this block each
    file is parsed once and each map built once: converting SmolLM2 took 51-55 s, most of it
    parsing the same bytes four times, and takes 21 s. Process-wide, so callers hold HF_LOCK."""
    import gguf

    readers: dict[str, Any] = {}
    real_reader, real_map = gguf.GGUFReader, gguf.get_tensor_name_map

    def reader(path, mode: str = "r"):
        if mode != "r":
            return real_reader(path, mode)
        key = str(Path(path).resolve())
        if key not in readers:
            readers[key] = real_reader(path)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(real_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_map


def gguf_quantization(gguf_file: Path) -> dict[str, Any]:
    """The file's declared type (e.g. MOSTLY_Q4_1 -> Q4_1) and how many tensors use each type."""
    import gguf
    from gguf import LlamaFileType

    reader = gguf.GGUFReader(str(gguf_file))
    counts = collections.Counter(t.tensor_type.name for t in reader.tensors)
    field = reader.fields.get("general.file_type")
    file_type = None
    if field is not None:
        try:
            file_type = LlamaFileType(int(field.parts[field.data[0]][0])).name.removeprefix("MOSTLY_")
        except (ValueError, IndexError):
            file_type = None
    return {"quantization": file_type or counts.most_common(1)[0][0], "tensor_types": dict(sorted(counts.items()))}


def read_source_info(folder: Path) -> dict[str, Any] | None:
    """What a converted folder was made from (None for an ordinary model folder)."""
    p = Path(folder) / SOURCE_INFO_NAME
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def convert_gguf(gguf_file: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """Write a safetensors model folder for `gguf_file` into `out_dir`, weights in `dtype` (reused if complete)."""
    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    if dtype not in GGUF_DTYPES:
        raise ModelFolderError(f"{gguf_file}: cannot convert to dtype {dtype!r}; use one of {', '.join(GGUF_DTYPES)}")
    if not gguf_file.is_file():
        raise ModelFolderError(f"{gguf_file}: GGUF file not found")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # HF_LOCK: no model is built on another thread meanwhile (tasks/engine/runtime/hf.py), and no
    # other thread sees the shared GGUF readers.
    with HF_LOCK, one_parse_per_file(), atomic_folder(out_dir) as tmp:
        info = {"format": "gguf", "file": gguf_file.name, "sha256": sha256_file(gguf_file),
                **gguf_quantization(gguf_file), "dtype": dtype}
        tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        tok.save_pretrained(str(tmp))
        # Dequantize in float32 (the loader's fast path), then round once to the target dtype.
        model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
        model = model.to(getattr(torch, dtype))
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        (tmp / SOURCE_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return out_dir
