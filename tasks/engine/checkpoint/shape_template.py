"""The parameter shapes a config implies, as a function of its vocabulary size, remembered on disk.

The load guard (`guard.check_folder_loads`) compares every tensor of a trimmed folder with the
parameter its config implies. Asking transformers means importing it (~7 s) and instantiating
the class on the meta device, for every trim, though the variants of one base differ only in
`vocab_size` (and token ids, which shape nothing). So the answer is kept as a *template*: each
dimension is `constant + slope × vocab_size`, found by instantiating the config at three vocab
sizes (V, V+1, V+8) and kept only when every dimension is exactly linear in them (a class that
pads its vocabulary, or one that fails at a probe size, is asked directly every time). The key
is the config without its vocab size and token ids, plus the transformers and torch versions:
a new library version or any other config change asks transformers again.

The cache lives in `$TRIMWORKS_CACHE_DIR` (default `$XDG_CACHE_HOME/trimworks` or
`~/.cache/trimworks`); a file that cannot be read or written is ignored, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.engine.errors import ModelFolderError
from tasks.engine.runtime.atomic import write_text_atomic
from tasks.engine.runtime.hf import HF_LOCK, model_class

CACHE_ENV = "TRIMWORKS_CACHE_DIR"
TEMPLATE_VERSION = 1
PROBES = (1, 8)  # vocab sizes V+1 and V+8 beside V: two independent checks that a dimension is linear in V
Shapes = dict[str, tuple[int, ...]]


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trimworks"


def vocab_size_paths(config: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Where `vocab_size` sits in the config (top level, `text_config`, …)."""
    found = []
    for key, value in config.items():
        if key == "vocab_size" and isinstance(value, int):
            found.append((*prefix, key))
        elif isinstance(value, Mapping):
            found += vocab_size_paths(value, (*prefix, key))
    return found


def _shapeless(config: Any) -> Any:
    """The config without what varies between the variants of a base and shapes no parameter."""
    if isinstance(config, Mapping):
        return {k: _shapeless(v) for k, v in sorted(config.items())
                if k != "vocab_size" and not k.endswith(("_token_id", "_token_ids"))}
    if isinstance(config, list):
        return [_shapeless(v) for v in config]
    return config


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def template_key(config: Mapping[str, Any]) -> str:
    blob = json.dumps({"config": _shapeless(config), "transformers": _version("transformers"),
                       "torch": _version("torch"), "template": TEMPLATE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _get(config: Mapping[str, Any], path: tuple[str, ...]) -> int:
    for key in path[:-1]:
        config = config[key]
    return int(config[path[-1]])


def _with_vocab(config: Mapping[str, Any], path: tuple[str, ...], size: int) -> dict:
    out = json.loads(json.dumps(config))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = size
    return out


def derive_template(config: Mapping[str, Any], base: tuple[Shapes, str]) -> dict | None:
    """{"vocab_path", "vocab_size", "prefix", "dims": {name: [[constant, slope], …]}} from the
    shapes at V (`base`), V+1 and V+8; None when a dimension is not linear in V or a probe size
    cannot be built (then the caller asks transformers every time)."""
    paths = vocab_size_paths(config)
    if len(paths) != 1:
        return None  # no vocab size, or several (a trim changes one): nothing to interpolate safely
    path = paths[0]
    vocab = _get(config, path)
    shapes, prefix = base
    try:
        probes = {step: config_shapes(_with_vocab(config, path, vocab + step))[0] for step in PROBES}
    except Exception:  # noqa: BLE001 - a class that refuses a probe size is simply not templated
        return None
    if any(set(p) != set(shapes) for p in probes.values()):
        return None
    dims: dict[str, list[list[int]]] = {}
    for name, shape in shapes.items():
        if any(len(probes[step][name]) != len(shape) for step in PROBES):
            return None
        row = []
        for axis, d in enumerate(shape):
            slope = probes[PROBES[0]][name][axis] - d
            if any(probes[step][name][axis] - d != slope * step for step in PROBES):
                return None  # padded or otherwise not linear in V: not predictable
            row.append([d - slope * vocab, slope])
        dims[name] = row
    return {"vocab_path": list(path), "vocab_size": vocab, "prefix": prefix, "dims": dims}


def apply_template(template: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[Shapes, str]:
    vocab = _get(config, tuple(template["vocab_path"]))
    shapes = {name: tuple(int(c + s * vocab) for c, s in row) for name, row in template["dims"].items()}
    return shapes, template["prefix"]


def expected_shapes(folder: Path) -> tuple[Shapes, str]:
    """(parameter and buffer shapes the folder's config implies, base_model_prefix): from the
    on-disk template when one fits the config, else from transformers (and then remembered)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    paths = vocab_size_paths(config)
    path = cache_root() / "expected-shapes" / f"{template_key(config)}.json"
    if len(paths) == 1:
        try:
            template = json.loads(path.read_text())
            if template.get("vocab_path") == list(paths[0]):
                return apply_template(template, config)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # absent or unreadable: derive it again
    base = meta_shapes(folder)
    template = derive_template(config, base)
    if template is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(template))
        except OSError:
            pass  # a read-only cache: every trim asks transformers, as before
    return base


def meta_shapes(folder: Path) -> tuple[Shapes, str]:
    """The folder's class instantiated on the meta device (no memory, no weights): its
    parameter and persistent buffer shapes, and its base_model_prefix."""
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
                model = cls.from_config(config) if cls is transformers.AutoModel else cls(config)
        except Exception as exc:  # noqa: BLE001
            raise ModelFolderError(f"{folder}: {cls.__name__} cannot be built from config.json ({exc})") from exc
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, getattr(model, "base_model_prefix", "")


def config_shapes(config: Mapping[str, Any]) -> tuple[Shapes, str]:
    """`meta_shapes` of a config dict (written to a temp folder, read as config.json is)."""
    with tempfile.TemporaryDirectory(prefix="trimworks-config-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        return meta_shapes(Path(tmp))
