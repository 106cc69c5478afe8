"""Where a base's shared body lives for a run, and getting it (written and proved once per base);
where the base's hidden states that its variants' loss measures share are kept.

The store sits on the registry's filesystem, so each variant's body files can be hard links
to it: `<work_dir>/bodies` when the work folder shares the registry's filesystem, else
`<registry>/.bodies` (as staging does, `LocalRegistry.staging_root`).
"""

from __future__ import annotations

from pathlib import Path

from tasks.engine.checkpoint.architectures import ArchitectureRules
from tasks.engine.checkpoint.body import Body, body_tensors, ensure_body
from tasks.pipeline.production.base_models import DIGEST_CACHE, base_identity
from tasks.pipeline.publish.targets import LocalRegistry, Publisher, same_filesystem

BODY_STORE = "bodies"
REGISTRY_BODY_STORE = ".bodies"


def body_store(work_dir: Path, publisher: Publisher) -> Path:
    store = Path(work_dir) / BODY_STORE
    if isinstance(publisher, LocalRegistry) and not same_filesystem(store, publisher.root):
        return publisher.root / REGISTRY_BODY_STORE
    return store


def base_body(work_dir: Path, publisher: Publisher, base_dir: Path, rules: ArchitectureRules) -> Body:
    """The base's proved body, keyed by the base's content identity (sha256 of its files)."""
    identity = base_identity(base_dir, Path(work_dir) / DIGEST_CACHE)
    return ensure_body(base_dir, body_store(work_dir, publisher), body_tensors(base_dir, rules), identity)


LOSS_SEQUENCES = "loss-sequences"


def base_sequences_dir(work_dir: Path, base_dir: Path) -> Path:
    """The base's outputs on the id sequences its variants' loss reads (engine/verify/loss.py),
    keyed by the base's content identity: shared by its variants across runs and worker processes."""
    return Path(work_dir) / LOSS_SEQUENCES / base_identity(base_dir, Path(work_dir) / DIGEST_CACHE)[:32]
