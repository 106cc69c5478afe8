"""Publishing targets: a local hub-like registry folder (default) and the Hugging Face Hub.

Both answer two questions: which fingerprint is published for a variant (to skip work),
and publish this folder. Local publishing is one atomic rename; the Hub gets one commit per
variant, retried with exponential backoff on 429/5xx/dropped connections, under a
concurrency limit. The token is passed to the client only, never logged or written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import math
import random
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from tasks.engine.runtime.atomic import fsync_dir, fsync_tree
from tasks.engine.errors import PublishError
from tasks.engine.runtime.redact import register_secret
from tasks.engine.runtime.failpoints import failpoint
from tasks.pipeline.manifest import HubTarget, PublishSpec, Variant

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


def publisher_for(publish: PublishSpec, output_dir: Path, token: str | None = None,
                  owner: dict[str, str] | None = None) -> Publisher:
    """The manifest's publish target: its `publish` section, and its output folder resolved
    against the manifest (`token`: the Hub token, when the target is the Hub; `owner`: the
    manifest publishing, see `manifest_owner`: a local registry then replaces only its own variants)."""
    if publish.target == "hub":
        return HubPublisher(publish.hub, token, owner=owner)
    return LocalRegistry(output_dir, owner)


def owner_id(owner: dict[str, str] | None) -> str | None:
    """A public stand-in for an owner on the Hub (its card metadata `trimworks_owner`): local
    paths are not published, only a digest of them."""
    if not owner:
        return None
    return hashlib.sha256(json.dumps(owner, sort_keys=True).encode()).hexdigest()[:16]


def manifest_owner(manifest: Path, work_dir: Path) -> dict[str, str]:
    """Who owns what a run publishes: its manifest (resolved path) and its work folder."""
    return {"manifest": str(Path(manifest).resolve()), "work_dir": str(Path(work_dir).resolve())}


def ownership_conflict(target: Path, variant_id: str, owner: dict[str, str]) -> str | None:
    """Why `owner` may not replace what is at `target` (None: nothing there, an empty folder,
    or a variant this manifest published, or one published before owners were recorded).

    A folder without a readable record is not trimworks' (a user's own files); a record naming
    another manifest is that manifest's variant. Either is left exactly as it is."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return None
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        return None
    try:
        record = json.loads((target / RECORD_NAME).read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or "fingerprint" not in record:
        return (f"{variant_id}: {target} is a folder trimworks did not write (no readable {RECORD_NAME}); manifest "
                f"{owner['manifest']} does not replace or delete it. Move it away, or give the variant another "
                "org/name_template")
    theirs = record.get("owner") or {}
    if isinstance(theirs, dict) and theirs.get("manifest") and theirs.get("manifest") != owner.get("manifest"):
        return (f"{variant_id}: {target} is published by manifest {theirs['manifest']} (work folder "
                f"{theirs.get('work_dir')}), not by {owner['manifest']}; nothing was replaced. Give one of them "
                "another org/name_template or output_dir")
    return None


def published_files(folder: Path) -> dict[str, int]:
    """Every file of a variant folder about to be published (but its record), with its size."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != RECORD_NAME}


def files_damage(folder: Path, record: dict) -> str | None:
    """What is wrong with a published folder against the sizes its record lists (None: whole).
    Sizes only (a stat per file): a truncated or missing file, as a crash or a full disk leaves."""
    for name, size in (record.get("files") or {}).items():
        try:
            now = (Path(folder) / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if now != size:
            return f"{name} is {now:,} bytes, {size:,} when published"
    return None


class LocalRegistry:
    """`<root>/<org>/<name>/`: a hub-like layout with README.md, weights and evaluation.json."""

    def __init__(self, root: Path, owner: dict[str, str] | None = None):
        self.root = Path(root)
        self.owner = owner  # the manifest publishing (manifest_owner): only its variants are replaced

    def conflict(self, variant: Variant) -> str | None:
        """Why this manifest may not publish `variant` here (another manifest's or a user's folder)."""
        if self.owner is None:
            return None
        return ownership_conflict(self.target(variant), variant.id, self.owner)

    def target(self, variant: Variant) -> Path:
        target = (self.root / variant.repo_id).resolve()
        if self.root.resolve() not in target.parents:
            raise PublishError(f"{variant.id}: repo id {variant.repo_id!r} would write outside {self.root}")
        return target

    def location(self, variant: Variant) -> str:
        return str(self.target(variant))

    def published_fingerprint(self, variant: Variant) -> str | None:
        """The published fingerprint, or None when nothing whole is published: a file the
        record lists that is missing or of another size makes the variant due for a rebuild."""
        target = self.target(variant)
        try:
            record = json.loads((target / RECORD_NAME).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        damage = files_damage(target, record)
        if damage:
            log.warning("published %s is damaged (%s): it will be rebuilt", variant.id, damage)
            return None
        return record.get("fingerprint")

    def staging_root(self, builds: Path) -> Path:
        """Where variants are built: `builds` when it shares the registry's filesystem, else
        a hidden folder inside the registry, so publishing is always one same-filesystem
        rename (never EXDEV, never a cross-device copy that a full disk can leave half done)."""
        return builds if same_filesystem(builds, self.root) else self.root / STAGING_DIR

    def publish(self, folder: Path, variant: Variant) -> str:
        """Move a complete staging folder into place by rename: readers of the registry see
        the old folder, no folder, or the new one — never a partial one. Every file is
        fsynced before the rename and the parent folder after it (durable after power loss)."""
        target = self.target(variant)
        problem = self.conflict(variant)  # checked again here: another manifest may have published meanwhile
        if problem:
            raise PublishError(problem)
        target.parent.mkdir(parents=True, exist_ok=True)
        tag = f"{process_tag()}-{uuid.uuid4().hex[:8]}-{variant.id}"  # whose: judged by clean_stale
        source = Path(folder)
        if not same_filesystem(source, target.parent):  # staged elsewhere: copy beside the target first
            source = self.root / f"{INCOMING_PREFIX}{tag}"
            try:
                shutil.copytree(folder, source)
            except shutil.Error as exc:  # copytree gathers per-file errors: surface a full disk as such
                shutil.rmtree(source, ignore_errors=True)
                if "No space left" in str(exc) or "Disk quota" in str(exc):
                    raise OSError(errno.ENOSPC, "No space left on device", str(self.root)) from exc
                raise
            except BaseException:
                shutil.rmtree(source, ignore_errors=True)
                raise
        fsync_tree(source)
        trash = self.root / f"{REPLACED_PREFIX}{tag}"  # same filesystem as the target: a --force swap is a rename
        if target.exists():
            os.replace(target, trash)  # out of the registry first
        failpoint("publishing")
        try:
            os.replace(source, target)
        except BaseException:
            if trash.exists() and not target.exists():
                os.replace(trash, target)  # put the published variant back
            if source != Path(folder):
                shutil.rmtree(source, ignore_errors=True)
            raise
        fsync_dir(target.parent)
        shutil.rmtree(trash, ignore_errors=True)
        if source != Path(folder):
            shutil.rmtree(folder, ignore_errors=True)
        return str(target)

    @contextlib.contextmanager
    def claim_staging(self, variant: Variant) -> Iterator[Path]:
        """A staging folder in the registry's `.staging` for one build of `variant`, owned by
        this process: beside it `<name>.owner.json` (pid, host, manifest, work folder) and
        `<name>.lock`, held while the folder exists. Another run (whatever its work folder)
        removes it only once its owner is provably dead (`staging_owner_dead`). Removed on exit."""
        from filelock import FileLock

        staging = self.root / STAGING_DIR
        staging.mkdir(parents=True, exist_ok=True)
        name = f"{variant.id}.{os.getpid()}-{uuid.uuid4().hex[:8]}"  # the host is in the owner record
        lock = FileLock(str(staging / f"{name}{LOCK_SUFFIX}"))
        lock.acquire()
        owner_file = staging / f"{name}{OWNER_SUFFIX}"
        try:
            owner_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "variant": variant.id,
                                              **(self.owner or {})}))
            yield staging / name
        finally:
            shutil.rmtree(staging / name, ignore_errors=True)
            with contextlib.suppress(OSError):
                owner_file.unlink()
            lock.release()
            with contextlib.suppress(OSError):
                Path(lock.lock_file).unlink()

    def clean_stale(self, lock_dir: Path) -> list[Path]:
        """Temp folders a killed or failed run left in the registry: a `.staging` claim whose
        owner is provably dead (`staging_owner_dead`), and `.incoming-*`/`.replaced-*` folders
        whose maker (host and pid in the name) is gone; an older trimworks' (no maker in the
        name) when no live run of this work folder holds their variant's lock. A live run's
        temp folders are never touched, whichever work folder it uses."""
        from filelock import FileLock, Timeout

        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        staging = self.root / STAGING_DIR
        for p in sorted(staging.iterdir()) if staging.is_dir() else []:
            if p.name.endswith(OWNER_SUFFIX) and not (staging / p.name.removesuffix(OWNER_SUFFIX)).exists():
                name = p.name.removesuffix(OWNER_SUFFIX)  # killed before its folder was made: the records alone
                if staging_owner_dead(staging, name):
                    for suffix in (OWNER_SUFFIX, LOCK_SUFFIX):
                        with contextlib.suppress(OSError):
                            (staging / f"{name}{suffix}").unlink()
                continue
            if p.name.endswith((LOCK_SUFFIX, OWNER_SUFFIX)):
                continue
            if staging_owner_dead(staging, p.name):
                shutil.rmtree(p, ignore_errors=True)
                for suffix in (OWNER_SUFFIX, LOCK_SUFFIX):
                    with contextlib.suppress(OSError):
                        (staging / f"{p.name}{suffix}").unlink()
                removed.append(p)
        for p in [p for p in self.root.iterdir() if p.name.startswith((INCOMING_PREFIX, REPLACED_PREFIX))]:
            name = p.name.removeprefix(INCOMING_PREFIX).removeprefix(REPLACED_PREFIX).lstrip(".")
            mine = TEMP_OWNER_RE.match(name)
            if mine:  # named by the process that made it: removed once that process is gone
                if mine.group(1) == host_tag() and not _pid_alive(int(mine.group(2))):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
                continue
            variant_id = re.sub(r"(-[0-9a-f]{8}|\.(tmp|old|replaced)-[0-9a-f]{8})$", "", name)  # an older trimworks'
            try:
                with FileLock(str(Path(lock_dir) / f"{variant_id}.lock"), timeout=0):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
            except Timeout:
                continue  # a live run is building this variant
        return removed


TEMP_OWNER_RE = re.compile(r"h([0-9a-f]{6})-(\d+)-[0-9a-f]{8}-")


def host_tag() -> str:
    """This host, shortly (temp folder names carry it with the pid of their maker)."""
    import hashlib

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def process_tag() -> str:
    return f"h{host_tag()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def staging_owner_dead(staging: Path, name: str, legacy_age_s: float = 86400.0) -> bool:
    """Whether the run that claimed `.staging/<name>` is provably gone: its owner record names
    this host and a process that no longer exists, or its lock is free (a lock dies with its
    process). Another host's claim is never judged from here. A folder with neither record nor
    lock (an older trimworks) counts as dead only once untouched for `legacy_age_s`."""
    from filelock import FileLock, Timeout

    owner_file, lock_file = staging / f"{name}{OWNER_SUFFIX}", staging / f"{name}{LOCK_SUFFIX}"
    try:
        owner = json.loads(owner_file.read_text())
    except (OSError, ValueError):
        owner = None
    if owner is None and not lock_file.exists():
        try:
            return time.time() - (staging / name).stat().st_mtime > legacy_age_s
        except OSError:
            return False
    if isinstance(owner, dict) and owner.get("host") not in (None, socket.gethostname()):
        return False
    pid = owner.get("pid") if isinstance(owner, dict) else None
    if isinstance(pid, int) and pid > 0 and not _pid_alive(pid):
        return True
    try:
        with FileLock(str(lock_file), timeout=0):
            return True
    except Timeout:
        return False


INCOMING_PREFIX = ".incoming-"
REPLACED_PREFIX = ".replaced-"
STAGING_DIR = ".staging"
LOCK_SUFFIX, OWNER_SUFFIX = ".lock", ".owner.json"


def same_filesystem(a: Path, b: Path) -> bool:
    """Whether two paths (or their nearest existing parents) are on one filesystem."""

    def dev(p: Path) -> int:
        p = Path(p).absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        return os.stat(p).st_dev

    return dev(a) == dev(b)


TRANSPORT_ERROR_NAMES = {"TransportError", "TimeoutException", "NetworkError", "ConnectError", "ConnectTimeout",
                         "ReadTimeout", "WriteTimeout", "PoolTimeout", "RemoteProtocolError", "ReadError", "WriteError"}


def is_transport_error(exc: BaseException) -> bool:
    """A request that never got a reply: refused, DNS failure, timeout, dropped connection.
    Matched by class name as well as type: huggingface_hub may bundle its own copy of httpx
    (`httpx2.ConnectError` is no `httpx.TransportError`)."""
    import socket

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        if any(cls.__name__ in TRANSPORT_ERROR_NAMES for cls in type(exc).__mro__):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(exc: BaseException, cap: float) -> float | None:
    """The server's Retry-After in seconds, at most `cap`; None when absent or not a finite,
    non-negative number (then the backoff decides). A server asking for a day is not obeyed."""
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


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
            transient = status in RETRY_STATUS or (status is None and (isinstance(exc, httpx.TransportError) or is_transport_error(exc)))
            if not transient or attempt == max_retries:
                raise
            delay = _retry_after(exc, max_delay)
            if delay is None:
                delay = min(max_delay, base_delay * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("%s: attempt %d failed (%s); retrying in %.1fs", what, attempt + 1, status or type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class HubPublisher:
    """One commit per variant to the Hub (or a Hub-compatible endpoint)."""

    _semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}

    def __init__(self, spec: HubTarget, token: str | None, base_delay: float = 1.0, owner: dict[str, str] | None = None):
        from huggingface_hub import HfApi

        self.spec = spec
        self.owner = owner_id(owner)  # only repos this manifest published (or new ones) are committed to
        register_secret(token)
        self.api = HfApi(endpoint=spec.endpoint, token=token)
        self.base_delay = base_delay
        key = (spec.endpoint or "hub", spec.max_concurrency)
        self.semaphore = self._semaphores.setdefault(key, threading.BoundedSemaphore(spec.max_concurrency))

    def _remote(self, variant: Variant) -> tuple[str | None, str | None]:
        """(head commit, published fingerprint) of the variant's repo; (None, None) if absent."""
        head, fingerprint, _problem = self._remote_state(variant)
        return head, fingerprint

    def _remote_state(self, variant: Variant) -> tuple[str | None, str | None, str | None]:
        """(head commit, published fingerprint, why this manifest may not commit there)."""
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            info = self.api.model_info(variant.repo_id)
        except RepositoryNotFoundError:
            return None, None, None
        card = info.card_data.to_dict() if info.card_data is not None else {}
        fingerprint, theirs = card.get("trimworks_fingerprint"), card.get("trimworks_owner")
        problem = None
        if fingerprint is None and any(s.rfilename != ".gitattributes" for s in (info.siblings or [])):
            problem = (f"{variant.id}: the Hub repo {variant.repo_id} holds files trimworks did not publish; nothing "
                       "was committed. Publish under another publish.org or name_template, or empty that repo")
        elif self.owner and theirs and theirs != self.owner:
            problem = (f"{variant.id}: the Hub repo {variant.repo_id} was published by another manifest (owner "
                       f"{theirs}, this one is {self.owner}); nothing was committed. Give one of them another "
                       "publish.org or name_template")
        return info.sha, fingerprint, problem

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
                head, fingerprint, problem = self._remote_state(variant)
                if problem:
                    raise PublishError(problem)
                if fingerprint == variant.fingerprint:
                    return None
                return self.api.upload_folder(
                    repo_id=variant.repo_id, folder_path=str(folder), parent_commit=head,
                    commit_message=f"trimworks: {variant.id} (fingerprint {variant.fingerprint[:16]})",
                    commit_description=f"fingerprint: {variant.fingerprint}",
                    delete_patterns="*",  # in the same commit: files an older version had and this one has not
                )

            commit = with_retries(commit_once, f"{variant.id} commit", self.spec.max_retries, self.base_delay)
        with contextlib.suppress(Exception):
            shutil.rmtree(folder)
        return str(getattr(commit, "commit_url", None) or f"{self.api.endpoint}/{variant.repo_id}")
