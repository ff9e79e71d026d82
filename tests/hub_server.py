"""A loopback Hugging Face Hub for tests: the HTTP endpoints huggingface_hub 2.x calls, on disk.

Implements repo creation, repo info, tree listing, paths-info, branches, the upload protocol
(preupload → LFS batch / PUT / verify → ndjson commit, plus validate-yaml) and the resolve
endpoint with byte ranges, which is what ``HfApi.create_commit`` and ``HfFileSystem`` use with
``HF_HUB_DISABLE_XET=1``. Each branch is a plain folder (``<root>/<type>s/<org>/<name>/<branch>``),
so what was uploaded can be read back directly (e.g. with ``datasets.load_dataset``).

It is strict where a client bug would matter: writes need ``Authorization: Bearer <token>``,
uploaded LFS objects must match their sha256 and size, a commit may only reference LFS objects
that were uploaded, and a ``parentCommit`` that is not the branch head is a 412. Every request is
recorded in ``requests`` (method, path, headers with lower-case names) so tests can check what the client sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = ("models", "datasets", "spaces")
LFS_PATTERN = re.compile(r".*\.(parquet|arrow|bin|safetensors|zip|gz|zst)$")


def _dir_entry(rel: str) -> dict[str, Any]:
    """A tree/paths-info entry for a folder (the Hub gives folders an oid; any stable one does here)."""
    return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": 0, "path": rel}


@dataclass
class Repo:
    repo_type: str  # "datasets"
    repo_id: str
    private: bool
    heads: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: list[dict[str, Any]] = field(default_factory=list)


class HubState:
    def __init__(self, root: Path, token: str | None) -> None:
        self.root = root
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_dir = root / "_lfs"
        self.lfs_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def branch_dir(self, repo: Repo, branch: str) -> Path:
        return self.root / repo.repo_type / repo.repo_id / branch

    def new_commit(self, repo: Repo, branch: str, summary: str) -> str:
        prev = repo.heads.get(branch, "")
        sha = hashlib.sha1(f"{prev}|{summary}|{time.time_ns()}|{len(repo.commits)}".encode()).hexdigest()
        repo.heads[branch] = sha
        repo.commits.append({"sha": sha, "branch": branch, "summary": summary})
        return sha


def _url(address: Any) -> str:
    """The base URL of a server listening on a (host, port, ...) address."""
    host, port = address[:2]
    return f"http://{host}:{port}"


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, code: int, message: str) -> None:
        self._json(code, {"error": message}, {"X-Error-Message": message})

    def _authorized(self) -> bool:
        if self.state.token is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.state.token}":
            return True
        self._error(401, "Invalid credentials in Authorization header")
        return False

    def _base(self) -> str:
        return _url(self.server.server_address)

    def _repo(self, repo_type: str, repo_id: str) -> Repo | None:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None:
            self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo

    def _branch(self, repo: Repo, rev: str) -> str | None:
        rev = unquote(rev)
        if rev in repo.heads:
            return rev
        for b, sha in repo.heads.items():
            if sha == rev:
                return b
        self._json(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        return None

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
        self.state.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        with self.state.lock:
            self._route(path, query)

    do_GET = do_POST = do_PUT = do_HEAD = _dispatch

    # -- routes ---------------------------------------------------------------------------------
    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/revision/(.+))?", path)
        if m:
            return self._repo_info(m.group(1), m.group(2), m.group(3) or "main")
        m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
        if m:
            return self._tree(m.group(1), m.group(2), m.group(3), (m.group(4) or "").strip("/"), query)
        m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/paths-info/([^/]+)", path)
        if m and self.command == "POST":
            return self._paths_info(m.group(1), m.group(2), m.group(3))
        m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/preupload/([^/]+)", path)
        if m and self.command == "POST":
            return self._preupload(m.group(1), m.group(2), m.group(3))
        m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/commit/([^/]+)", path)
        if m and self.command == "POST":
            return self._commit(m.group(1), m.group(2), m.group(3))
        m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/branch/([^/]+)", path)
        if m and self.command == "POST":
            return self._create_branch(m.group(1), m.group(2), unquote(m.group(3)))
        if path == "/api/repos/create" and self.command == "POST":
            return self._create_repo()
        if path == "/api/validate-yaml" and self.command == "POST":
            return self._validate_yaml()
        if path == "/api/whoami-v2":
            return self._json(200, {"type": "user", "name": "cf-test", "orgs": []})
        m = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if m and self.command == "POST":
            return self._lfs_batch()
        m = re.fullmatch(r"/_lfs/upload/([0-9a-f]{64})", path)
        if m and self.command == "PUT":
            return self._lfs_put(m.group(1))
        m = re.fullmatch(r"/_lfs/verify/([0-9a-f]{64})", path)
        if m and self.command == "POST":
            return self._lfs_verify(m.group(1))
        m = re.fullmatch(r"/(datasets/|spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and self.command in ("GET", "HEAD"):
            rtype = (m.group(1) or "models/").rstrip("/")
            rtype = rtype if rtype.endswith("s") else rtype + "s"
            return self._resolve(rtype, m.group(2), m.group(3), unquote(m.group(4)))
        self._error(404, f"loopback hub: no route for {self.command} {path}")

    def _create_repo(self) -> None:
        if not self._authorized():
            return
        body = json.loads(self._body() or b"{}")
        repo_type = (body.get("type") or "model") + "s"
        repo_id = f"{body.get('organization')}/{body['name']}"
        url = f"{self._base()}/{'' if repo_type == 'models' else repo_type + '/'}{repo_id}"
        if (repo_type, repo_id) in self.state.repos:
            return self._json(409, {"error": "You already created this repo", "url": url})
        repo = Repo(
            repo_type, repo_id, private=body.get("visibility") == "private" or bool(body.get("private"))
        )
        self.state.repos[(repo_type, repo_id)] = repo
        d = self.state.branch_dir(repo, "main")
        d.mkdir(parents=True)
        (d / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
        self.state.new_commit(repo, "main", "initial commit")
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _create_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        if not self._authorized() or (repo := self._repo(repo_type, repo_id)) is None:
            return
        if branch in repo.heads:
            return self._error(409, f"Reference already exists: refs/heads/{branch}")
        body = json.loads(self._body() or b"{}")
        start = self._branch(repo, body.get("startingPoint") or "main")
        if start is None:
            return
        shutil.copytree(self.state.branch_dir(repo, start), self.state.branch_dir(repo, branch))
        repo.heads[branch] = repo.heads[start]
        self._json(200, {})

    def _files(self, repo: Repo, branch: str) -> list[tuple[str, Path]]:
        d = self.state.branch_dir(repo, branch)
        return sorted((p.relative_to(d).as_posix(), p) for p in d.rglob("*") if p.is_file())

    def _entry(self, rel: str, p: Path) -> dict[str, Any]:
        data = p.read_bytes()
        e: dict[str, Any] = {"type": "file", "oid": _git_blob_sha(data), "size": len(data), "path": rel}
        if LFS_PATTERN.match(rel):
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return e

    def _repo_info(self, repo_type: str, repo_id: str, rev: str) -> None:
        if (repo := self._repo(repo_type, repo_id)) is None or (branch := self._branch(repo, rev)) is None:
            return
        if repo.private and not self._authorized():
            return
        self._json(
            200,
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": repo.heads[branch],
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": rel} for rel, _ in self._files(repo, branch)],
            },
        )

    def _tree(self, repo_type: str, repo_id: str, rev: str, sub: str, query: dict[str, list[str]]) -> None:
        if (repo := self._repo(repo_type, repo_id)) is None or (branch := self._branch(repo, rev)) is None:
            return
        if repo.private and not self._authorized():
            return
        sub = unquote(sub)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        base = self.state.branch_dir(repo, branch)
        top = base / sub if sub else base
        if not top.is_dir():
            return self._json(404, {"error": f"{sub} does not exist"}, {"X-Error-Code": "EntryNotFound"})
        out: list[dict[str, Any]] = []
        for p in sorted(top.rglob("*") if recursive else top.iterdir()):
            rel = p.relative_to(base).as_posix()
            if p.is_dir():
                out.append(_dir_entry(rel))
            else:
                out.append(self._entry(rel, p))
        self._json(200, out)

    def _paths_info(self, repo_type: str, repo_id: str, rev: str) -> None:
        if (repo := self._repo(repo_type, repo_id)) is None or (branch := self._branch(repo, rev)) is None:
            return
        raw = self._body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(raw).get("paths", [])
        else:
            paths = parse_qs(raw.decode()).get("paths", [])
        base = self.state.branch_dir(repo, branch)
        out = []
        for rel in paths:
            p = base / rel.strip("/")
            if p.is_file():
                out.append(self._entry(rel.strip("/"), p))
            elif p.is_dir():
                out.append(_dir_entry(rel))
        self._json(200, out)

    def _preupload(self, repo_type: str, repo_id: str, rev: str) -> None:
        if not self._authorized() or (repo := self._repo(repo_type, repo_id)) is None:
            return
        if self._branch(repo, rev) is None:
            return
        files = json.loads(self._body())["files"]
        self._json(
            200,
            {
                "files": [
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if LFS_PATTERN.match(f["path"]) else "regular",
                        "shouldIgnore": False,
                    }
                    for f in files
                ]
            },
        )

    def _validate_yaml(self) -> None:
        import yaml

        body = json.loads(self._body())
        m = re.match(r"^---\n(.*?)\n---\n", body.get("content", ""), flags=re.S)
        if not m:
            return self._json(
                200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
            )
        try:
            meta = yaml.safe_load(m.group(1))
        except yaml.YAMLError as e:
            return self._json(400, {"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []})
        if not isinstance(meta, dict):
            return self._json(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        self._json(200, {"errors": [], "warnings": []})

    def _lfs_batch(self) -> None:
        if not self._authorized():
            return
        body = json.loads(self._body())
        objects = []
        for o in body["objects"]:
            obj: dict[str, Any] = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if not (self.state.lfs_dir / o["oid"]).exists():
                obj["actions"] = {
                    "upload": {"href": f"{self._base()}/_lfs/upload/{o['oid']}", "header": {}},
                    "verify": {"href": f"{self._base()}/_lfs/verify/{o['oid']}", "header": {}},
                }
            objects.append(obj)
        self._json(
            200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}
        )

    def _lfs_put(self, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "uploaded content does not match its oid")
        tmp = self.state.lfs_dir / f".{oid}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.state.lfs_dir / oid)
        self._send(200)

    def _lfs_verify(self, oid: str) -> None:
        body = json.loads(self._body())
        p = self.state.lfs_dir / oid
        if not p.exists() or p.stat().st_size != body.get("size"):
            return self._error(404, "object not found or wrong size")
        self._json(200, {})

    def _commit(self, repo_type: str, repo_id: str, rev: str) -> None:
        if not self._authorized() or (repo := self._repo(repo_type, repo_id)) is None:
            return
        if (branch := self._branch(repo, rev)) is None:
            return
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return self._error(400, "commit payload must start with a header")
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent and parent != repo.heads[branch]:
            return self._error(412, "A commit has happened since. Please refresh and try again.")
        base = self.state.branch_dir(repo, branch)
        staged: list[tuple[str, str, Any]] = []
        for item in lines[1:]:
            key, v = item["key"], item["value"]
            rel = v["path"].strip("/")
            if ".." in rel.split("/"):
                return self._error(400, f"invalid path {rel}")
            if key == "file":
                staged.append(("write", rel, base64.b64decode(v["content"])))
            elif key == "lfsFile":
                blob = self.state.lfs_dir / v["oid"]
                if not blob.exists():
                    return self._error(400, f"LFS object {v['oid']} for {rel} was never uploaded")
                staged.append(("copy", rel, blob))
            elif key == "deletedFile":
                staged.append(("delete", rel, None))
            elif key == "deletedFolder":
                staged.append(("rmtree", rel, None))
            else:
                return self._error(400, f"unsupported commit operation {key}")
        for op, rel, arg in staged:
            target = base / rel
            if op in ("write", "copy"):
                target.parent.mkdir(parents=True, exist_ok=True)
                if op == "write":
                    target.write_bytes(arg)
                else:
                    shutil.copyfile(arg, target)
            elif op == "delete":
                target.unlink(missing_ok=True)
            else:
                shutil.rmtree(target, ignore_errors=True)
        sha = self.state.new_commit(repo, branch, header.get("summary", ""))
        prefix = "" if repo_type == "models" else repo_type + "/"
        self._json(
            200,
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self._base()}/{prefix}{repo_id}/commit/{sha}",
            },
        )

    def _resolve(self, repo_type: str, repo_id: str, rev: str, rel: str) -> None:
        if (repo := self._repo(repo_type, repo_id)) is None or (branch := self._branch(repo, rev)) is None:
            return
        if repo.private and not self._authorized():
            return
        p = self.state.branch_dir(repo, branch) / rel
        if not p.is_file():
            return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        data = p.read_bytes()
        etag = hashlib.sha256(data).hexdigest() if LFS_PATTERN.match(rel) else _git_blob_sha(data)
        headers = {
            "ETag": f'"{etag}"',
            "X-Repo-Commit": repo.heads[branch],
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if LFS_PATTERN.match(rel):
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(data))
        rng = self.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())):
            if m.group(1):
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else len(data) - 1
            else:  # suffix range: the last N bytes
                start, end = max(0, len(data) - int(m.group(2))), len(data) - 1
            end = min(end, len(data) - 1)
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start : end + 1], headers)
        self._send(200, data, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState


class LoopbackHub:
    """``with LoopbackHub(root, token=...) as hub:`` serves at ``hub.endpoint`` until the block ends."""

    def __init__(self, root: Path, *, token: str | None = None, port: int = 0) -> None:
        self.state = HubState(Path(root), token)
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.state = self.state
        self.thread = threading.Thread(target=self.server.serve_forever, name="loopback-hub", daemon=True)

    @property
    def endpoint(self) -> str:
        return _url(self.server.server_address)

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, repo_type: str = "datasets") -> str:
        """Seed a repo with files on ``main`` (for read tests); returns its head commit."""
        repo = Repo(repo_type, repo_id, private=False)
        self.state.repos[(repo_type, repo_id)] = repo
        d = self.state.branch_dir(repo, "main")
        for rel, data in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(data)
        return self.state.new_commit(repo, "main", "seed")

    def files(self, repo_id: str, branch: str = "main", repo_type: str = "datasets") -> Path:
        """The folder holding ``branch`` of ``repo_id`` as uploaded."""
        return self.state.branch_dir(self.state.repos[(repo_type, repo_id)], branch)

    def __enter__(self) -> LoopbackHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """``python tests/hub_server.py ROOT [--port N] [--token T]``: serve until interrupted."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token")
    a = ap.parse_args()
    hub = LoopbackHub(Path(a.root), token=a.token, port=a.port)
    print(hub.endpoint, flush=True)
    hub.server.serve_forever()


if __name__ == "__main__":
    main()
