"""The setup panel's "Check my setup" section: one line per stage, live, then the verdict."""
from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from widgets.base import ERROR, INFO, OK, WARNING, button
from widgets.context import NotebookContext
from widgets.worker import BackgroundTask
from widgets.style import message_html

_ICONS = {"pending": "·", "running": "…", "ok": "✔", "failed": "✖", "skipped": "–"}
_LEVELS = {"ok": OK, "failed": ERROR, "running": INFO, "skipped": WARNING}


class SelfCheckSection:
    """A button that runs ``core.selfcheck.run_self_check`` in the background and shows each stage."""

    def __init__(self, context: NotebookContext, guard: Callable[..., Any]) -> None:
        from core.selfcheck import STAGES

        self.context = context
        self.worker = BackgroundTask(name="setup-self-check")
        self.report = None  # the last SelfCheckReport, for tests and for the user's own code
        self._guard = guard
        self._lock = threading.Lock()
        self._stages: dict[str, Any] = {}
        self._titles = dict(STAGES)
        self.check_button = button("Check my setup", "info", "Build a tiny model and images offline, tag them, "
                                   "train a tiny LoRA and check it: about a minute on a GPU server", "stethoscope")
        self.progress = w.IntProgress(value=0, min=0, max=len(STAGES), layout=w.Layout(width="300px"))
        self.stages_html = w.HTML("")
        self.verdict = w.HTML("")
        self.check_button.on_click(guard(self._start))
        self.widget = w.VBox([
            w.HTML('<b>Check my setup</b> <span class="lora-muted">proves the whole chain works here, offline, '
                   'before you download a multi-GB model</span>'),
            w.HBox([self.check_button, self.progress]),
            self.stages_html,
            self.verdict,
        ])
        self.widget.add_class("lora-section")

    def _start(self, *_: Any) -> None:
        if self.worker.busy:
            return
        self._stages = {}
        self.progress.value = 0
        self.progress.bar_style = ""
        self.verdict.value = message_html(INFO, "Running: the first stage imports the libraries, which takes a "
                                          "few seconds.")
        self._render()
        self.check_button.disabled = True
        self.worker.start(self._run)

    def _run(self) -> None:
        try:
            self._guard(self._check)()
        finally:
            self.check_button.disabled = False

    def _check(self) -> None:
        from core.selfcheck import run_self_check

        report = run_self_check(self.context.paths, progress=self._on_stage)
        self.report = report
        self.progress.bar_style = "success" if report.ok else "danger"
        if report.ok:
            self.verdict.value = message_html(
                OK, f"Everything works: tiny model, tagging and LoRA training all ran here in {report.seconds:.0f} s. "
                    f"Files: {report.folder}")
        else:
            failed = next(stage for stage in report.stages if stage.status == "failed")
            self.verdict.value = message_html(ERROR, f"{failed.title} failed: {failed.message}", failed.hint)

    def _on_stage(self, stage: Any) -> None:
        with self._lock:  # stages report from the worker thread; keep the rendering in one piece
            self._stages[stage.key] = (stage.status, stage.message, stage.hint, stage.seconds)
            self.progress.value = sum(1 for status, *_ in self._stages.values() if status in ("ok", "failed", "skipped"))
            self._render()

    def _render(self) -> None:
        rows = []
        for key, title in self._titles.items():
            status, message, hint, seconds = self._stages.get(key, ("pending", "", "", 0.0))
            took = f" <span class='lora-muted'>{seconds:.1f} s</span>" if status in ("ok", "failed") else ""
            text = f"{_ICONS[status]} <b>{html.escape(title)}</b>{took}"
            if message:
                text += f": {html.escape(message)}"
            if hint:
                text += f'<span class="lora-hint">What to do: {html.escape(hint)}</span>'
            level = _LEVELS.get(status)
            rows.append(f'<div class="lora-msg lora-{level}">{text}</div>' if level else f"<div>{text}</div>")
        self.stages_html.value = "".join(rows)
