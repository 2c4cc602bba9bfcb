"""The setup panel's base-model download section: preset or URL, tokens that are never kept, a progress bar.

Tokens are read from the Password fields and the fields are emptied at once, before the download
starts: from then on a token exists only as an argument of the download call (and, when the user
ticks "remember", in the private 0600 token file that ``core`` writes). It never reaches a widget
value, the notebook context, a message or a log.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from widgets.base import OK, WARNING, button, labelled
from widgets.context import BASE_MODEL, NotebookContext
from widgets.worker import BackgroundTask
from widgets.style import message_html

NO_PRESET = ""  # dropdown value meaning "use the URL field"


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


class DownloadSection:
    """Widgets and handlers for fetching a base model into the project's models/ (or vae/) folder."""

    def __init__(self, context: NotebookContext, guard: Callable[..., Any]) -> None:
        from core.base_models import preset_choices

        self.context = context
        self.worker = BackgroundTask(name="setup-download")
        self.preset = w.Dropdown(options=[("(none: use the URL below)", NO_PRESET), *preset_choices()],
                                 value=NO_PRESET, layout=w.Layout(width="420px"))
        self.url = w.Text(placeholder="https://huggingface.co/.../model.safetensors, a Civitai page, or any link",
                          layout=w.Layout(width="520px"))
        self.hf_token = w.Password(placeholder="only for gated or private Hugging Face repos",
                                   layout=w.Layout(width="360px"))
        self.civitai_token = w.Password(placeholder="for Civitai models that need a login",
                                        layout=w.Layout(width="360px"))
        self.remember_tokens = w.Checkbox(value=False, description="Remember the tokens on this server (private file)",
                                          indent=False)
        self.download_button = button("Download", "primary", "Download the chosen model", "download")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=100.0, description="", bar_style="",
                                        layout=w.Layout(width="420px"))
        self.progress_text = w.Label("")
        self.result = w.HTML("")
        self.download_button.on_click(guard(self._start))
        self._guard = guard
        self.widget = w.VBox([
            w.HTML('<b>Base model</b> <span class="lora-muted">a preset, or paste any Hugging Face / Civitai / '
                   'direct link (the link wins when both are set)</span>'),
            labelled("Preset", self.preset),
            labelled("Or a URL", self.url),
            labelled("Hugging Face token", self.hf_token),
            labelled("Civitai token", self.civitai_token),
            self.remember_tokens,
            w.HBox([self.download_button, self.progress, self.progress_text]),
            self.result,
        ])
        self.widget.add_class("lora-section")

    def _source(self) -> str:
        return self.url.value.strip() or self.preset.value

    def _start(self, *_: Any) -> None:
        # Take the tokens out of the widgets first: whatever happens next, they are not kept there.
        hf_token, civitai_token = self.hf_token.value, self.civitai_token.value
        self.hf_token.value = ""
        self.civitai_token.value = ""
        source = self._source()
        remember = bool(self.remember_tokens.value)
        if self.worker.busy:
            self.result.value = message_html(WARNING, "A download is already running.", "Wait for it to finish.")
            return
        self.result.value = ""
        self.progress.value = 0.0
        self.progress.bar_style = ""
        self.progress_text.value = "starting"
        self.download_button.disabled = True
        self.worker.start(lambda: self._run(source, hf_token, civitai_token, remember))

    def _run(self, source: str, hf_token: str, civitai_token: str, remember: bool) -> None:
        try:
            self._guard(self._download)(source, hf_token, civitai_token, remember)
        finally:
            self.download_button.disabled = False

    def _download(self, source: str, hf_token: str, civitai_token: str, remember: bool) -> None:
        from core.base_models import fetch_base_model

        try:
            choice = fetch_base_model(source, self.context.paths, hf_token=hf_token, civitai_token=civitai_token,
                                      remember_tokens=remember, on_progress=self._on_progress)
        except BaseException:
            self.progress.bar_style = "danger"
            self.progress_text.value = "failed"
            raise
        self.progress.value = 100.0
        self.progress.bar_style = "success"
        self.progress_text.value = "done"
        level = OK if choice.kind == "vae" or choice.family else WARNING
        lines = choice.summary_lines()
        body = "<br>".join(html.escape(line) for line in lines[1:])
        self.result.value = message_html(level, lines[0]) + (f'<div class="lora-section">{body}</div>' if body else "")
        if choice.kind == "checkpoint":
            self.context.set(BASE_MODEL, choice.path)

    def _on_progress(self, done: int, total: int | None) -> None:
        if total:
            percent = min(100.0, 100.0 * done / total)
            # One update per whole percent keeps a multi-GB download from flooding the browser.
            if int(percent) != int(self.progress.value) or done >= total:
                self.progress.value = percent
                self.progress_text.value = f"{_size(done)} of {_size(total)}"
        else:
            self.progress_text.value = f"{_size(done)} so far"
