"""GGUF -> safetensors, once: the engine trims safetensors folders only.

transformers dequantizes a GGUF checkpoint to fp32 on load but then refuses
`save_pretrained` ("quantized with gguf and is not serializable"); the weights are plain
fp32 tensors by then, so clearing the quantizer flag saves them faithfully.
"""

from __future__ import annotations

from pathlib import Path

from tasks.engine.atomic import atomic_folder
from tasks.engine.errors import ModelFolderError


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Write a safetensors model folder for `gguf_file` into `out_dir` (reused if complete)."""
    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    if not gguf_file.is_file():
        raise ModelFolderError(f"{gguf_file}: GGUF file not found")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_folder(out_dir) as tmp:
        tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        tok.save_pretrained(str(tmp))
        model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
    return out_dir
