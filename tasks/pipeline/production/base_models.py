"""Making a manifest's base model a local safetensors folder, and naming its identity."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from filelock import FileLock

from tasks.engine.errors import ModelFolderError
from tasks.engine.checkpoint.gguf import convert_gguf, read_source_info
from tasks.engine.runtime.sealed import UNSEALED, folder_seal_problem, read_folder_seal, seal_folder
from tasks.pipeline.manifest import BaseModelSpec, GGUFSource, HubSource, LoadedManifest, LocalSource
from tasks.engine.runtime.atomic import write_text_atomic
from tasks.engine.checkpoint.content_id import file_digest, folder_identity, sha256_file
from tasks.pipeline.manifest import COMMIT_RE

log = logging.getLogger("trimworks.bases")
CONVERSION_IDENTITY = 1  # part of a converted base's identity: bump when conversion changes its output
DIGEST_CACHE = "digests.json"  # under work_dir: sha256 per (path, size, mtime, inode)
SOURCE_RECORD = ".trimworks-source.json"

HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*/*.json"]


def base_folder(m: LoadedManifest, base: BaseModelSpec) -> Path | None:
    """Where the base's local folder is, or will be once materialised (nothing is fetched).
    None for a Hub base pinned by a tag: its folder is named by the commit the tag resolves to."""
    src = base.source
    if isinstance(src, LocalSource):
        return m.resolve(src.local)
    cache = m.work_dir / "bases"
    if isinstance(src, GGUFSource):
        gguf = m.resolve(src.gguf)
        if not gguf.is_file():
            raise ModelFolderError(f"base_models[{base.id}].source.gguf: {gguf} not found")
        return cache / f"{base.id}-gguf-{sha256_file(gguf)[:16]}-{src.dtype}"
    if isinstance(src, HubSource):
        return cache / f"{base.id}-hub-{src.revision}" if COMMIT_RE.match(src.revision) else None
    raise ModelFolderError(f"base model {base.id}: unknown source {src!r}")  # pragma: no cover


def materialize_base(m: LoadedManifest, base: BaseModelSpec) -> Path:
    """Local folder as is; GGUF converted once into the work dir; hub repos downloaded once."""
    src = base.source
    if isinstance(src, LocalSource):
        return m.resolve(src.local)
    cache = m.work_dir / "bases"
    cache.mkdir(parents=True, exist_ok=True)
    if isinstance(src, GGUFSource):
        out = base_folder(m, base)
        with FileLock(str(out) + ".lock"):
            return converted_base(m.resolve(src.gguf), out, src.dtype, base.id)
    if isinstance(src, HubSource):
        return materialize_hub(m, base, src, cache)
    raise ModelFolderError(f"base model {base.id}: unknown source {src!r}")  # pragma: no cover


def converted_base(gguf: Path, out: Path, dtype: str, base_id: str) -> Path:
    """The GGUF file converted to a safetensors folder, once; the folder carries its own seal
    (every file's size, mtime and digest, tasks/engine/runtime/sealed.py). A converted folder
    whose files changed since is damaged: it is converted again from its source (logged),
    never taken as a new base. Called under the folder's lock."""
    if (out / "config.json").exists():
        problem = folder_seal_problem(out)
        if problem is None:
            return out
        if problem == UNSEALED and read_source_info(out) is not None:  # converted by an older trimworks: adopted
            seal_folder(out, {"source": read_source_info(out)})
            return out
        log.warning("base model %s: the converted folder %s is damaged (%s); converting %s again", base_id, out, problem, gguf)
        shutil.rmtree(out)
    convert_gguf(gguf, out, dtype=dtype)
    seal_folder(out, {"source": read_source_info(out)})
    return out


def resolve_hub_revision(api, src: HubSource, max_retries: int = 5) -> str:
    """The 40-hex commit a pinned revision names: a commit as is; a tag resolved through
    the Hub (a branch name is refused: it moves)."""
    from tasks.pipeline.publish.targets import with_retries

    if COMMIT_RE.match(src.revision):
        return src.revision
    refs = with_retries(lambda: api.list_repo_refs(src.hub), f"{src.hub} list refs", max_retries)
    if src.revision in {b.name for b in refs.branches}:
        raise ModelFolderError(f"{src.hub}: revision {src.revision!r} is a branch, which moves; pin a commit sha or a tag")
    for tag in refs.tags:
        if tag.name == src.revision:
            return tag.target_commit
    raise ModelFolderError(f"{src.hub}: no tag or commit {src.revision!r}; pin the full 40-hex commit sha")


def check_lfs_digests(folder: Path, expected: dict[str, str], cache: Path | None = None) -> None:
    """Every downloaded LFS file must have the sha256 the Hub lists for it."""
    for name, sha in sorted(expected.items()):
        local = Path(folder) / name
        if not local.is_file():
            continue  # not downloaded (allow_patterns)
        got = file_digest(local, cache)
        if got != sha:
            raise ModelFolderError(
                f"{local}: sha256 {got[:16]}… differs from the Hub's {sha[:16]}… for {name}; the download is corrupt. "
                f"Delete {Path(folder)} and rerun to download it again"
            )


def materialize_hub(m: LoadedManifest, base: BaseModelSpec, src: HubSource, cache: Path) -> Path:
    """Download once per full commit sha, check LFS files against the Hub's sha256 and record
    which commit a tag resolved to (`.trimworks-source.json`, shown on the cards)."""
    from huggingface_hub import HfApi

    retries = m.spec.publish.hub.max_retries
    api = HfApi()
    commit = resolve_hub_revision(api, src, retries)
    out = cache / f"{base.id}-hub-{commit}"
    record = out / SOURCE_RECORD
    with FileLock(str(out) + ".lock"):
        if not record.exists():
            download_hub_snapshot(api, src.hub, commit, out, retries, m.work_dir / DIGEST_CACHE)
            write_text_atomic(record, json.dumps({"hub": src.hub, "revision": src.revision, "commit": commit}))
    return out


def resolve_any_revision(api, repo: str, revision: str, max_retries: int = 3) -> str:
    """The commit a branch, tag or sha names now (the CLI's `--revision`; a manifest pins
    tags and commits only, see `resolve_hub_revision`)."""
    from tasks.pipeline.publish.targets import with_retries

    return with_retries(lambda: api.model_info(repo, revision=revision), f"{repo}@{revision} model_info", max_retries).sha


def fetch_hub_model(api, repo: str, revision: str, cache: Path, max_retries: int = 3) -> tuple[Path, dict]:
    """`repo` at the commit `revision` names now, downloaded once per commit into
    `cache/<org>--<name>/<commit>` (plain files: the Hugging Face cache's symlinks would be
    refused as links out of the model folder). Returns the folder and what was fetched."""
    commit = resolve_any_revision(api, repo, revision, max_retries)
    out = cache / repo.replace("/", "--") / commit
    record = out / SOURCE_RECORD
    source = {"hub": repo, "revision": revision, "commit": commit}
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not record.exists():
            download_hub_snapshot(api, repo, commit, out, max_retries)
            write_text_atomic(record, json.dumps(source))
    return out, source


def download_hub_snapshot(api, repo: str, commit: str, local_dir: Path, max_retries: int = 3,
                          digest_cache: Path | None = None) -> Path:
    """The weight, config and tokenizer files of `repo` at `commit` into `local_dir`, each LFS
    file checked against the sha256 the Hub lists."""
    from huggingface_hub import snapshot_download

    from tasks.pipeline.publish.targets import with_retries

    with_retries(
        lambda: snapshot_download(repo, revision=commit, local_dir=str(local_dir),
                                  allow_patterns=HUB_PATTERNS, endpoint=api.endpoint, token=api.token),
        f"{repo} download", max_retries)
    info = with_retries(lambda: api.model_info(repo, revision=commit, files_metadata=True), f"{repo} model_info", max_retries)
    expected = {s.rfilename: s.lfs.sha256 for s in (info.siblings or []) if getattr(s, "lfs", None) is not None}
    check_lfs_digests(Path(local_dir), expected, digest_cache)
    return Path(local_dir)


def hub_commit_of(folder: Path) -> str | None:
    """The commit a Hub base was downloaded at (None for other sources)."""
    try:
        return json.loads((Path(folder) / SOURCE_RECORD).read_text()).get("commit")
    except (OSError, ValueError):
        return None


def base_identity(folder: Path, cache: Path | None = None) -> str:
    """Content identity of a model folder: streamed sha256 of every weight, config and
    tokenizer file (cached by path, size, mtime and inode), so a changed or repaired base
    changes every fingerprint made from it. A converted base (GGUF) is keyed by its source
    instead: the GGUF file's sha256 and the dtype, while its seal says the folder is as
    converted; damage to the conversion cache is repaired (`converted_base`), not a new base."""
    seal = read_folder_seal(folder)
    source = seal.get("source") if seal else None
    if isinstance(source, dict) and source.get("sha256") and folder_seal_problem(folder) is None:
        key = {"converted_from": source.get("format"), "sha256": source["sha256"], "dtype": source.get("dtype"),
               "conversion": CONVERSION_IDENTITY}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return folder_identity(folder, cache)
