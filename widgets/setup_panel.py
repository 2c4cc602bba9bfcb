"""The first panel of both notebooks: the machine, the project folders, "check my setup" and model downloads.

View only. ``core.managers.SetupManager`` probes the machine (nvidia-smi, not torch, so the panel
opens fast), ``core.selfcheck`` runs the check, ``core.base_models`` fetches a base model.
"""
from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from widgets.base import ERROR, INFO, WARNING, Panel, button
from widgets.context import NotebookContext
from widgets.style import message_html

if TYPE_CHECKING:
    from core.environment import EnvWarning

# core.environment decides how bad a warning is; the panel only picks the colour for each level.
_LEVEL_STYLES = {"error": ERROR, "warning": WARNING, "info": INFO}
_FOLDER_LABELS = {
    "work_dir": "work folder", "datasets": "datasets", "models": "base models", "vae": "VAEs",
    "outputs": "your LoRAs", "logs": "logs", "training_configs": "training configs", "cache": "cache",
}


class SetupPanel(Panel):
    """Environment report with plain-language warnings, the project folders, a self-check and
    (with ``downloads=True``, in the trainer notebook) the base-model download section.

    Attributes tests and notebooks drive: ``report_html``, ``warnings_html``, ``folders_html``,
    ``refresh_button``; ``check_button``, ``check_progress``, ``check_stages``, ``check_verdict``;
    and with downloads ``preset``, ``url``, ``hf_token``, ``civitai_token``, ``remember_tokens``,
    ``download_button``, ``download_progress``, ``download_text``, ``download_result``.
    """

    title = "Setup: your machine and folders"

    def __init__(self, context: NotebookContext, downloads: bool = False) -> None:
        from widgets.setup_check import SelfCheckSection

        super().__init__()
        self.context = context
        self.report_html = w.HTML("")
        self.warnings_html = w.HTML("")
        self.folders_html = w.HTML("")
        self.refresh_button = button("Refresh", tooltip="Probe the machine again", icon="refresh")
        self.refresh_button.on_click(self.guarded(self.refresh, busy=self.refresh_button))

        self.self_check = SelfCheckSection(context, self.guarded)
        self.check_button = self.self_check.check_button
        self.check_progress = self.self_check.progress
        self.check_stages = self.self_check.stages_html
        self.check_verdict = self.self_check.verdict
        children: list[w.Widget] = [self.report_html, self.warnings_html, self.folders_html, self.refresh_button,
                                    self.self_check.widget]

        self.download = None
        if downloads:
            from widgets.setup_download import DownloadSection

            self.download = DownloadSection(context, self.guarded)
            self.preset = self.download.preset
            self.url = self.download.url
            self.hf_token = self.download.hf_token
            self.civitai_token = self.download.civitai_token
            self.remember_tokens = self.download.remember_tokens
            self.download_button = self.download.download_button
            self.download_progress = self.download.progress
            self.download_text = self.download.progress_text
            self.download_result = self.download.result
            children.append(self.download.widget)
        self._finish(children)
        self.guarded(self.refresh)()

    def refresh(self, *_: Any) -> None:
        """Probe the machine and the folders again and redraw the report."""
        from core.managers import SetupManager

        manager = SetupManager(self.context.paths)
        report = manager.environment()
        gpu = report.gpu
        if gpu:
            gpu_line = f"{gpu.name}, {gpu.vram_gb:.1f} GB VRAM" + (f" ({len(report.gpus)} GPUs)" if len(report.gpus) > 1 else "")
        else:
            gpu_line = "none found (CPU only)"
        torch_line = (f"{report.torch_version} ({'CUDA ' + report.torch_cuda if report.torch_cuda else 'CPU build'})"
                      if report.torch_version else "not installed")
        rows = [
            ("Platform", report.platform.value),
            ("GPU", gpu_line),
            ("CUDA", f"{report.cuda_version}" + (f", driver {gpu.driver_version}" if gpu else "")
             if report.cuda_version else "none"),
            ("bf16", "yes" if report.bf16_supported else "no"),
            ("PyTorch", torch_line),
            ("Python", report.python_version),
            ("RAM", f"{report.ram_available_gb:.1f} GB free of {report.ram_total_gb:.1f} GB"
             if report.ram_total_gb is not None else "unknown"),
        ]
        self.report_html.value = _table(rows)
        self.warnings_html.value = warnings_html(report.warnings)
        folders = [(_FOLDER_LABELS.get(item.name, item.name),
                    f"{item.path}  ({item.free_gb:.1f} GB free{'' if item.exists else ', created when first used'})")
                   for item in manager.folder_space()]
        self.folders_html.value = "<b>Project folders</b>" + _table(folders, mono=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the self-check and the download running in the background are done."""
        finished = self.self_check.worker.wait(timeout)
        if self.download is not None:
            finished = self.download.worker.wait(timeout) and finished
        return finished


def warnings_html(warnings: Iterable[EnvWarning]) -> str:
    """The environment warnings (``core.environment.EnvWarning``), each coloured by its level."""
    return "".join(message_html(_LEVEL_STYLES.get(warning.level, WARNING), warning.message) for warning in warnings)


def _table(rows: list[tuple[str, str]], mono: bool = False) -> str:
    """A two-column table of escaped label/value pairs."""
    cell = ' class="lora-mono"' if mono else ""
    body = "".join(f"<tr><td style='padding-right:14px'><b>{html.escape(label)}</b></td>"
                   f"<td{cell}>{html.escape(value)}</td></tr>" for label, value in rows)
    return f'<table class="lora-section">{body}</table>'
