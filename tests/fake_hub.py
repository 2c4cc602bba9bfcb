"""A loopback imitation of the Hugging Face Hub endpoints huggingface_hub 2.x calls to upload.

Endpoints (read from huggingface_hub's ``hf_api.py`` / ``_commit_api.py``):

- ``POST /api/repos/create``: JSON ``{name, organization, visibility, type}``; answers ``{url}``
  (409 with ``{error, url}`` when the repo exists, which ``exist_ok=True`` accepts).
- ``POST /api/validate-yaml``: the README's front matter; answers ``{errors, warnings}``.
- ``POST /api/{type}s/{owner}/{name}/preupload/{revision}``: ``{files: [{path, sample, size}]}``;
  we answer ``uploadMode: "regular"`` for every file, so the content arrives base64-inline in the
  commit (the real Hub says "lfs" for large or binary files and the client then uses Xet/LFS).
- ``POST /api/{type}s/{owner}/{name}/commit/{revision}``: NDJSON, a ``header`` line then one
  ``file`` line per file; answers ``{commitUrl, commitOid}``.

Only ``WRITE_TOKEN`` may write; ``READ_TOKEN`` gets 403 like a read-only token on the real Hub.
"""
from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WRITE_TOKEN = "hf_WRITEsecret_0123456789abcdef"
READ_TOKEN = "hf_READonly_fedcba9876543210"
USER = "artist"


@dataclass
class HubState:
    """What the fake Hub saw and holds."""

    base: str = ""
    # (method, path, headers with lower-case names)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    creates: list[dict] = field(default_factory=list)
    repos: set[str] = field(default_factory=set)  # "model:owner/name"
    commits: list[dict] = field(default_factory=list)  # {repo, type, summary, files: {path: bytes}}
    validated_yaml: list[str] = field(default_factory=list)


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

        def _json(self, body: dict, code: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _headers(self) -> dict[str, str]:
            return {key.lower(): value for key, value in self.headers.items()}

        def _authorised(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {WRITE_TOKEN}"

        def do_GET(self):
            state.requests.append(("GET", self.path, self._headers()))
            self._json({"error": "Repository not found"}, 404)

        def do_POST(self):
            body = self._body()
            state.requests.append(("POST", self.path, self._headers()))
            parts = self.path.split("?")[0].strip("/").split("/")
            if self.path == "/api/repos/create":
                return self._create(json.loads(body))
            if self.path == "/api/validate-yaml":
                state.validated_yaml.append(json.loads(body)["content"])
                return self._json({"errors": [], "warnings": []})
            if len(parts) == 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
                kind, repo = parts[1].removesuffix("s"), f"{parts[2]}/{parts[3]}"
                if not self._authorised():
                    return self._json({"error": "Invalid credentials"}, 401)
                if f"{kind}:{repo}" not in state.repos:
                    return self._json({"error": "Repository not found"}, 404)
                if parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in files]})
                return self._commit(kind, repo, body)
            self._json({"error": f"no such endpoint {self.path}"}, 404)

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

        def _commit(self, kind: str, repo: str, body: bytes) -> None:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(item["value"] for item in lines if item["key"] == "header")
            files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                     for item in lines if item["key"] == "file"}
            others = [item["key"] for item in lines if item["key"] not in ("header", "file")]
            state.commits.append({"repo": repo, "type": kind, "summary": header["summary"], "files": files,
                                  "other_keys": others})
            self._json({"commitUrl": f"{state.base}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40})

    return Handler


@contextmanager
def fake_hub() -> Iterator[HubState]:
    """Run the fake Hub on 127.0.0.1 for the block; ``state.base`` is its endpoint."""
    state = HubState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def allow_hub_requests(monkeypatch) -> None:
    """Undo the suite-wide offline mode for one test (huggingface_hub reads it at import)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
