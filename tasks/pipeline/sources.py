"""Making a manifest's base model a local safetensors folder, and naming its identity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from filelock import FileLock

from tasks.engine.errors import ModelFolderError
from tasks.engine.gguf import convert_gguf
from tasks.pipeline.manifest import BaseModelSpec, GGUFSource, HubSource, LoadedManifest, LocalSource
from tasks.engine.model_folder import TOKENIZER_JSON
from tasks.engine.safetensors_io import read_header

HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*/*.json"]


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def base_folder(m: LoadedManifest, base: BaseModelSpec) -> Path:
    """Where the base's local folder is, or will be once materialised (nothing is fetched)."""
    src = base.source
    if isinstance(src, LocalSource):
        return m.resolve(src.local)
    cache = m.work_dir / "bases"
    if isinstance(src, GGUFSource):
        gguf = m.resolve(src.gguf)
        if not gguf.is_file():
            raise ModelFolderError(f"base_models[{base.id}].source.gguf: {gguf} not found")
        return cache / f"{base.id}-gguf-{_file_sha(gguf)[:16]}-{src.dtype}"
    if isinstance(src, HubSource):
        return cache / f"{base.id}-hub-{src.revision[:16]}"
    raise ModelFolderError(f"base model {base.id}: unknown source {src!r}")  # pragma: no cover


def materialize_base(m: LoadedManifest, base: BaseModelSpec) -> Path:
    """Local folder as is; GGUF converted once into the work dir; hub repos downloaded once."""
    src = base.source
    out = base_folder(m, base)
    if isinstance(src, LocalSource):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, GGUFSource):
        with FileLock(str(out) + ".lock"):
            return convert_gguf(m.resolve(src.gguf), out, dtype=src.dtype)
    from huggingface_hub import snapshot_download

    with FileLock(str(out) + ".lock"):
        if not (out / "config.json").exists():
            snapshot_download(src.hub, revision=src.revision, local_dir=str(out), allow_patterns=HUB_PATTERNS)
    return out


def base_identity(folder: Path) -> str:
    """Cheap, content-based identity of a model folder: configs, tokenizer, tensor headers."""
    h = hashlib.sha256()
    for name in ("config.json", TOKENIZER_JSON, "generation_config.json"):
        p = folder / name
        if p.exists():
            h.update(name.encode() + p.read_bytes())
    for shard in sorted(folder.glob("*.safetensors")):
        infos, meta = read_header(shard)
        h.update(shard.name.encode())
        h.update(json.dumps([(t.name, t.dtype, t.shape, t.nbytes) for t in infos] + [meta], sort_keys=True).encode())
        h.update(str(shard.stat().st_size).encode())
    return h.hexdigest()
