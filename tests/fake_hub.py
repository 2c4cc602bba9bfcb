"""A loopback imitation of the Hugging Face Hub endpoints huggingface_hub 2.x calls to upload.

Endpoints (read from huggingface_hub's ``hf_api.py``, ``_commit_api.py`` and ``lfs.py``):

- ``POST /api/repos/create``: JSON ``{name, organization, visibility, type}``; answers ``{url}``
  (409 with ``{error, url}`` when the repo exists, which ``exist_ok=True`` accepts).
- ``POST /api/validate-yaml``: the README's front matter; answers ``{errors, warnings}``.
- ``POST /api/{type}s/{owner}/{name}/preupload/{revision}``: ``{files: [{path, sample, size}]}``.
  Like the real Hub we answer ``"lfs"`` for binary files (weights, images) and anything over
  10 MB, ``"regular"`` for text (README.md, captions, JSON, TOML).
- ``POST /{prefix}{owner}/{name}.git/info/lfs/objects/batch`` (prefix ``""`` for models,
  ``datasets/`` for datasets): the git-LFS batch API. We answer the ``basic`` transfer with an
  ``upload`` action to our "storage" URL (a pre-signed-looking URL, as S3 gives) and a ``verify``
  action back on the Hub; objects already stored get no actions, so the client skips them.
- ``PUT /lfs-storage/{oid}?X-Amz-Signature=...``: stores the bytes if their sha256 is the oid.
  Like S3 with a pre-signed URL, it refuses a request that also carries an Authorization header.
- ``POST /{prefix}{owner}/{name}.git/info/lfs/objects/verify``: ``{oid, size}`` of a stored object.
- ``POST /api/{type}s/{owner}/{name}/commit/{revision}``: NDJSON, a ``header`` line, then ``file``
  lines (base64 content) and ``lfsFile`` lines (sha256 oid of an object in storage); answers
  ``{commitUrl, commitOid}``.

huggingface_hub 2.4 picks the transfer itself: with ``hf_xet`` installed it always sends LFS files
through Xet storage (the batch call above is never made); ``HF_HUB_DISABLE_XET`` makes it use the
plain LFS path, which :func:`allow_hub_requests` does, since this fake has no Xet CAS server.

Only ``WRITE_TOKEN`` may write; ``READ_TOKEN`` gets 403 like a read-only token on the real Hub.
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import PurePosixPath

from tests.loopback import serving

WRITE_TOKEN = "hf_WRITEsecret_0123456789abcdef"
READ_TOKEN = "hf_READonly_fedcba9876543210"
USER = "artist"
LFS_SUFFIXES = {".safetensors", ".ckpt", ".bin", ".pt", ".png", ".jpg", ".jpeg", ".webp", ".zip"}
LFS_MIN_SIZE = 10 * 1024 * 1024  # the real Hub sends anything larger than 10 MB to LFS
STORAGE = "/lfs-storage/"


@dataclass
class HubState:
    """What the fake Hub saw and holds."""

    base: str = ""
    # (method, path with query, headers with lower-case names)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    creates: list[dict] = field(default_factory=list)
    repos: set[str] = field(default_factory=set)  # "model:owner/name"
    # {repo, type, summary, files: {path: bytes} (all files), inline: [paths sent in the commit],
    #  lfs: {path: oid} (files the commit referred to by sha256), other_keys: [any other line kinds]}
    commits: list[dict] = field(default_factory=list)
    validated_yaml: list[str] = field(default_factory=list)
    lfs_batches: list[dict] = field(default_factory=list)  # the batch requests' JSON
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # LFS storage: sha256 hex -> bytes
    verified: list[str] = field(default_factory=list)  # oids the client asked to verify


def upload_mode(path: str, size: int) -> str:
    """``"lfs"`` or ``"regular"``, as the real Hub decides for a file of this name and size."""
    return "lfs" if PurePosixPath(path).suffix.lower() in LFS_SUFFIXES or size > LFS_MIN_SIZE else "regular"


def _repo_route(path: str) -> tuple[str, str, list[str]] | None:
    """``(type, owner/name, rest)`` of ``/api/{type}s/{owner}/{name}/...`` or ``/[{type}s/]{owner}/{name}.git/...``."""
    parts = path.split("?")[0].strip("/").split("/")
    if len(parts) >= 4 and parts[0] == "api" and parts[1] in ("models", "datasets", "spaces"):
        return parts[1].removesuffix("s"), f"{parts[2]}/{parts[3]}", parts[4:]
    kind = parts[0].removesuffix("s") if parts[0] in ("datasets", "spaces") else "model"
    parts = parts[1:] if kind != "model" else parts
    if len(parts) >= 3 and parts[1].endswith(".git"):
        return kind, f"{parts[0]}/{parts[1].removesuffix('.git')}", parts[2:]
    return None


def _handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        timeout = 10

        def log_message(self, *args):  # quiet test output
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def _json(self, body: dict, code: int = 200, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> None:
            state.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

        def _authorised(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {WRITE_TOKEN}"

        def do_GET(self):
            self._record()  # e.g. Xet's write-token call: this fake offers no Xet and no downloads
            self._json({"error": f"no such endpoint {self.path}"}, 404)

        def do_PUT(self):
            body = self._body()
            self._record()
            if not self.path.startswith(STORAGE):
                return self._json({"error": f"no such endpoint {self.path}"}, 404)
            oid = self.path.split("?")[0].removeprefix(STORAGE)
            if "Authorization" in self.headers:  # S3: a pre-signed URL is the only credential allowed
                return self._json({"error": "Only one auth mechanism allowed"}, 400)
            if hashlib.sha256(body).hexdigest() != oid:
                return self._json({"error": "BadDigest: the content does not match the oid"}, 400)
            state.lfs_objects[oid] = body
            self._json({}, headers={"ETag": f'"{oid[:32]}"'})

        def do_POST(self):
            body = self._body()
            self._record()
            if self.path == "/api/repos/create":
                return self._create(json.loads(body))
            if self.path == "/api/validate-yaml":
                state.validated_yaml.append(json.loads(body)["content"])
                return self._json({"errors": [], "warnings": []})
            kind, repo, rest = _repo_route(self.path) or ("", "", [""])
            action = rest[0] if rest[0] in ("preupload", "commit") else "/".join(rest)  # rest[1] is the revision
            if action not in ("preupload", "commit", "info/lfs/objects/batch", "info/lfs/objects/verify"):
                return self._json({"error": f"no such endpoint {self.path}"}, 404)
            if not self._authorised():
                return self._json({"error": "Invalid credentials"}, 401)
            if f"{kind}:{repo}" not in state.repos:
                return self._json({"error": "Repository not found"}, 404)
            if action == "preupload":
                return self._json({"files": [{"path": f["path"], "uploadMode": upload_mode(f["path"], f["size"]),
                                              "shouldIgnore": False} for f in json.loads(body)["files"]]})
            if action == "commit":
                return self._commit(kind, repo, body)
            if action.endswith("batch"):
                return self._batch(kind, repo, json.loads(body))
            return self._verify(json.loads(body))

        def _create(self, payload: dict) -> None:
            if not self._authorised():
                return self._json({"error": "You don't have the rights to create a repo under this namespace"}, 403)
            state.creates.append(payload)
            kind = payload.get("type") or "model"
            repo = f"{payload.get('organization') or USER}/{payload['name']}"
            url = f"{state.base}/{'' if kind == 'model' else kind + 's/'}{repo}"
            if f"{kind}:{repo}" in state.repos:
                return self._json({"error": "You already created this repo", "url": url}, 409)
            state.repos.add(f"{kind}:{repo}")
            self._json({"url": url, "name": repo})

        def _batch(self, kind: str, repo: str, payload: dict) -> None:
            state.lfs_batches.append(payload)
            if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
                return self._json({"message": "only basic uploads are offered here"}, 422)
            prefix = "" if kind == "model" else f"{kind}s/"
            objects = []
            for item in payload["objects"]:
                entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
                if item["oid"] not in state.lfs_objects:  # already stored: no actions, the client skips it
                    entry["actions"] = {
                        "upload": {"href": f"{state.base}{STORAGE}{item['oid']}?X-Amz-Signature=fake-signature",
                                   "header": {}},
                        "verify": {"href": f"{state.base}/{prefix}{repo}.git/info/lfs/objects/verify"}}
                objects.append(entry)
            self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                       headers={"Content-Type": "application/vnd.git-lfs+json"})

        def _verify(self, payload: dict) -> None:
            stored = state.lfs_objects.get(payload["oid"])
            if stored is None or len(stored) != payload["size"]:
                return self._json({"message": f"object {payload['oid']} not found in storage"}, 404)
            state.verified.append(payload["oid"])
            self._json({"success": True})

        def _commit(self, kind: str, repo: str, body: bytes) -> None:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(item["value"] for item in lines if item["key"] == "header")
            inline = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                      for item in lines if item["key"] == "file"}
            lfs = {item["value"]["path"]: item["value"]["oid"] for item in lines if item["key"] == "lfsFile"}
            missing = [path for path, oid in lfs.items() if oid not in state.lfs_objects]
            if missing:  # the real Hub rejects pointers to objects its storage does not hold
                return self._json({"error": f"LFS pointer to a missing object: {', '.join(missing)}"}, 422)
            others = [item["key"] for item in lines if item["key"] not in ("header", "file", "lfsFile")]
            state.commits.append({"repo": repo, "type": kind, "summary": header["summary"], "inline": sorted(inline),
                                  "lfs": lfs, "other_keys": others,
                                  "files": {**inline, **{path: state.lfs_objects[oid] for path, oid in lfs.items()}}})
            self._json({"commitUrl": f"{state.base}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40})

    return Handler


@contextmanager
def fake_hub() -> Iterator[HubState]:
    """Run the fake Hub on 127.0.0.1 for the block; ``state.base`` is its endpoint."""
    state = HubState()
    with serving(_handler(state)) as base:
        state.base = base
        yield state


def allow_hub_requests(monkeypatch, xet: bool = False) -> None:
    """Undo the suite-wide offline mode for one test (huggingface_hub reads it at import).

    Xet stays off unless asked: huggingface_hub would otherwise send LFS files to a Xet CAS server,
    which this fake does not imitate, instead of the LFS batch API it does.
    """
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", not xet)
