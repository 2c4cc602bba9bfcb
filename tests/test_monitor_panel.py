"""The monitor panel driven from code against real tiny trainer runs: start, follow, stop, kill, re-attach."""
from __future__ import annotations

import html
import time
from pathlib import Path

import pytest

from core.paths import ProjectPaths
from core.training.run_process import start_run
from tests.test_training_run import tiny_run_config
from widgets.context import CONFIG_FILE, NotebookContext
from widgets.monitor_panel import MonitorPanel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def context(tmp_path: Path) -> NotebookContext:
    return NotebookContext(paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work"))


@pytest.fixture()
def panels():
    """Panels made by a test; any run still going at the end is killed, so no trainer outlives its test."""
    made: list[MonitorPanel] = []
    yield made
    for panel in made:
        if panel.monitor is not None and panel.monitor.handle.is_running:
            panel.monitor.handle.kill()
            panel.monitor.handle.wait(timeout=30)
        panel.close()


def wait_for_first_step(panel: MonitorPanel, timeout: float = 240) -> None:
    """A bounded wait for the poller to show a step (not a timed assertion: the asserts come after)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and panel.is_following and not panel.progress.losses:
        time.sleep(0.2)


def test_start_button_runs_a_tiny_training_to_done(tmp_path: Path, tiny_sd15, context, panels) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red disc --w 64 --h 64 --s 2\n", encoding="utf-8")
    config = tiny_run_config(tmp_path, tiny_sd15.diffusers_dir, steps=6, sample_prompts=str(prompts),
                             sample_every_n_steps=3)
    panel = MonitorPanel(context, poll_interval=0.2)
    panels.append(panel)
    assert "No config yet" in panel.config_html.value and panel.stop_button.disabled
    context.set(CONFIG_FILE, str(config))
    assert str(config) in panel.config_html.value

    panel.start_button.click()
    assert panel.start_button.disabled and not panel.stop_button.disabled
    assert panel.wait(timeout=300)

    assert panel.progress.status == "done", panel.messages.text
    assert (panel.progress_bar.value, panel.progress_bar.max) == (6, 6)
    assert panel.progress_bar.bar_style == "success"
    assert bytes(panel.loss_image.value).startswith(PNG_MAGIC)
    assert "Done in 6 steps" in panel.messages.text and "tiny.safetensors" in panel.messages.text
    assert (tmp_path / "out" / "tiny.safetensors").is_file()
    assert "step 6/6" in panel.status_text.value
    assert "Samples at step 6" in panel.samples_header.value
    [sample] = panel.samples_box.children
    assert bytes(sample.children[0].value).startswith(PNG_MAGIC) and "a red disc" in sample.children[1].value
    assert "tiny.safetensors" in panel.saves_html.value
    assert not panel.start_button.disabled and panel.stop_button.disabled and panel.kill_button.disabled


def test_start_without_a_config_or_with_a_broken_one_explains(tmp_path: Path, context, panels) -> None:
    panel = MonitorPanel(context)
    panels.append(panel)
    assert panel.start() is None
    assert "no training config" in panel.messages.text and "training panel" in panel.messages.text

    config = tiny_run_config(tmp_path, tmp_path / "no_such_model", steps=2)
    assert panel.start(config) is not None
    assert panel.wait(timeout=120)
    assert panel.progress.status == "failed" and panel.progress_bar.bar_style == "danger"
    assert "no_such_model" in panel.messages.text and "What to do" in panel.messages.text


def test_stop_button_stops_cleanly_with_a_numbered_lora_and_state(tmp_path: Path, tiny_sd15, context,
                                                                   panels) -> None:
    config = tiny_run_config(tmp_path, tiny_sd15.diffusers_dir, steps=5000)
    panel = MonitorPanel(context, poll_interval=0.2)
    panels.append(panel)
    assert panel.start(config) is not None
    wait_for_first_step(panel)
    assert panel.progress.losses, panel.messages.text

    panel.stop_button.click()
    assert panel.stop_button.disabled and "state are being saved" in panel.messages.text
    assert panel.wait(timeout=120)

    progress = panel.progress
    assert progress.status == "stopped" and panel.progress_bar.bar_style == "warning"
    assert progress.final_path.name == f"tiny-step{progress.step:08d}.safetensors" and progress.final_path.is_file()
    assert progress.state_path.is_dir()
    assert f"Stopped at step {progress.step}" in panel.messages.text and progress.final_path.name in panel.messages.text
    assert not (tmp_path / "out" / "tiny.safetensors").exists()


def test_kill_asks_first_then_ends_the_run(tmp_path: Path, tiny_sd15, context, panels) -> None:
    config = tiny_run_config(tmp_path, tiny_sd15.diffusers_dir, steps=5000)
    panel = MonitorPanel(context, poll_interval=0.2)
    panels.append(panel)
    panel.start(config)
    wait_for_first_step(panel)
    panel.kill_button.click()
    assert panel.kill_confirm.layout.display == "flex" and panel.monitor.handle.is_running  # only asked
    panel.kill_cancel_button.click()
    assert panel.kill_confirm.layout.display == "none" and panel.monitor.handle.is_running
    panel.kill_button.click()
    panel.kill_confirm_button.click()
    assert panel.wait(timeout=60)
    assert panel.progress.status == "failed" and panel.monitor.handle.returncode == -9
    assert "killed" in panel.messages.text and "exit code -9" in panel.messages.text
    assert "End of the training log" in panel.log_html.value


def test_a_new_panel_reattaches_to_a_run_still_going(tmp_path: Path, tiny_sd15, context, panels) -> None:
    config = tiny_run_config(tmp_path, tiny_sd15.diffusers_dir, steps=30)
    handle = start_run(config, paths=context.paths)
    try:
        fresh = NotebookContext(paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work"))
        panel = MonitorPanel(fresh, poll_interval=0.2)  # as after a kernel restart: nothing shared but the disk
        panels.append(panel)
        assert "Re-attached to the run 'tiny'" in html.unescape(panel.messages.text)
        assert panel.monitor.handle.attached and panel.monitor.handle.pid == handle.pid
        assert panel.start_button.disabled and not panel.stop_button.disabled
        assert panel.wait(timeout=300)
    finally:
        handle.wait(timeout=60)
    assert panel.progress.status == "done", panel.messages.text
    assert (panel.progress_bar.value, panel.progress_bar.max) == (30, 30)
    assert "tiny.safetensors" in panel.messages.text
    assert bytes(panel.loss_image.value).startswith(PNG_MAGIC)
    assert MonitorPanel(fresh).monitor is None  # the ended run is not picked up again
