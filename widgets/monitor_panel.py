"""Monitor panel: start the trainer, watch it (progress, loss, samples, saves, warnings), stop it.

View only. ``core.training`` starts the trainer as a subprocess and folds its events file into a
``RunProgress``; a daemon thread here calls ``RunMonitor.refresh()`` every ``poll_interval``
seconds and copies the figures into the widgets, so the notebook stays free while training runs.
A new panel (after a kernel restart) re-attaches to a run that is still going.
"""
from __future__ import annotations

import html
import threading
import time
from pathlib import Path

import ipywidgets as w

from core.errors import CoreError
from core.training.run_monitor import RunMonitor
from core.training.run_process import RunHandle, find_active_runs, start_run
from core.training.run_progress import DONE, FAILED, STOPPED, RunProgress
from widgets.base import Panel, button
from widgets.context import CONFIG_FILE, NotebookContext
from widgets.monitor_views import (
    BAR_STYLES,
    log_tail_html,
    sample_widgets,
    samples_title,
    saves_html,
    status_html,
)


class MonitorPanel(Panel):
    """Start / stop a training run and follow it live. ``wait()`` lets tests block until it ends."""

    title = "Training monitor"

    def __init__(self, context: NotebookContext, *, poll_interval: float = 0.5, chart_interval: float = 3.0,
                 auto_attach: bool = True) -> None:
        super().__init__()
        self.context = context
        self.poll_interval = poll_interval
        self.chart_interval = chart_interval
        self.monitor: RunMonitor | None = None
        self._thread: threading.Thread | None = None
        self._quit = threading.Event()
        self._stopping = False
        self._reset_view_state()

        self.config_html = w.HTML()
        self.start_button = button("Start training", "primary", "Start the trainer with the saved config", "play")
        self.stop_button = button("Stop (saves)", "warning", "Finish the current step, save the LoRA and its "
                                  "state, then stop", "stop")
        self.kill_button = button("Kill", "danger", "End the trainer at once; nothing more is saved", "times")
        self.kill_confirm_button = button("Yes, kill it", "danger", "Nothing more is saved")
        self.kill_cancel_button = button("Cancel")
        self.kill_confirm = w.HBox([w.HTML("Kill the trainer now? Unsaved progress is lost. "),
                                    self.kill_confirm_button, self.kill_cancel_button],
                                   layout=w.Layout(display="none"))
        self.progress_bar = w.IntProgress(value=0, min=0, max=1, description="steps",
                                          layout=w.Layout(width="100%"))
        self.status_text = w.HTML('<div class="lora-muted">No run yet.</div>')
        self.loss_image = w.Image(format="png", layout=w.Layout(max_width="640px"))
        self.samples_header = w.HTML(samples_title(None))
        self.samples_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.saves_html = w.HTML()
        self.log_html = w.HTML()

        self.start_button.on_click(lambda _button: self.start())
        self.stop_button.on_click(self.guarded(lambda _button: self._stop()))
        self.kill_button.on_click(lambda _button: self._show_kill_confirm(True))
        self.kill_cancel_button.on_click(lambda _button: self._show_kill_confirm(False))
        self.kill_confirm_button.on_click(self.guarded(lambda _button: self._kill()))
        context.on_change(CONFIG_FILE, lambda _value: self._show_config())
        self._show_config()
        self._set_buttons(running=False)
        self._finish([
            self.config_html,
            w.HBox([self.start_button, self.stop_button, self.kill_button]),
            self.kill_confirm,
            self.progress_bar,
            self.status_text,
            self.loss_image,
            self.samples_header,
            self.samples_box,
            self.saves_html,
            self.log_html,
        ])
        if auto_attach:
            self.guarded(self.attach_active)()

    # ------------------------------------------------------------------ public actions
    def start(self, config_file: str | Path | None = None) -> RunHandle | None:
        """Start the trainer on ``config_file`` (default: the context's CONFIG_FILE) and follow it.

        Problems (no config, a run already going, a config the trainer refuses) are shown in the panel;
        returns the run's handle, or None when it did not start.
        """
        return self.guarded(self._start)(config_file)

    def attach_active(self) -> RunHandle | None:
        """Follow a run that is still going (started by an earlier kernel); None when there is none."""
        if self.is_following:
            return self.monitor.handle if self.monitor else None
        active = find_active_runs(self.context.paths)
        if not active:
            return None
        handle = active[-1]
        started = time.strftime("%H:%M:%S", time.localtime(handle.record.started))
        self.messages.info(f"Re-attached to the run '{handle.record.output_name}' started at {started} "
                           f"(pid {handle.pid}); it is still training.")
        for other in active[:-1]:
            self.messages.warning(f"Another run is also going: '{other.record.output_name}' (pid {other.pid}).",
                                  "Only one run is followed here; stop the other one from a terminal "
                                  f"(kill -INT -{other.record.pgid}) if it should not be running.")
        self._follow(RunMonitor(handle))
        return handle

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the followed run has ended and every event is shown; False if ``timeout`` ran out."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def close(self) -> None:
        """Stop following (the run itself goes on; a new panel re-attaches to it)."""
        self._quit.set()
        self.wait(timeout=5)

    @property
    def is_following(self) -> bool:
        """True while a run is being followed (it has not ended yet)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def progress(self) -> RunProgress | None:
        """The followed run's progress (None before any run)."""
        return self.monitor.progress if self.monitor else None

    # ------------------------------------------------------------------ handlers
    def _start(self, config_file: str | Path | None) -> RunHandle:
        chosen = config_file or self.context.get(CONFIG_FILE)
        if not chosen:
            raise CoreError("There is no training config to start yet.",
                            "Save the config in the training panel first; it becomes the one started here.")
        if self.is_following:
            raise CoreError("This panel is already following a run.",
                            "Wait for it to finish, or press Stop, then start again.")
        handle = start_run(Path(chosen), paths=self.context.paths)
        self.messages.clear()
        self.messages.info(f"Training started with {chosen} (pid {handle.pid}). Log: {handle.log_file}")
        self._follow(RunMonitor(handle))
        return handle

    def _stop(self) -> None:
        monitor = self.monitor
        if monitor is None or monitor.ended:
            self.messages.info("No run is going.")
            return
        if monitor.stop():
            self._stopping = True
            self.stop_button.disabled = True
            self.status_text.value = status_html(monitor.progress, stopping=True)
            self.messages.info("Stopping... the current step finishes, then the LoRA and its state are being saved.")

    def _kill(self) -> None:
        self._show_kill_confirm(False)
        monitor = self.monitor
        if monitor is not None and monitor.handle.kill():
            self.messages.warning("The trainer was killed; nothing more was saved.",
                                  "Saves listed above (if any) are complete; resume from a saved state folder.")

    def _show_kill_confirm(self, shown: bool) -> None:
        self.kill_confirm.layout.display = "flex" if shown else "none"

    # ------------------------------------------------------------------ following
    def _follow(self, monitor: RunMonitor) -> None:
        self.monitor = monitor
        self._quit = threading.Event()
        self._stopping = False
        self._reset_view_state()
        self.progress_bar.value, self.progress_bar.max, self.progress_bar.bar_style = 0, 1, "info"
        self.samples_box.children = ()
        self.samples_header.value = samples_title(None)
        self.loss_image.value = b""
        self.log_html.value = ""
        self._set_buttons(running=True)
        self._thread = threading.Thread(target=self._poll, args=(monitor, self._quit), daemon=True,
                                        name="lora-monitor")
        self._thread.start()

    def _poll(self, monitor: RunMonitor, quit_event: threading.Event) -> None:
        try:
            while True:
                monitor.refresh()
                self._render(monitor)
                if monitor.ended or quit_event.wait(self.poll_interval):
                    break
        except Exception as problem:  # noqa: BLE001 - a thread's error would otherwise vanish
            self.messages.error(f"The monitor stopped following the run ({type(problem).__name__}: {problem}).",
                                "The run itself goes on; run the panel's cell again to re-attach.")
        finally:
            if monitor.ended:
                self._set_buttons(running=False)

    def _render(self, monitor: RunMonitor) -> None:
        progress = monitor.progress
        self.progress_bar.max = max(1, progress.total_steps or progress.step)
        self.progress_bar.value = min(progress.step, self.progress_bar.max)
        self.progress_bar.bar_style = BAR_STYLES.get(progress.status, "info")
        self.status_text.value = status_html(progress, stopping=self._stopping)
        self._show_new_messages(progress)
        self._draw_chart(progress, force=monitor.ended)
        self._show_samples(progress)
        counts = (len(progress.checkpoints), len(progress.saved_states))
        if counts != self._saves_shown:
            self._saves_shown = counts
            self.saves_html.value = saves_html(progress)
        if monitor.ended:
            self._show_outcome(progress)

    def _show_new_messages(self, progress: RunProgress) -> None:
        for warning in progress.warnings[self._warnings_shown:]:
            self.messages.warning(warning.message, warning.hint)
        self._warnings_shown = len(progress.warnings)
        for error in progress.errors[self._errors_shown:]:
            option = f" (option: {error.option})" if error.option else ""
            self.messages.error(error.message + option, error.hint)
        self._errors_shown = len(progress.errors)

    def _draw_chart(self, progress: RunProgress, force: bool) -> None:
        points = len(progress.losses) + len(progress.validation)
        if points == self._chart_points:
            return
        now = time.monotonic()
        if not force and now - self._chart_time < self.chart_interval:
            return  # drawing costs ~0.1 s: a few times a minute is plenty for a curve
        from widgets.monitor_chart import loss_chart_png

        self.loss_image.value = loss_chart_png(progress.losses, progress.validation)
        self._chart_points, self._chart_time = points, now

    def _show_samples(self, progress: RunProgress) -> None:
        latest = progress.latest_samples
        if latest is None or latest == self._samples_shown:
            return
        self._samples_shown = latest
        self.samples_header.value = samples_title(latest)
        self.samples_box.children = tuple(sample_widgets(latest))

    def _show_outcome(self, progress: RunProgress) -> None:
        if progress.status == DONE:
            self.messages.ok(f"Done in {progress.step} steps. Your LoRA: {progress.final_path}")
        elif progress.status == STOPPED and progress.final_path is not None:
            self.messages.ok(f"Stopped at step {progress.step}. LoRA saved: {progress.final_path}; "
                             f"training state saved: {progress.state_path} (set resume to this folder to "
                             "continue later).")
        elif progress.status == STOPPED:
            self.messages.info("Stopped.")
        elif progress.status == FAILED:
            self.log_html.value = log_tail_html(progress.log_tail)

    def _reset_view_state(self) -> None:
        self._warnings_shown = 0
        self._errors_shown = 0
        self._chart_points = 0
        self._chart_time = 0.0
        self._samples_shown = None
        self._saves_shown = (-1, -1)

    def _set_buttons(self, running: bool) -> None:
        self.start_button.disabled = running
        self.stop_button.disabled = not running or self._stopping
        self.kill_button.disabled = not running
        if not running:
            self._show_kill_confirm(False)

    def _show_config(self) -> None:
        chosen = self.context.get(CONFIG_FILE)
        text = (f"Config: <code>{html.escape(str(chosen))}</code>" if chosen
                else "No config yet: save one in the training panel.")
        self.config_html.value = f'<div class="lora-muted">{text}</div>'
