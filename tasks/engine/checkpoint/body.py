"""The shared body: every tensor of a base that is not vocabulary-sized, written once per base.

Only the vocabulary-sized rows differ between the variants of a base. In the shared layout a
variant is a standard sharded safetensors checkpoint (`model.safetensors.index.json`): body
shard(s) holding every other tensor, byte-identical for every variant of the base (same
tensors, same order, same header), and the variant's own `model-vocab.safetensors`. The body
is written once into a content-addressed store, proved once against the base, and placed into
each variant as a hard link (a copy where links cannot be made), so a variant costs its rows.

Files are never modified in place: a rebuilt body is a new folder, a rebuilt variant gets new
links, so replacing one variant never touches another's bytes.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import xxhash
from filelock import FileLock

from tasks.engine.checkpoint.architectures import ArchitectureRules, default_rules
from tasks.engine.checkpoint.digests import copy_and_remember, tensor_digest, thread_buffer, too_big_to_cache
from tasks.engine.checkpoint.safetensors_io import LazyCheckpoint, PlannedTensor, TensorInfo, copy_bytes, write_safetensors
from tasks.engine.errors import ModelFolderError
from tasks.engine.runtime.atomic import atomic_folder, write_text_atomic

log = logging.getLogger("trimworks.body")

LAYOUT_VERSION = 1  # bump when the body's bytes for the same base would change
BODY_PREFIX = "model-body"
VOCAB_SHARD = "model-vocab.safetensors"
BODY_RECORD = "body.json"
BODY_METADATA = {"format": "pt"}
MAX_SHARD_BYTES = 5 * 10**9  # the Hub's advice for one file; a larger tensor gets a shard of its own
BODY_MODES = ("link", "copy")


@dataclass(frozen=True)
class FileStamp:
    """A body file as the proof saw it: equal stamps mean the same bytes without reading them."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class Body:
    """A proved body in the store: its files, what they hold, and the digests the proof computed."""

    folder: Path
    key: str
    digest: str  # one xxh3-128 over the body files' digests, in order: what a card names
    files: tuple[str, ...]
    weight_map: dict[str, str]  # tensor -> body file
    file_digests: dict[str, str]  # body file -> xxh3-128 of its whole content
    stamps: dict[str, FileStamp]  # body file -> as proved
    tensor_digests: dict[str, str]  # tensor -> xxh3-128, equal to the base tensor's
    total_bytes: int  # tensor data bytes (an index's total_size counts these)

    def path(self, name: str) -> Path:
        return self.folder / name

    @property
    def file_bytes(self) -> int:
        return sum(s.size for s in self.stamps.values())

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("folder")
        d["files"] = list(self.files)
        return d

    @classmethod
    def load(cls, folder: Path) -> Body:
        record = folder / BODY_RECORD
        try:
            d = json.loads(record.read_text())
            d["stamps"] = {k: FileStamp(**v) for k, v in d["stamps"].items()}
            d["files"] = tuple(d["files"])
            return cls(folder=folder, **d)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ModelFolderError(f"{record}: unreadable body record ({exc}); it will be rebuilt") from exc


def shard_plan(tensors: Sequence[TensorInfo], max_shard_bytes: int = MAX_SHARD_BYTES) -> list[list[TensorInfo]]:
    """Body tensors in base order, cut into shards of at most `max_shard_bytes` (one tensor may exceed it)."""
    shards: list[list[TensorInfo]] = []
    size = 0
    for t in tensors:
        if not shards or (size + t.nbytes > max_shard_bytes and shards[-1]):
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def body_file_names(n_shards: int) -> list[str]:
    return [f"{BODY_PREFIX}-{i:05d}-of-{n_shards:05d}.safetensors" for i in range(1, n_shards + 1)]


def base_order(ckpt: LazyCheckpoint) -> list[TensorInfo]:
    """The base's tensors in on-disk order (shard by shard): the order every layout writes them in."""
    return [ckpt.tensors[name] for shard in ckpt.shards for name in shard.tensor_names]


def is_vocab_sized(info: TensorInfo, rules: ArchitectureRules, vocab_size: int) -> bool:
    """Whether surgery slices this tensor: a rule names it and its axis has the vocabulary's size."""
    rule = rules.vocab_rule_for(info.name)
    return rule is not None and len(info.shape) > rule.axis and info.shape[rule.axis] == vocab_size


def body_tensors(base_dir: Path, rules: ArchitectureRules | None = None) -> list[TensorInfo]:
    """The base's tensors that go into its shared body (all but the vocabulary-sized and the
    tables of an id threshold), in base order."""
    rules = rules or default_rules()
    config = json.loads((Path(base_dir) / "config.json").read_text())
    vocab_size = int(config["vocab_size"])
    return [t for t in base_order(LazyCheckpoint(Path(base_dir)))
            if not is_vocab_sized(t, rules, vocab_size) and rules.threshold_for(t.name, config) is None]


def body_key(identity: str, body_tensors: Sequence[TensorInfo], max_shard_bytes: int = MAX_SHARD_BYTES) -> str:
    """The store key: the base's content identity and what the body holds, so a new base
    revision (or another rule table slicing other tensors) gets a new body, never a rewrite."""
    h = hashlib.sha256()
    h.update(json.dumps({"layout": LAYOUT_VERSION, "identity": identity, "max_shard_bytes": max_shard_bytes,
                         "tensors": [[t.name, t.dtype, list(t.shape)] for t in body_tensors]}).encode())
    return h.hexdigest()[:32]


def write_body_files(body_tensors: Sequence[TensorInfo], out_dir: Path, max_shard_bytes: int = MAX_SHARD_BYTES,
                     remember_base_digests: bool = True) -> dict[str, str]:
    """Write the body shards into `out_dir`; returns tensor -> file. The same tensors give the
    same bytes: the header comes from names, dtypes and shapes alone, the metadata is fixed."""
    plan = shard_plan(body_tensors, max_shard_bytes)
    uncache = too_big_to_cache(sum(t.nbytes for t in body_tensors))
    copy = functools.partial(copy_and_remember, uncache=uncache) if remember_base_digests else copy_bytes
    weight_map: dict[str, str] = {}
    for name, shard in zip(body_file_names(len(plan)), plan):
        planned = [PlannedTensor(t.name, t.dtype, t.shape, functools.partial(copy, t)) for t in shard]
        write_safetensors(out_dir / name, planned, BODY_METADATA)
        weight_map |= {t.name: name for t in shard}
    return weight_map


def file_digest(path: Path) -> str:
    """xxh3-128 of a whole file, streamed in 16 MiB blocks (~10 GB/s from the page cache)."""
    h = xxhash.xxh3_128()
    buf = thread_buffer()
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(buf[:n])
    return h.hexdigest()


def prove_body(base_dir: Path, folder: Path, key: str) -> Body:
    """The body's proof, once per base: every body tensor has the base's name, dtype, shape and
    bytes (xxh3-128, the base side usually remembered from the copy). Raises on any difference."""
    base = LazyCheckpoint(Path(base_dir))
    body = LazyCheckpoint(Path(folder))
    problems = []
    digests: dict[str, str] = {}
    for name, t in body.tensors.items():
        b = base.tensors.get(name)
        if b is None or (b.dtype, b.shape) != (t.dtype, t.shape):
            problems.append(f"{name}: not the base's tensor" if b is None else f"{name}: {t.dtype}{list(t.shape)}, base {b.dtype}{list(b.shape)}")
            continue
        db, _ = tensor_digest(b, thread_buffer(), remember=True)
        dt, _ = tensor_digest(t, thread_buffer())
        if db != dt:
            problems.append(f"{name}: bytes differ from the base's (xxh3-128 {dt[:12]}… vs {db[:12]}…)")
        digests[name] = dt
    if problems:
        raise ModelFolderError(f"{folder}: the shared body is not the base's ({len(problems)} tensors): {problems[:3]}")
    files = tuple(s.file.name for s in body.shards)
    file_digests = {f: file_digest(folder / f) for f in files}
    overall = xxhash.xxh3_128("".join(file_digests[f] for f in files).encode()).hexdigest()
    return Body(folder=Path(folder), key=key, digest=overall, files=files,
                weight_map={n: t.file.name for n, t in body.tensors.items()}, file_digests=file_digests,
                stamps={f: FileStamp.of(folder / f) for f in files}, tensor_digests=digests,
                total_bytes=sum(t.nbytes for t in body.tensors.values()))


def body_intact(body: Body) -> list[str]:
    """What is wrong with a stored body (empty: intact). Unchanged stamps cost one stat per
    file; a file whose stamp changed is read and its digest compared."""
    wrong = []
    for f in body.files:
        p = body.path(f)
        try:
            stamp = FileStamp.of(p)
        except OSError as exc:
            wrong.append(f"{p}: {exc.strerror}")
            continue
        if stamp != body.stamps[f] and (stamp.size != body.stamps[f].size or file_digest(p) != body.file_digests[f]):
            wrong.append(f"{p}: content differs from the proved body (xxh3-128 {body.file_digests[f][:12]}…)")
    return wrong


def ensure_body(base_dir: Path, store: Path, body_tensors: Sequence[TensorInfo], identity: str,
                max_shard_bytes: int = MAX_SHARD_BYTES) -> Body:
    """The base's proved body from the store, written and proved first if missing or damaged.
    Under a file lock: concurrent builds of one base (threads, processes, runs) write it once."""
    key = body_key(identity, body_tensors, max_shard_bytes)
    folder = Path(store) / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / BODY_RECORD).exists():
            try:
                body = Body.load(folder)
                wrong = body_intact(body)
            except ModelFolderError as exc:
                wrong = [str(exc)]
            if not wrong:
                return body
            log.warning("shared body %s is damaged (%s); rebuilding it from the base %s", folder, wrong[0], base_dir)
        with atomic_folder(folder, overwrite=True) as tmp:
            write_body_files(body_tensors, tmp, max_shard_bytes)
            body = prove_body(base_dir, tmp, key)
            write_text_atomic(tmp / BODY_RECORD, json.dumps(body.to_json(), indent=1))
        # The stamps were taken in the temp folder; a rename keeps inode, size and mtime.
        return Body.load(folder)


def place_body(body: Body, out_dir: Path, mode: str = "link") -> str:
    """Put the body files into a variant folder: hard links to the store's files (`link`, on one
    filesystem), else copies (in the kernel, which shares extents where the filesystem can).
    Returns how they were placed: `link` or `copy`."""
    if mode not in BODY_MODES:
        raise ValueError(f"body mode {mode!r}: use one of {BODY_MODES}")
    placed = "link" if mode == "link" else "copy"
    for f in body.files:
        src, dst = body.path(f), Path(out_dir) / f
        if placed == "link":
            try:
                os.link(src, dst)
                continue
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                placed = "copy"
        shutil.copyfile(src, dst)  # copy_file_range/sendfile in the kernel
    return placed


def body_file_proved(body: Body, path: Path) -> str | None:
    """Whether a variant's body file is the proved one: None if so, else why not. Constant time
    when it is the store's file (same inode, size and mtime as proved); a copy is read once and
    its digest compared with the recorded one."""
    name = Path(path).name
    if name not in body.stamps:
        return f"{name} is not a file of body {body.digest[:12]}"
    try:
        stamp = FileStamp.of(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if stamp == body.stamps[name]:
        return None
    if stamp.size == body.stamps[name].size and file_digest(path) == body.file_digests[name]:
        return None
    return f"{path}: not the proved body file (xxh3-128 differs from {body.file_digests[name][:12]}…)"
