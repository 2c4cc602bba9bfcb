"""Loopback HTTP servers for the download and upload tests: one way to start and stop them.

``serving(handler)`` runs a request handler class on 127.0.0.1 (a free port) in a daemon thread and
always shuts it down. ``hub_files_handler`` imitates the one part of the Hugging Face Hub that
downloads use: ``/<repo>/resolve/<revision>/<file>`` answered with the headers huggingface_hub reads.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1; yield the base URL (``http://127.0.0.1:PORT``); always stop."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def hub_files_handler(files: Mapping[str, bytes], seen: list[tuple[str, str, str | None]],
                      commit: str = "a" * 40) -> type[BaseHTTPRequestHandler]:
    """A Hub ``/resolve/`` imitation serving ``files`` (URL path -> bytes); each request is appended to
    ``seen`` as (method, path, Authorization header)."""

    class HubFiles(BaseHTTPRequestHandler):
        timeout = 10

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.do_GET(head=True)

        def do_GET(self, head: bool = False):
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            data = files.get(self.path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

    return HubFiles
