"""The real browser test: both notebooks opened in JupyterLab, run, their panels drawn and readable in Chromium.

JupyterLab is started through jupyter.sh on loopback (free port, token) with the project folder as its
root; Debian's Chromium is driven by Playwright (``executable_path``, no browser download). One server
serves both themes: the theme is stored in JupyterLab's user settings and each notebook is opened in a
fresh workspace, then run with Run > Run All Cells. The test checks the DOM for every panel and its <h3>
title, clicks the training panel's "Advanced mode" toggle (the option groups, an accordion, appear) and an
option's "?" (its explanation appears), then measures the WCAG contrast ratio of every text in the panels
(titles, the ok/warning/error boxes, labels, help, inputs, buttons) against what is really behind it:
4.5:1 for body text, 3:1 for large text, in the light and in the dark theme. Screenshots of each notebook
go into assets/ when LORA_SCREENSHOTS=1 (for the README), else into the test's folder.
"""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from tests.lab_browser import (DARK_THEME, LIGHT_THEME, PANEL, chromium_page, error_outputs, lab_server, panel_titles,
                               run_notebook, set_theme)
from tests.lab_contrast import contrast_ratio, lowest_by_category, measure_text_contrast, too_faint

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "tools_dev"))
import build_notebooks  # noqa: E402

WAIT_MS = 120_000  # generous: the machine may be busy with other tests
TRAINER = "Lora_Trainer_Widget.ipynb"
SCREENSHOTS = {(LIGHT_THEME, "Dataset_Maker_Widget.ipynb"): "dataset_maker.png",
               (LIGHT_THEME, TRAINER): "lora_trainer.png", (DARK_THEME, TRAINER): "lora_trainer_dark.png"}
# The panel each screenshot scrolls to (its title's start): the one a reader wants to see.
SHOWN_PANEL = {"Dataset_Maker_Widget.ipynb": "dataset", TRAINER: "training"}
# What must have been measured in each notebook, so a passing test means these were readable.
MEASURED = {"Dataset_Maker_Widget.ipynb": {"title", "label", "help", "input", "button"},
            TRAINER: {"title", "message", "label", "help", "input", "button"}}


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


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One JupyterLab and one Chromium page for the tests here; the committed notebooks checked afterwards."""
    scratch = tmp_path_factory.mktemp("lab")
    originals = {name: (PROJECT_ROOT / name).read_bytes() for name in build_notebooks.NOTEBOOKS}
    env = {"LORA_WORK_DIR": str(scratch / "work")}  # the kernels' folders, away from the project
    try:
        with lab_server(scratch, env) as server, chromium_page() as page:
            yield server, page, scratch
    finally:
        # Autosave is off; still, the committed notebooks must leave this test exactly as they came.
        changed = [name for name, data in originals.items() if (PROJECT_ROOT / name).read_bytes() != data]
        for name in changed:
            (PROJECT_ROOT / name).write_bytes(originals[name])
        if changed:
            pytest.fail(f"{changed} changed by the browser session (restored)")


def open_training_details(page, titles: list[str]) -> None:
    """Click Advanced mode (the option groups appear) and the first option's "?" (its explanation appears)."""
    training = panel(page, titles[1])
    assert training.locator(".widget-accordion").count() == 0  # built on first use
    training.locator("button", has_text="Advanced mode").click()
    training.locator(".widget-accordion").first.wait_for(state="visible", timeout=WAIT_MS)
    assert training.locator(".widget-accordion .jupyter-widget-Collapse").count() > 3  # groups
    assert training.locator(".lora-help").count() == 0
    training.locator("button", has_text="?").first.click()
    training.locator(".lora-help").first.wait_for(state="visible", timeout=WAIT_MS)
    assert "Default:" in training.locator(".lora-help").first.inner_text()


@pytest.mark.parametrize("theme", [LIGHT_THEME, DARK_THEME])
def test_both_notebooks_run_in_jupyterlab_with_readable_panels(lab, theme: str, tmp_path: Path) -> None:
    server, page, _ = lab
    shots = PROJECT_ROOT / "assets" if os.environ.get("LORA_SCREENSHOTS") == "1" else tmp_path
    set_theme(server, theme)
    lowest = {}
    for name in build_notebooks.NOTEBOOKS:
        titles = build_notebooks.panel_titles(name)
        workspace = f"{theme.split()[-1]}-{Path(name).stem}".lower().replace("_", "-")  # fresh layout, sidebar open
        run_notebook(page, server, name, titles, timeout_s=WAIT_MS / 1000, workspace=workspace)
        page.wait_for_function("theme => document.body.dataset.jpThemeName === theme", arg=theme, timeout=WAIT_MS)
        assert panel_titles(page) == titles
        assert error_outputs(page) == []
        if name == TRAINER:
            open_training_details(page, titles)

        measured = measure_text_contrast(page, PANEL)
        lowest[name] = lowest_by_category(measured)
        assert MEASURED[name] <= set(lowest[name]), f"{name} ({theme}): only {sorted(lowest[name])} measured"
        assert all(item.opaque for item in measured)  # each text's background was found, not assumed
        faint = too_faint(measured)
        assert faint == [], f"{name} in {theme}: text under WCAG's contrast minimum: {faint}"

        if (theme, name) in SCREENSHOTS:
            shown = build_notebooks.PANELS[name][SHOWN_PANEL[name]]
            title = titles[list(build_notebooks.PANELS[name].values()).index(shown)]
            screenshot(page, shots / SCREENSHOTS[theme, name], title)
            assert (shots / SCREENSHOTS[theme, name]).stat().st_size > 10_000
    print(f"\nlowest contrast per kind of text in {theme}: {lowest}")  # shown with -s
    assert page.errors == []  # no uncaught JavaScript error in the page


def test_loss_chart_is_a_white_card_with_dark_text() -> None:
    """The monitor's loss chart (a PNG, so the page cannot measure it) reads on both themes' pages."""
    from matplotlib.colors import to_rgb
    from PIL import Image

    from core.training.run_progress import LossPoint
    from widgets.monitor_chart import CARD, TEXT_GREY, loss_chart_png

    points = [LossPoint(step=step, loss=0.2 - step / 1000, avg_loss=0.19 - step / 1000) for step in range(1, 40)]
    image = Image.open(io.BytesIO(loss_chart_png(points))).convert("RGBA")
    assert image.getpixel((1, 1)) == (255, 255, 255, 255)  # an opaque white card, whatever the page behind
    assert to_rgb(CARD) == (1.0, 1.0, 1.0)
    assert contrast_ratio(to_rgb(TEXT_GREY), to_rgb(CARD)) >= 4.5
    greys = {pixel[:3] for _, pixel in image.getcolors(1 << 24) if pixel[0] == pixel[1] == pixel[2] and pixel[0] < 128}
    assert greys  # the axis labels and ticks are drawn dark, not only the lines
