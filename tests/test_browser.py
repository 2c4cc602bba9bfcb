"""The real browser test: both notebooks opened in JupyterLab, run, and their panels drawn in Chromium.

JupyterLab is started through jupyter.sh on loopback (free port, token) with the project folder as its
root; Debian's Chromium is driven by Playwright (``executable_path``, no browser download). Each notebook
is run with Run > Run All Cells; the test checks the DOM for every panel and its <h3> title, clicks the
training panel's "Advanced mode" toggle and waits for the option groups (an accordion) to appear, and
saves a screenshot of each notebook (into assets/ when LORA_SCREENSHOTS=1, for the README).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.lab_browser import PANEL, chromium_page, error_outputs, lab_server, panel_titles, run_notebook

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "tools_dev"))
import build_notebooks  # noqa: E402

WAIT_MS = 120_000  # generous: the machine may be busy with other tests
SCREENSHOTS = {"Dataset_Maker_Widget.ipynb": "dataset_maker.png", "Lora_Trainer_Widget.ipynb": "lora_trainer.png"}
# The panel each screenshot scrolls to (its title's start): the one a reader wants to see.
SHOWN_PANEL = {"Dataset_Maker_Widget.ipynb": "dataset", "Lora_Trainer_Widget.ipynb": "training"}


def screenshot(page, path: Path, title: str) -> None:
    """Hide the file browser, bring the panel titled ``title`` to the top and save the page as PNG."""
    page.keyboard.press("Control+b")  # toggles the left sidebar off: more room for the notebook
    heading = page.locator(f"{PANEL} .lora-panel h3", has_text=title).first
    heading.evaluate("node => node.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)  # let the layout settle after the sidebar closed
    page.screenshot(path=str(path))


def panel(page, title: str):
    """The rendered panel whose <h3> is ``title``."""
    return page.locator(f"{PANEL} .lora-panel", has=page.locator("h3", has_text=title)).first


def test_both_notebooks_run_in_jupyterlab_and_show_their_panels(tmp_path: Path) -> None:
    originals = {name: (PROJECT_ROOT / name).read_bytes() for name in build_notebooks.NOTEBOOKS}
    shots = PROJECT_ROOT / "assets" if os.environ.get("LORA_SCREENSHOTS") == "1" else tmp_path
    env = {"LORA_WORK_DIR": str(tmp_path / "work")}  # the kernels' folders, away from the project
    try:
        with lab_server(tmp_path, env) as server, chromium_page() as page:
            for name in build_notebooks.NOTEBOOKS:
                titles = build_notebooks.panel_titles(name)
                run_notebook(page, server, name, titles, timeout_s=WAIT_MS / 1000)
                assert panel_titles(page) == titles
                assert error_outputs(page) == []

                if name == "Lora_Trainer_Widget.ipynb":
                    training = panel(page, build_notebooks.panel_titles(name)[1])
                    assert training.locator(".widget-accordion").count() == 0  # built on first use
                    training.locator("button", has_text="Advanced mode").click()
                    training.locator(".widget-accordion").first.wait_for(state="visible", timeout=WAIT_MS)
                    assert training.locator(".widget-accordion .jupyter-widget-Collapse").count() > 3  # groups

                shown = build_notebooks.PANELS[name][SHOWN_PANEL[name]]
                title = titles[list(build_notebooks.PANELS[name].values()).index(shown)]
                screenshot(page, shots / SCREENSHOTS[name], title)
                assert (shots / SCREENSHOTS[name]).stat().st_size > 10_000
            assert page.errors == []  # no uncaught JavaScript error in the page
    finally:
        # Autosave is off; still, the committed notebooks must leave this test exactly as they came.
        for name, data in originals.items():
            if (PROJECT_ROOT / name).read_bytes() != data:
                (PROJECT_ROOT / name).write_bytes(data)
                pytest.fail(f"{name} was changed by the browser session (restored)")
