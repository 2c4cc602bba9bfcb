"""Drive the notebooks in a real JupyterLab with Debian's Chromium (Playwright); used by tests and a benchmark.

``lab_server`` starts ``jupyter.sh`` (the command users run) on loopback, a free port and a known token,
with private Jupyter folders and settings that keep popups and autosave away; ``chromium_page`` opens
the system Chromium through Playwright (never a downloaded browser); ``run_notebook`` opens a notebook,
waits for its kernel, runs every cell from the Run menu and waits until the panels are drawn.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.test_jupyter_launch import stop as stop_launcher

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]
# JupyterLab user settings written before the server starts: no news/update popup, no autosave (it
# would write outputs into the committed notebooks), and every cell attached to the page so that
# panels far down the notebook are in the DOM too.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                      "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook tab on show
THEME_PLUGIN = "@jupyterlab/apputils-extension:themes"
LIGHT_THEME, DARK_THEME = "JupyterLab Light", "JupyterLab Dark"


def find_chromium() -> str:
    """The system Chromium: ``$CHROMIUM_PATH`` or ``chromium`` on PATH (installed by ``installer.py --dev``)."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from installer_lib.browser import find_chromium as find

    found = find()
    if not found:
        raise RuntimeError("No Chromium found for the browser test. Run `python3 installer.py --dev` (it installs "
                           "Debian's chromium), or set CHROMIUM_PATH to a Chromium or Chrome binary.")
    return found


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    """A running JupyterLab (started through jupyter.sh) and how to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    log: Path

    def url(self, path: str) -> str:
        """Full address of ``path`` on this server, logging in with the token."""
        joiner = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}{path}{joiner}token={self.token}"

    def output(self) -> str:
        """What the launcher and the server printed so far."""
        return self.log.read_text(errors="replace")


def _write_settings(config_dir: Path) -> None:
    settings = config_dir / "lab" / "user-settings"
    for name, values in LAB_SETTINGS.items():
        target = settings / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values), encoding="utf-8")


@contextmanager
def lab_server(scratch: Path, env: Mapping[str, str] | None = None, timeout: float = 120) -> Iterator[LabServer]:
    """Start ``jupyter.sh`` on the project folder with private Jupyter folders under ``scratch``; always stop it."""
    token = "lab-browser-" + os.urandom(12).hex()
    environ = dict(os.environ)
    environ.update(env or {})
    for name in ("CONFIG", "DATA", "RUNTIME"):
        folder = scratch / f"jupyter_{name.lower()}"
        folder.mkdir(parents=True, exist_ok=True)
        environ[f"JUPYTER_{name}_DIR"] = str(folder)
    environ.pop("JUPYTERLAB_SETTINGS_DIR", None)
    environ.pop("JUPYTERLAB_WORKSPACES_DIR", None)
    _write_settings(Path(environ["JUPYTER_CONFIG_DIR"]))
    environ["PYTHON"] = sys.executable  # kernels run in the Python that runs the tests
    environ["JUPYTER_TOKEN"] = token
    port = free_port()
    log = scratch / "jupyterlab.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", str(PROJECT_ROOT / "jupyter.sh"), "--skip-install", "--no-browser", "--port", str(port),
             "--ip", "127.0.0.1", "--", "--ServerApp.shutdown_no_activity_timeout=600"],
            cwd=scratch, env=environ, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = LabServer(process, port, token, log)
    try:
        deadline = time.monotonic() + timeout
        while "JupyterLab is ready" not in server.output():
            if process.poll() is not None:
                raise RuntimeError(f"jupyter.sh exited with {process.returncode}:\n{server.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start in {timeout:.0f} s:\n{server.output()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        stop_launcher(process)


@contextmanager
def set_theme(server: LabServer, theme: str) -> None:
    """Store ``theme`` in JupyterLab's user settings (as Settings > Theme does); pages loaded next use it."""
    import urllib.request

    body = json.dumps({"raw": json.dumps({"theme": theme})}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/lab/api/settings/{THEME_PLUGIN}",
                                     data=body, method="PUT",
                                     headers={"Authorization": f"token {server.token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        if answer.status not in (200, 204):
            raise RuntimeError(f"JupyterLab refused the theme setting: HTTP {answer.status}")


def shown_theme(page: Any) -> str:
    """The theme the page has applied (JupyterLab marks it on <body>)."""
    return page.evaluate("() => document.body.dataset.jpThemeName || ''")


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in the headless system Chromium; browser console errors are kept in ``page.errors``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.errors = []  # type: ignore[attr-defined]
            page.on("pageerror", lambda error: page.errors.append(str(error)))  # type: ignore[attr-defined]
            yield page
        finally:
            browser.close()


def wait_for_idle_kernel(page: Any, timeout_ms: float) -> None:
    """Wait until the status bar names the notebook's kernel as idle (before that, Run All is lost)."""
    page.wait_for_function(
        """() => { const bar = document.querySelector('#jp-main-statusbar');
                  const text = bar ? bar.innerText : '';
                  return /\\|\\s*Idle/.test(text) && !text.includes('No Kernel'); }""",
        timeout=timeout_ms)


def run_all_cells(page: Any) -> None:
    """Run > Run All Cells, through the menu bar as a user does."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def panel_titles(page: Any) -> list[str]:
    """The <h3> titles of the rendered panels in the notebook on show, top to bottom."""
    return page.eval_on_selector_all(f"{PANEL} .lora-panel h3", "nodes => nodes.map(n => n.innerText.trim())")


def run_notebook(page: Any, server: LabServer, name: str, titles: list[str], timeout_s: float = 90,
                 workspace: str = "") -> float:
    """Open ``name``, run all its cells and wait until a panel with each title is drawn; returns seconds from
    Run All to the last panel drawn. ``workspace`` names the JupyterLab workspace (default: the notebook's)."""
    # A workspace of its own per notebook: the page shows this notebook only, not the last one restored.
    workspace = workspace or Path(name).stem.lower().replace("_", "-")
    page.goto(server.url(f"/lab/workspaces/{workspace}/tree/{name}"), wait_until="domcontentloaded")
    page.wait_for_selector(f"{PANEL} .jp-Notebook .jp-Cell", timeout=timeout_s * 1000)
    wait_for_idle_kernel(page, timeout_s * 1000)
    started = time.monotonic()
    run_all_cells(page)
    page.wait_for_function(
        """([panel, count]) => document.querySelectorAll(panel + ' .lora-panel h3').length >= count""",
        arg=[PANEL, len(titles)], timeout=timeout_s * 1000)
    elapsed = time.monotonic() - started
    wait_for_idle_kernel(page, timeout_s * 1000)  # the last cell has finished, not only drawn
    return elapsed


def error_outputs(page: Any) -> list[str]:
    """Text of every error output (traceback) and stderr stream in the notebook on show."""
    return page.eval_on_selector_all(
        f"{PANEL} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        "nodes => nodes.map(n => n.innerText)")
