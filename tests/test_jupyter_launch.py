"""jupyter.sh: starts a real JupyterLab on loopback and proves that the token is enforced.

Note on ``/api``: jupyter_server 2.x serves ``GET /api`` without authentication on purpose (its
handler is marked ``@allow_unauthenticated``). jupyter.sh loads ``core.jupyter_api_lock``, which
puts an authenticated version handler in front, so ``/api`` too answers 403 without the token; the
tests check it together with ``/api/status`` and ``/api/kernels``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT_ROOT / "jupyter.sh"
TOKEN = "test-token-0123456789abcdef"
# A loopback-only opener: proxies from the environment must never see these requests.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="jupyter.sh is a bash script")


@dataclass
class Server:
    """A running jupyter.sh and where its output goes."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the launcher and the server printed so far."""
        return self.log.read_text(errors="replace")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    """Status code and body of a GET, with an optional token header; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    try:
        with OPENER.open(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def launcher_env(tmp_path: Path, token: str | None) -> dict[str, str]:
    """Environment with private Jupyter folders, the test's own Python, and the given token."""
    env = dict(os.environ)
    for name in ("CONFIG", "DATA", "RUNTIME"):
        folder = tmp_path / name.lower()
        folder.mkdir(exist_ok=True)
        env[f"JUPYTER_{name}_DIR"] = str(folder)
    env["PYTHON"] = sys.executable  # the interpreter running the tests is the installed one
    env.pop("JUPYTER_TOKEN", None)
    if token is not None:
        env["JUPYTER_TOKEN"] = token
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the launcher's whole process group (server and watcher), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def start(tmp_path: Path, token: str | None) -> Iterator[Server]:
    """Start jupyter.sh, wait until it answers and has printed its link, and always stop it."""
    port = free_port()
    log = tmp_path / "jupyter.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", str(SCRIPT), "--skip-install", "--no-browser", "--port", str(port), "--ip", "127.0.0.1",
             # Passed through after "--": a safety net that ends the server if a test run dies hard.
             "--", "--ServerApp.shutdown_no_activity_timeout=600"],
            cwd=tmp_path, env=launcher_env(tmp_path, token), stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    server = Server(process, port, log)
    try:
        deadline = time.monotonic() + 120
        while "JupyterLab is ready" not in server.output():
            if process.poll() is not None:
                pytest.fail(f"jupyter.sh exited with {process.returncode}:\n{server.output()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not become ready in time:\n{server.output()[-3000:]}")
            time.sleep(0.3)
        yield server
    finally:
        stop(process)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    """A server started with a known JUPYTER_TOKEN."""
    with start(tmp_path, TOKEN) as running:
        yield running


def test_token_is_required_and_the_link_carries_it(server: Server) -> None:
    status, body = get(server.base + "/api", TOKEN)
    assert status == 200 and set(json.loads(body)) == {"version"}
    assert get(server.base + "/api")[0] == 403  # locked by core.jupyter_api_lock, see module doc
    assert get(server.base + "/api", "wrong-token")[0] == 403

    assert get(server.base + "/api/status", TOKEN)[0] == 200
    assert get(server.base + "/api/status")[0] == 403
    assert get(server.base + "/api/status", "wrong-token")[0] == 403
    status, body = get(server.base + "/api/kernels", TOKEN)
    assert status == 200 and json.loads(body) == []
    assert get(server.base + "/api/kernels")[0] == 403

    assert f"http://127.0.0.1:{server.port}/lab?token={TOKEN}" in server.output()


def test_token_is_not_on_the_command_line(server: Server) -> None:
    cmdline = Path(f"/proc/{server.process.pid}/cmdline")
    if not cmdline.exists():
        pytest.skip("no /proc on this system")
    args = cmdline.read_bytes().decode(errors="replace")
    assert "jupyterlab" in args and "port_retries=0" in args and "shutdown_no_activity_timeout=600" in args
    assert TOKEN not in args


def test_generated_token_when_none_is_given(tmp_path: Path) -> None:
    with start(tmp_path, None) as running:
        marker = f"http://127.0.0.1:{running.port}/lab?token="
        # The launcher's banner line, not the server's own log line (which shows the token as "...").
        line = next(line for line in running.output().splitlines() if line.startswith("    " + marker))
        token = line.split("token=", 1)[1].strip()
        assert len(token) >= 32
        assert get(running.base + "/api/status", token)[0] == 200
        assert get(running.base + "/api/status")[0] == 403


def test_empty_token_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--skip-install", "--no-browser", "--port", str(free_port())],
                          env=launcher_env(tmp_path, ""), capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "JUPYTER_TOKEN is set but empty" in done.stderr
    assert "Starting JupyterLab" not in done.stdout


def test_help_explains_the_options() -> None:
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for text in ("--port", "--ip", "0.0.0.0", "VastAI", "--no-browser", "--skip-install", "JUPYTER_TOKEN"):
        assert text in done.stdout


@pytest.mark.parametrize("args", [["--port", "http"], ["--port", "70000"], ["--bogus"]])
def test_bad_arguments_are_refused(args: list[str]) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "jupyter.sh:" in done.stderr
