"""One lock for every use of `transformers` that resolves or loads something.

`transformers` resolves its attributes lazily, importing the defining submodule on first
access. Two build threads resolving at once can see a half-imported submodule (Python hands
a partly initialised module to one side of an import cycle) and fail with "module
'transformers' has no attribute 'AutoConfig'" — a variant lost to a race, seen when two
variants of different bases checked their folders at the same moment. `from_pretrained`
also patches process-global init functions: two loads at once can skip weight tying, and
the streamed output comparison builds its models with `accelerate`'s `init_empty_weights`,
which moves every parameter created meanwhile, on any thread, to the meta device.
Re-entrant, because class resolution happens inside loads."""

from __future__ import annotations

import threading
from collections.abc import Mapping

HF_LOCK = threading.RLock()


def model_class(config: Mapping) -> type:
    """The transformers class named by config.architectures (AutoModel when none is known)."""
    with HF_LOCK:
        import transformers

        for arch in config.get("architectures") or []:
            cls = getattr(transformers, arch, None)
            if cls is not None:
                return cls
        return transformers.AutoModel
