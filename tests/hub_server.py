"""A small Hub-API server on 127.0.0.1 for tests: records repos and commits, injects faults.

It speaks the few endpoints huggingface_hub uses to create a repo, read model info, make a
commit, tag one, list refs and download files at a revision (`/resolve/`), keeping every
commit's files so an old commit or a tag still downloads what it named. As the Hub does, it takes `*.safetensors` through the LFS batch API (the
client asks which objects to upload, PUTs each, then verifies it) and the rest inline. The
LFS store is global by default, like the Hub's content-addressed (Xet) storage that
deduplicates across repos; `lfs_scope="repo"` keeps one store per repo, as plain Git LFS
does. No real network is involved.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from urllib.parse import unquote
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


@dataclass
class Fault:
    path_contains: str
    status: int = 500
    times: int = 1
    retry_after: str | None = None
    drop_connection: bool = False
    after_commit: bool = False  # apply the commit, then drop the connection (the reply is lost)
    echo_headers: bool = False  # a careless server: the error body repeats the request headers


@dataclass
class HubState:
    repos: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    in_flight_commits: int = 0
    max_in_flight_commits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    lfs_suffixes: tuple[str, ...] = (".safetensors",)
    lfs_scope: str = "global"  # or "repo"
    lfs: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (scope, sha256) -> content
    lfs_uploads: list[tuple[str, str, int]] = field(default_factory=list)  # (repo, oid, bytes received)
    inline_bytes: dict[str, int] = field(default_factory=dict)  # repo -> bytes of inline files committed

    def lfs_key(self, repo: str, oid: str) -> tuple[str, str]:
        return (repo if self.lfs_scope == "repo" else "*", oid)

    def uploaded_bytes(self, repo: str) -> int:
        """What the client sent for one repo's files: LFS uploads plus inline content."""
        return sum(n for r, _, n in self.lfs_uploads if r == repo) + self.inline_bytes.get(repo, 0)


def _card_data(readme: bytes | None) -> dict | None:
    if not readme:
        return None
    text = readme.decode()
    if not text.startswith("---"):
        return None
    return yaml.safe_load(text.split("---", 2)[1])


class Handler(BaseHTTPRequestHandler):
    state: HubState

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict | list | None = None, headers: dict | None = None) -> None:
        raw = json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _fault(self, after_commit: bool = False) -> bool:
        with self.state.lock:
            for f in self.state.faults:
                if f.times > 0 and f.path_contains in self.path and f.after_commit == after_commit:
                    f.times -= 1
                    break
            else:
                return False
        if f.drop_connection:
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        error = "injected fault"
        if f.echo_headers:
            error += f"; request headers were {dict(self.headers)}"
        self._send(f.status, {"error": error}, {"Retry-After": f.retry_after} if f.retry_after else None)
        return True

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _record(self, method: str) -> None:
        auth = self.headers.get("Authorization", "")
        self.state.requests.append((method, self.path, {"authorized": auth.startswith("Bearer ")}))

    def do_GET(self) -> None:  # noqa: N802
        self._record("GET")
        if self._fault():
            return
        parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
            self._revision_info(f"{parts[2]}/{parts[3]}", "/".join(parts[5:]))
            return
        if parts[:2] == ["api", "models"] and len(parts) == 5 and parts[4] == "refs":
            self._refs(f"{parts[2]}/{parts[3]}")
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            self._resolve_file(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head=False)
            return
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            snap = self._snapshot(f"{parts[2]}/{parts[3]}", parts[5])
            if snap is None:
                self._send(404, {"error": "Repository or revision not found"}, {"X-Error-Code": "RepoNotFound"})
                return
            self._send(200, [{"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                             for p, c in sorted(snap[1].items())])
            return
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = f"{parts[2]}/{parts[3]}"
            info = self.state.repos.get(repo)
            if info is None:
                self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return
            self._send(200, {"id": repo, "modelId": repo, "sha": info["sha"], "private": False,
                             "cardData": _card_data(info["files"].get("README.md")),
                             "siblings": [{"rfilename": p} for p in sorted(info["files"])]})
            return
        self._send(404, {"error": f"not implemented: GET {self.path}"})

    def do_HEAD(self) -> None:  # noqa: N802
        self._record("HEAD")
        if self._fault():
            return
        parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
        if len(parts) >= 5 and parts[2] == "resolve":
            self._resolve_file(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head=True)
            return
        self._send(404, {"error": f"not implemented: HEAD {self.path}"})

    def _snapshot(self, repo: str, revision: str) -> tuple[str, dict] | None:
        """(commit, files) a revision names: `main`, a tag or a commit sha."""
        info = self.state.repos.get(repo)
        if info is None:
            return None
        sha = info["sha"] if revision == "main" else info["tags"].get(revision, revision)
        files = info["files"] if sha == info["sha"] else info["snapshots"].get(sha)  # tests edit the head in place
        return None if files is None else (sha, files)

    def _revision_info(self, repo: str, revision: str) -> None:
        snap = self._snapshot(repo, revision)
        if snap is None:
            code = "RepoNotFound" if repo not in self.state.repos else "RevisionNotFound"
            self._send(404, {"error": f"{code}: {repo}@{revision}"}, {"X-Error-Code": code})
            return
        sha, files = snap
        siblings = []
        for p, c in sorted(files.items()):
            entry = {"rfilename": p, "size": len(c), "blobId": hashlib.sha1(c).hexdigest()}
            if p.endswith(self.state.lfs_suffixes):
                entry["lfs"] = {"sha256": hashlib.sha256(c).hexdigest(), "size": len(c), "pointerSize": 134}
            siblings.append(entry)
        self._send(200, {"id": repo, "modelId": repo, "sha": sha, "private": False, "siblings": siblings,
                         "cardData": _card_data(files.get("README.md"))})

    def _refs(self, repo: str) -> None:
        info = self.state.repos.get(repo)
        if info is None:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return
        self._send(200, {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": info["sha"]}],
                         "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in info["tags"].items()],
                         "converts": []})

    def _resolve_file(self, repo: str, revision: str, path: str, head: bool) -> None:
        snap = self._snapshot(repo, revision)
        if snap is None or path not in snap[1]:
            code = "RepoNotFound" if repo not in self.state.repos else (
                "RevisionNotFound" if snap is None else "EntryNotFound")
            self._send(404, {"error": f"{code}: {repo}@{revision}/{path}"}, {"X-Error-Code": code})
            return
        sha, content = snap[0], snap[1][path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("X-Repo-Commit", sha)
        self.send_header("ETag", f'"{hashlib.sha1(content).hexdigest()}"')
        if path.endswith(self.state.lfs_suffixes):
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(content).hexdigest()}"')
            self.send_header("X-Linked-Size", str(len(content)))
        self.end_headers()
        if not head:
            self.wfile.write(content)

    def do_POST(self) -> None:  # noqa: N802
        self._record("POST")
        body = self._body()
        if self._fault():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["api", "validate-yaml"]:
            try:
                yaml.safe_load(json.loads(body)["content"].split("---", 2)[1])
                self._send(200, {"errors": [], "warnings": []})
            except Exception as exc:  # noqa: BLE001
                self._send(400, {"errors": [{"message": str(exc)}]})
            return
        if parts == ["api", "repos", "create"]:
            req = json.loads(body)
            repo = f"{req.get('organization')}/{req['name']}" if req.get("organization") else req["name"]
            with self.state.lock:
                if repo in self.state.repos:
                    self._send(409, {"error": "You already created this model repo",
                                     "url": f"http://{self.headers.get('Host')}/{repo}"})
                    return
                sha = hashlib.sha1(repo.encode()).hexdigest()
                self.state.repos[repo] = {"files": {}, "commits": [], "sha": sha, "snapshots": {sha: {}}, "tags": {},
                                          "private": bool(req.get("private")) or req.get("visibility") == "private"}
            self._send(200, {"url": f"http://127.0.0.1/{repo}", "name": repo})
            return
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tag":
            repo, snap = f"{parts[2]}/{parts[3]}", self._snapshot(f"{parts[2]}/{parts[3]}", unquote("/".join(parts[5:])))
            if snap is None:
                self._send(404, {"error": f"no revision {'/'.join(parts[5:])} in {repo}"})
                return
            with self.state.lock:
                self.state.repos[repo]["tags"][json.loads(body)["tag"]] = snap[0]
            self._send(200, {})
            return
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "preupload":
            files = json.loads(body)["files"]
            mode = lambda path: "lfs" if path.endswith(self.state.lfs_suffixes) else "regular"  # noqa: E731
            self._send(200, {"files": [{"path": f["path"], "uploadMode": mode(f["path"]), "shouldIgnore": False}
                                       for f in files]})
            return
        if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            self._lfs_batch(f"{parts[0]}/{parts[1].removesuffix('.git')}", json.loads(body))
            return
        if parts[:1] == ["lfs-verify"] and len(parts) == 4:
            repo, oid = f"{parts[1]}/{parts[2]}", parts[3]
            req = json.loads(body)
            with self.state.lock:
                content = self.state.lfs.get(self.state.lfs_key(repo, oid))
            if content is None or len(content) != req.get("size") or req.get("oid") != oid:
                self._send(404, {"error": f"LFS object {oid} not found or of another size"})
                return
            self._send(200, {})
            return
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit":
            repo = f"{parts[2]}/{parts[3]}"
            with self.state.lock:
                self.state.in_flight_commits += 1
                self.state.max_in_flight_commits = max(self.state.max_in_flight_commits, self.state.in_flight_commits)
            try:
                self._commit(repo, body)
            finally:
                with self.state.lock:
                    self.state.in_flight_commits -= 1
            return
        self._send(404, {"error": f"not implemented: POST {self.path}"})

    def _lfs_batch(self, repo: str, req: dict) -> None:
        """Which objects the client must upload: those the store lacks, with upload and verify actions."""
        out = []
        for obj in req.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            with self.state.lock:
                have = self.state.lfs_key(repo, oid) in self.state.lfs
            entry = {"oid": oid, "size": size, "authenticated": True}
            if not have:
                base = f"http://{self.headers.get('Host')}"
                entry["actions"] = {"upload": {"href": f"{base}/lfs-upload/{repo}/{oid}", "header": {}},
                                    "verify": {"href": f"{base}/lfs-verify/{repo}/{oid}", "header": {}}}
            out.append(entry)
        self._send(200, {"transfer": "basic", "objects": out})

    def do_PUT(self) -> None:  # noqa: N802
        self._record("PUT")
        body = self._body()
        if self._fault():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:1] == ["lfs-upload"] and len(parts) == 4:
            repo, oid = f"{parts[1]}/{parts[2]}", parts[3]
            if hashlib.sha256(body).hexdigest() != oid:
                self._send(400, {"error": f"content does not match its oid {oid}"})
                return
            with self.state.lock:
                self.state.lfs[self.state.lfs_key(repo, oid)] = body
                self.state.lfs_uploads.append((repo, oid, len(body)))
            self._send(200, {})
            return
        self._send(404, {"error": f"not implemented: PUT {self.path}"})

    def _commit(self, repo: str, body: bytes) -> None:
        import time

        time.sleep(0.05)  # long enough for concurrent commits to overlap if they are allowed to
        info = self.state.repos.get(repo)
        if info is None:
            self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return
        header, files, deleted, inline = {}, {}, [], 0
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                v = item["value"]
                files[v["path"]] = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
                inline += len(files[v["path"]])
            elif item["key"] == "lfsFile":
                v = item["value"]
                with self.state.lock:
                    content = self.state.lfs.get(self.state.lfs_key(repo, v["oid"]))
                if content is None:
                    self._send(400, {"error": f"LFS file {v['path']} ({v['oid']}) was never uploaded"})
                    return
                files[v["path"]] = content
            elif item["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(item["value"]["path"])
        with self.state.lock:
            parent = header.get("parentCommit")
            if parent and parent != info["sha"]:
                self._send(412, {"error": "A commit has happened since. Please refresh and try again."})
                return
            for path in deleted:
                for name in [f for f in info["files"] if f == path or f.startswith(path.rstrip("/") + "/")]:
                    del info["files"][name]
            info["files"].update(files)
            self.state.inline_bytes[repo] = self.state.inline_bytes.get(repo, 0) + inline
            sha = hashlib.sha1(json.dumps([repo, len(info["commits"])]).encode()).hexdigest()
            info["sha"] = sha
            info["snapshots"][sha] = dict(info["files"])
            info["commits"].append({"summary": header.get("summary"), "description": header.get("description"),
                                    "files": sorted(files)})
        if self._fault(after_commit=True):
            return
        self._send(200, {"commitUrl": f"http://127.0.0.1/{repo}/commit/{sha}", "commitOid": sha, "success": True})


class HubServer:
    def __init__(self):
        self.state = HubState()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
