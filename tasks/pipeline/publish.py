"""Publishing targets: a local hub-like registry folder (default) and the Hugging Face Hub.

Both answer two questions: which fingerprint is published for a variant (to skip work),
and publish this folder. Local publishing is one atomic rename; the Hub gets one commit per
variant, retried with exponential backoff on 429/5xx/dropped connections, under a
concurrency limit. The token is passed to the client only, never logged or written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from tasks.engine.atomic import replace_folder
from tasks.engine.errors import PublishError
from tasks.engine.failpoints import failpoint
from tasks.pipeline.manifest import HubTarget, LoadedManifest, Variant

log = logging.getLogger("trimworks.publish")
RECORD_NAME = "evaluation.json"
RETRY_STATUS = {408, 409, 412, 423, 429, 500, 502, 503, 504}
T = TypeVar("T")


class Publisher(Protocol):
    def published_fingerprint(self, variant: Variant) -> str | None: ...

    def location(self, variant: Variant) -> str:
        """Where the variant is (or would be) published: a folder or a Hub URL."""
        ...

    def publish(self, folder: Path, variant: Variant) -> str: ...


def publisher_for(m: LoadedManifest, token: str | None = None) -> Publisher:
    """The manifest's publish target (`token`: the Hub token, when the target is the Hub)."""
    if m.spec.publish.target == "hub":
        return HubPublisher(m.spec.publish.hub, token)
    return LocalRegistry(m.output_dir)


class LocalRegistry:
    """`<root>/<org>/<name>/`: a hub-like layout with README.md, weights and evaluation.json."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def target(self, variant: Variant) -> Path:
        target = (self.root / variant.repo_id).resolve()
        if self.root.resolve() not in target.parents:
            raise PublishError(f"{variant.id}: repo id {variant.repo_id!r} would write outside {self.root}")
        return target

    def location(self, variant: Variant) -> str:
        return str(self.target(variant))

    def published_fingerprint(self, variant: Variant) -> str | None:
        record = self.target(variant) / RECORD_NAME
        try:
            return json.loads(record.read_text()).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            return None

    def publish(self, folder: Path, variant: Variant) -> str:
        """Move a complete staging folder into place by rename: readers of the registry see
        the old folder, no folder, or the new one — never a partial one."""
        target = self.target(variant)
        target.parent.mkdir(parents=True, exist_ok=True)
        # The old folder leaves the registry first, beside the staging folder (same filesystem).
        trash = folder.parent / f".{folder.name}.replaced-{uuid.uuid4().hex[:8]}"
        replace_folder(folder, target, trash, between=lambda: failpoint("publishing"))
        return str(target)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def with_retries(fn: Callable[[], T], what: str, max_retries: int, base_delay: float = 1.0, max_delay: float = 60.0) -> T:
    """Call `fn`, retrying transient Hub failures with exponential backoff (Retry-After wins)."""
    import httpx
    from huggingface_hub.errors import OfflineModeIsEnabled

    for attempt in range(max_retries + 1):
        try:
            return fn()
        except OfflineModeIsEnabled:
            raise  # HF_HUB_OFFLINE is set: retrying cannot help
        except Exception as exc:  # noqa: BLE001 - classified below
            status = _status(exc)
            transient = status in RETRY_STATUS or (status is None and isinstance(exc, (httpx.TransportError, ConnectionError)))
            if not transient or attempt == max_retries:
                raise
            delay = _retry_after(exc)
            if delay is None:
                delay = min(max_delay, base_delay * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("%s: attempt %d failed (%s); retrying in %.1fs", what, attempt + 1, status or type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class HubPublisher:
    """One commit per variant to the Hub (or a Hub-compatible endpoint)."""

    _semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}

    def __init__(self, spec: HubTarget, token: str | None, base_delay: float = 1.0):
        from huggingface_hub import HfApi

        self.spec = spec
        self.api = HfApi(endpoint=spec.endpoint, token=token)
        self.base_delay = base_delay
        key = (spec.endpoint or "hub", spec.max_concurrency)
        self.semaphore = self._semaphores.setdefault(key, threading.BoundedSemaphore(spec.max_concurrency))

    def _remote(self, variant: Variant) -> tuple[str | None, str | None]:
        """(head commit, published fingerprint) of the variant's repo; (None, None) if absent."""
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            info = self.api.model_info(variant.repo_id)
        except RepositoryNotFoundError:
            return None, None
        card = info.card_data.to_dict() if info.card_data is not None else {}
        return info.sha, card.get("trimworks_fingerprint")

    def location(self, variant: Variant) -> str:
        return f"{self.api.endpoint}/{variant.repo_id}"

    def published_fingerprint(self, variant: Variant) -> str | None:
        return with_retries(lambda: self._remote(variant), f"{variant.id} model_info",
                            self.spec.max_retries, self.base_delay)[1]

    def publish(self, folder: Path, variant: Variant) -> str:
        with self.semaphore:
            with_retries(lambda: self.api.create_repo(variant.repo_id, exist_ok=True, private=self.spec.private),
                         f"{variant.id} create_repo", self.spec.max_retries, self.base_delay)

            def commit_once():
                # Exactly once: a lost reply may hide a commit that landed, and the client
                # replays POSTs on its own. Committing on top of the head we read makes any
                # replay fail (412) once the first landed; then the fingerprint check ends it.
                head, fingerprint = self._remote(variant)
                if fingerprint == variant.fingerprint:
                    return None
                return self.api.upload_folder(
                    repo_id=variant.repo_id, folder_path=str(folder), parent_commit=head,
                    commit_message=f"trimworks: {variant.id} (fingerprint {variant.fingerprint[:16]})",
                    commit_description=f"fingerprint: {variant.fingerprint}",
                )

            commit = with_retries(commit_once, f"{variant.id} commit", self.spec.max_retries, self.base_delay)
        with contextlib.suppress(Exception):
            shutil.rmtree(folder)
        return str(getattr(commit, "commit_url", None) or f"{self.api.endpoint}/{variant.repo_id}")
