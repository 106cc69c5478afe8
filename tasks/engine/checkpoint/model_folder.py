"""Reading a base model folder safely: what it holds, and refusing what is unsafe."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.engine.errors import ModelFolderError

PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
TOKENIZER_JSON = "tokenizer.json"


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    config: dict[str, Any]
    tokenizer_json: Path

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "unknown"))

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])


def check_no_escaping_symlinks(folder: Path) -> None:
    """Refuse symlinks leading out of the folder, before any file of it is read."""
    root = Path(folder).resolve()
    for p in folder.rglob("*"):
        if p.is_symlink():
            target = p.resolve()
            if root not in target.parents and target != root:
                raise ModelFolderError(
                    f"{p}: symlink points outside the model folder (to {target}); refusing it. "
                    "Copy the file into the folder if you trust it."
                )


def inspect_model_folder(folder: Path) -> ModelFolder:
    """Validate a Hugging Face model folder before any work is done on it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: model folder does not exist")
    check_no_escaping_symlinks(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelFolderError(f"{folder}: no config.json; is this a Hugging Face model folder?")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{config_path}: invalid JSON ({exc})") from exc
    if "auto_map" in config:
        raise ModelFolderError(
            f"{config_path}: the model needs custom remote code (auto_map); trimworks never runs remote code"
        )
    refusal = unsupported_model_reason(config)
    if refusal:
        raise ModelFolderError(f"{config_path}: {refusal}")
    if not any(folder.glob("*.safetensors")):
        pickles = [p.name for pat in PICKLE_PATTERNS for p in folder.glob(pat)]
        if pickles:
            raise ModelFolderError(
                f"{folder}: only pickle checkpoints ({', '.join(sorted(pickles))}); trimworks refuses pickles. "
                f"Convert them safely first: `trimworks convert {folder} -o NEW_FOLDER` (uses torch.load(weights_only=True))"
            )
        raise ModelFolderError(f"{folder}: no *.safetensors weights found")
    tok = folder / TOKENIZER_JSON
    if not tok.is_file():
        raise ModelFolderError(
            f"{folder}: no tokenizer.json (fast tokenizer); save one with "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder)"
        )
    return ModelFolder(folder, config, tok)


def unsupported_model_reason(config: dict[str, Any]) -> str | None:
    """Why trimworks cannot trim a model of this config, with what to do instead; None when it can.

    trimworks trims one vocabulary, described by one tokenizer.json, whose size is `vocab_size`."""
    arch = ", ".join(config.get("architectures") or [str(config.get("model_type", "this model"))])
    if any(a.endswith("ForCTC") for a in config.get("architectures") or []):
        return (f"{arch} has a CTC head over a character-level vocabulary ({config.get('vocab_size')} symbols: letters, "
                "word delimiter, blank); there is nothing to trim, and its tokenizer (a CTC tokenizer with vocab.json) "
                "has no tokenizer.json form. Use the model as it is; trimworks trims subword vocabularies "
                "(docs/architectures.md lists the families)")
    if "vocab_size" in config:
        return None
    split = sorted(k for k, v in config.items() if k.endswith("_vocab_size") and isinstance(v, int))
    if split:
        sizes = ", ".join(f"{k} = {config[k]}" for k in split)
        return (f"{arch} has {len(split)} vocabularies ({sizes}): source and target, each with its own tokenizer "
                "and embedding; trimworks trims one vocabulary described by one tokenizer.json, so it cannot trim this "
                "model. Use it untrimmed, or a translation model with one shared vocabulary (Marian, mBART, T5), which "
                "trimworks trims")
    nested = sorted(k for k, v in config.items() if isinstance(v, dict) and "vocab_size" in v)
    if nested:
        return (f"no vocab_size at the top of config.json: the vocabulary is in {', '.join(nested)} (a composite model). "
                "trimworks trims a model whose config.json has vocab_size; trim its text model alone, saved as its own "
                "folder (config, safetensors, tokenizer.json)")
    return f"no vocab_size in config.json: trimworks trims a model whose config.json states its vocabulary size ({arch})"


def tokenizer_fingerprint(tokenizer_json: Path) -> str:
    """Identity of a tokenizer: sha256 of its tokenizer.json bytes."""
    return hashlib.sha256(Path(tokenizer_json).read_bytes()).hexdigest()


def load_tokenizer_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path}: unreadable tokenizer.json ({exc}); the file is truncated or corrupt") from exc
    if not isinstance(data, dict) or "model" not in data:
        raise ModelFolderError(f"{path}: tokenizer.json has no 'model' section")
    return data


def convert_pickle_checkpoint(folder: Path, out_dir: Path) -> Path:
    """Convert `pytorch_model*.bin` to safetensors with `torch.load(weights_only=True)` (no code runs)."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from tasks.engine.runtime.atomic import atomic_folder

    folder = Path(folder)
    bins = sorted(folder.glob("*.bin"))
    if not bins:
        raise ModelFolderError(f"{folder}: no *.bin checkpoint to convert")
    with atomic_folder(Path(out_dir)) as tmp:
        for item in folder.iterdir():
            if item.suffix != ".bin" and item.is_file():
                shutil.copy2(item, tmp / item.name)
        state: dict[str, torch.Tensor] = {}
        for b in bins:
            try:
                part = torch.load(b, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is the user's to see
                raise ModelFolderError(f"{b}: refused by torch.load(weights_only=True): {exc}") from exc
            state.update(part)
        # Tied tensors share storage; safetensors wants distinct buffers.
        seen: dict[int, str] = {}
        unique = {}
        for k, v in state.items():
            ptr = v.untyped_storage().data_ptr()
            if ptr in seen:
                continue
            seen[ptr] = k
            unique[k] = v.contiguous()
        save_file(unique, tmp / "model.safetensors", metadata={"format": "pt"})
    return Path(out_dir)


_check_no_escaping_symlinks = check_no_escaping_symlinks  # the old private name
