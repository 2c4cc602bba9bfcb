"""Utilities panel: inspect, resize, merge, extract, upload to Hugging Face, and "try it".

View only: every action calls ``core.utilities_manager`` (or ``core.try_lora``) and shows the
result. Long actions run one at a time in a background thread (``wait()`` lets tests block).
The LoRA field at the top is shared by the tabs and pre-filled with the newest LoRA the last
training wrote (the context's CONFIG_FILE, else the outputs folder).
"""
from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from widgets.base import OK, Panel, button, labelled
from widgets.context import BASE_MODEL, CONFIG_FILE, NotebookContext
from widgets.worker import BackgroundTask
from widgets.style import message_html

PRECISIONS = [("fp16 (smaller, usual)", "fp16"), ("bf16", "bf16"), ("float32 (largest)", "float")]
DYNAMIC = [("fixed rank", ""), ("sv_ratio", "sv_ratio"), ("sv_fro", "sv_fro"), ("sv_cumulative", "sv_cumulative")]
MERGE_MODES = [("into the base model (checkpoint)", "checkpoint"), ("into one LoRA, exact (concat)", "concat"),
               ("into one LoRA, SVD to a rank", "svd")]
TAB_TITLES = ["Inspect", "Resize", "Merge", "Extract", "Upload to Hugging Face", "Try it"]


def _text(placeholder: str = "", value: str = "", width: str = "520px") -> w.Text:
    return w.Text(value=value, placeholder=placeholder, layout=w.Layout(width=width))


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td style='padding-right:14px'><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                   for k, v in rows)
    return f'<table class="lora-section">{body}</table>'


def summary_html(summary: Any) -> str:
    """The Inspect tab's view of a ``LoraSummary``."""
    rows = [("File", str(summary.path)), ("Size", f"{summary.size_bytes / 1e6:.1f} MB"),
            ("Architecture", f"{summary.architecture} (from {summary.architecture_source})"),
            ("Algorithm", ", ".join(summary.algorithms) or "none"), ("Modules", str(summary.module_count))]
    if summary.base_model:
        rows.append(("Base model", summary.base_model))
    rows.append(("Trigger words", ", ".join(summary.trigger_words) or "(none recorded)"))
    head = "<tr><th>part</th><th>layer kind</th><th>rank</th><th>alpha</th><th>modules</th></tr>"
    groups = "".join(f"<tr><td>{html.escape(part)}</td><td>{html.escape(kind)}</td><td>{rank}</td><td>{alpha:g}</td>"
                     f"<td>{count}</td></tr>" for part, kind, rank, alpha, count in summary.groups)
    parts = [_table(rows), f'<b>Ranks</b><table class="lora-section">{head}{groups}</table>']
    if summary.top_tags:
        tags = ", ".join(f"{html.escape(tag)} ({count})" for tag, count in summary.top_tags)
        parts.append(f'<b>Top tags</b><div class="lora-section">{tags}</div>')
    if summary.settings:
        settings = [(key.removeprefix("ss_"), value) for key, value in summary.settings.items()]
        parts.append("<b>Training settings</b>" + _table(settings))
    return "".join(parts)


class UtilitiesPanel(Panel):
    """Tabs over one shared LoRA path. Attributes tests drive: ``lora_path``, ``found``, ``tabs``;
    Inspect ``inspect_button``, ``inspect_html``; Resize ``resize_rank``, ``resize_conv_rank``,
    ``resize_method``, ``resize_param``, ``resize_precision``, ``resize_save_to``, ``resize_overwrite``,
    ``resize_button``; Merge ``merge_files``, ``merge_ratios``, ``merge_mode``, ``merge_base``, ``merge_rank``,
    ``merge_config``, ``merge_save_to``, ``merge_overwrite``, ``merge_button``; Extract ``extract_org``,
    ``extract_tuned``, ``extract_dim``, ``extract_conv_dim``, ``extract_config``, ``extract_save_to``,
    ``extract_overwrite``, ``extract_button``; ``result_html`` (last file written); plus ``upload`` and
    ``tryout`` sections (see their modules).
    """

    title = "Utilities: inspect, resize, merge, extract, upload, try it"

    def __init__(self, context: NotebookContext) -> None:
        from widgets.utilities_try import TryItSection
        from widgets.utilities_upload import UploadSection

        super().__init__()
        self.context = context
        self.worker = BackgroundTask(name="utilities")
        self.lora_path = _text("path of a .safetensors LoRA on the server")
        self.found = w.Dropdown(options=[("(LoRAs in the outputs folder)", "")], value="",
                                layout=w.Layout(width="520px"))
        self.found.observe(self._pick_found, names="value")
        self.latest_button = button("Latest", tooltip="The newest LoRA of the last training", icon="clock-o")
        self.latest_button.on_click(self.guarded(self.fill_latest))
        self.result_html = w.HTML("")

        tabs = [self._inspect_tab(), self._resize_tab(), self._merge_tab(), self._extract_tab()]
        self.upload = UploadSection(self)
        self.tryout = TryItSection(self)
        self.tabs = w.Tab(children=[*tabs, self.upload.widget, self.tryout.widget])
        for index, name in enumerate(TAB_TITLES):
            self.tabs.set_title(index, name)
        self._auto_path = ""
        self.fill_latest()
        context.on_change(CONFIG_FILE, lambda _value: self.fill_latest(only_if_auto=True))
        context.on_change(BASE_MODEL, self._base_model_changed)
        self._finish([labelled("LoRA file", w.HBox([self.lora_path, self.latest_button])),
                      labelled("", self.found), self.tabs, self.result_html])

    # ------------------------------------------------------------ shared
    def fill_latest(self, *_: Any, only_if_auto: bool = False) -> None:
        """Put the newest LoRA in the path field (not over a path the user typed when ``only_if_auto``)."""
        from core.utilities_manager import latest_lora

        self.refresh_found()
        if only_if_auto and self.lora_path.value not in ("", self._auto_path):
            return
        latest = latest_lora(self.context.paths.outputs, self.context.get(CONFIG_FILE))
        if latest:
            self._auto_path = self.lora_path.value = str(latest)

    def refresh_found(self) -> None:
        """List the LoRAs in the outputs folder, newest first."""
        from core.utilities_manager import list_loras

        paths = list_loras(self.context.paths.outputs)
        self.found.options = [("(LoRAs in the outputs folder)", "")] + [(str(p), str(p)) for p in paths]

    def _pick_found(self, change: dict) -> None:
        if change["new"]:
            self.lora_path.value = change["new"]

    def _base_model_changed(self, value: Any) -> None:
        for field in (self.merge_base, self.tryout.base_model):
            if not field.value:
                field.value = str(value or "")

    def run_in_background(self, action: Callable[[], Any], busy: w.Button) -> None:
        """Start ``action`` in the worker (one at a time); errors show as red messages."""
        if self.worker.busy:
            self.messages.warning("Another utility is still running.", "Wait for it to finish.")
            return
        self.messages.clear()
        busy.disabled = True

        def job() -> None:
            try:
                self.guarded(action)()
            finally:
                busy.disabled = False

        self.worker.start(job)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running action is done (tests, scripts)."""
        return self.worker.wait(timeout)

    def _written(self, path: Path, detail: str) -> None:
        self.result_html.value = (message_html(OK, f"Saved {path}")
                                  + f'<div class="lora-muted lora-section">{html.escape(detail)}</div>')
        self.refresh_found()  # listed, but the LoRA field keeps what the user is working on

    # ------------------------------------------------------------ Inspect
    def _inspect_tab(self) -> w.Widget:
        self.inspect_button = button("Inspect", "primary", "Read the LoRA's ranks and metadata", "search")
        self.inspect_html = w.HTML("")
        self.inspect_button.on_click(self.guarded(self.inspect, busy=self.inspect_button))
        return w.VBox([self.inspect_button, self.inspect_html])

    def inspect(self, *_: Any) -> None:
        """Show the LoRA's architecture, ranks, trigger words and training settings."""
        from core.utilities_manager import inspect_lora

        self.inspect_html.value = summary_html(inspect_lora(self.lora_path.value))

    # ------------------------------------------------------------ Resize
    def _resize_tab(self) -> w.Widget:
        self.resize_rank = w.BoundedIntText(value=16, min=1, max=1024, description="")
        self.resize_conv_rank = w.BoundedIntText(value=0, min=0, max=1024, description="")
        self.resize_method = w.Dropdown(options=DYNAMIC, value="")
        self.resize_param = w.FloatText(value=0.9)
        self.resize_precision = w.Dropdown(options=PRECISIONS, value="fp16")
        self.resize_save_to = _text("empty: <name>_r<rank>.safetensors beside the LoRA")
        self.resize_overwrite = w.Checkbox(value=False, description="overwrite an existing output", indent=False)
        self.resize_button = button("Resize", "primary", "Write a smaller-rank copy (the input is kept)", "compress")
        self.resize_button.on_click(self.guarded(lambda *_: self.run_in_background(self.resize, self.resize_button)))
        return w.VBox([
            w.HTML('<span class="lora-muted">SVD keeps the most important directions of each layer. '
                   'Dynamic methods pick a rank per layer (sv_fro 0.9 keeps 90% of the weight norm).</span>'),
            labelled("New rank", self.resize_rank), labelled("Conv rank (0 = same)", self.resize_conv_rank),
            labelled("Rank choice", self.resize_method), labelled("Dynamic parameter", self.resize_param),
            labelled("Precision", self.resize_precision), labelled("Save to", self.resize_save_to),
            self.resize_overwrite, self.resize_button])

    def resize(self) -> None:
        """Resize the LoRA with the tab's settings (runs in the worker)."""
        from core.utilities_manager import resize

        method = self.resize_method.value or None
        outcome = resize(self.lora_path.value, self.resize_rank.value, self.resize_save_to.value or None,
                         new_conv_rank=self.resize_conv_rank.value or None, dynamic_method=method,
                         dynamic_param=float(self.resize_param.value) if method else None,
                         save_precision=self.resize_precision.value, overwrite=self.resize_overwrite.value)
        self._written(outcome.path, outcome.summary)

    # ------------------------------------------------------------ Merge
    def _merge_tab(self) -> w.Widget:
        self.merge_files = w.Textarea(placeholder="one LoRA path per line (empty: the LoRA above)",
                                      layout=w.Layout(width="520px", height="70px"))
        self.merge_ratios = _text("strengths, e.g. 0.8, 0.5 (empty: 1 each)")
        self.merge_mode = w.Dropdown(options=MERGE_MODES, value="checkpoint", layout=w.Layout(width="320px"))
        self.merge_base = _text("base model file or diffusers folder", str(self.context.get(BASE_MODEL) or ""))
        self.merge_config = _text("optional: config folder for an offline single file")
        self.merge_rank = w.BoundedIntText(value=32, min=1, max=1024)
        self.merge_precision = w.Dropdown(options=PRECISIONS, value="fp16")
        self.merge_save_to = _text("empty: a name beside the first LoRA")
        self.merge_overwrite = w.Checkbox(value=False, description="overwrite an existing output", indent=False)
        self.merge_button = button("Merge", "primary", "Write the merged file (inputs are kept)", "compress")
        self.merge_button.on_click(self.guarded(lambda *_: self.run_in_background(self.merge, self.merge_button)))
        return w.VBox([
            labelled("LoRA files", self.merge_files), labelled("Strengths", self.merge_ratios),
            labelled("Merge", self.merge_mode), labelled("Base model", self.merge_base),
            labelled("Model config", self.merge_config), labelled("Rank (SVD mode)", self.merge_rank),
            labelled("Precision", self.merge_precision), labelled("Save to", self.merge_save_to),
            self.merge_overwrite, self.merge_button])

    def merge(self) -> None:
        """Merge with the tab's settings (runs in the worker)."""
        from core.try_lora import parse_strengths
        from core.utilities_manager import merge

        files = [line.strip() for line in self.merge_files.value.splitlines() if line.strip()] or [self.lora_path.value]
        ratios = list(parse_strengths(self.merge_ratios.value)) or None  # empty: 1 each
        mode = self.merge_mode.value
        outcome = merge(files, ratios, self.merge_save_to.value or None,
                        base_model=self.merge_base.value if mode == "checkpoint" else None,
                        model_config=self.merge_config.value.strip() or None, concat=mode == "concat",
                        new_rank=self.merge_rank.value if mode == "svd" else None,
                        save_precision=self.merge_precision.value, overwrite=self.merge_overwrite.value)
        counts = ", ".join(f"{Path(name).name}: {count} modules" for name, count in outcome.merged.items())
        self._written(outcome.path, f"{outcome.kind} merged from {counts}")

    # ------------------------------------------------------------ Extract
    def _extract_tab(self) -> w.Widget:
        self.extract_org = _text("the original model (file or diffusers folder)")
        self.extract_tuned = _text("the fine-tuned model")
        self.extract_dim = w.BoundedIntText(value=32, min=1, max=1024)
        self.extract_conv_dim = w.BoundedIntText(value=0, min=0, max=1024)
        self.extract_config = _text("optional: config folder for offline single files")
        self.extract_precision = w.Dropdown(options=PRECISIONS, value="fp16")
        self.extract_save_to = _text("empty: <tuned>_extracted_r<dim>.safetensors")
        self.extract_overwrite = w.Checkbox(value=False, description="overwrite an existing output", indent=False)
        self.extract_button = button("Extract", "primary", "Write a LoRA of the difference", "scissors")
        self.extract_button.on_click(self.guarded(lambda *_: self.run_in_background(self.extract, self.extract_button)))
        return w.VBox([
            labelled("Original model", self.extract_org), labelled("Fine-tuned model", self.extract_tuned),
            labelled("Rank", self.extract_dim), labelled("Conv rank (0 = none)", self.extract_conv_dim),
            labelled("Model config", self.extract_config), labelled("Precision", self.extract_precision),
            labelled("Save to", self.extract_save_to), self.extract_overwrite, self.extract_button])

    def extract(self) -> None:
        """Extract with the tab's settings (runs in the worker)."""
        from core.utilities_manager import extract

        outcome = extract(self.extract_org.value, self.extract_tuned.value, self.extract_dim.value,
                          self.extract_save_to.value or None, conv_dim=self.extract_conv_dim.value or None,
                          model_config=self.extract_config.value.strip() or None,
                          save_precision=self.extract_precision.value, overwrite=self.extract_overwrite.value)
        self._written(outcome.path, f"{outcome.module_count} modules from {', '.join(outcome.parts) or 'no part'}")
