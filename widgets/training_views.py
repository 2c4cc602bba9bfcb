"""Small view pieces of the training panel: the steps formula, findings with Fix buttons, file previews,
and the per-folder settings editor."""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from widgets.base import button
from widgets.style import ERROR, ICONS, INFO, WARNING, message_html

_LEVEL = {"error": ERROR, "warning": WARNING, "info": INFO}
NO_FOLDER = ""  # the value of the hint entry shown while there are no folders
NO_FOLDERS_HINT = "(choose a dataset first)"


def steps_html(steps: Any) -> str:
    """The total steps, big, with the arithmetic under it."""
    if steps is None:
        return '<div class="lora-muted">Total steps: counted once the base model and the dataset folder are chosen and the red checks below are fixed.</div>'
    note = f'<div class="lora-muted">{html.escape(steps.note)}</div>' if steps.note else ""
    return (f"<div><b>Total steps: {steps.total_steps}</b> ({steps.epochs} epochs, {steps.images} images)</div>"
            f'<div class="lora-mono">{html.escape(steps.formula)}</div>{note}')


def finding_row(finding: Any, on_fix: Callable[[dict[str, Any]], None]) -> tuple[w.Widget, w.Button | None]:
    """One finding as a coloured message, with a Fix button when it has a fix."""
    names = ", ".join(finding.options)
    text = f"{names}: {finding.message}" if names and not finding.message.startswith(finding.options[0]) else finding.message
    level = _LEVEL.get(finding.level, INFO)
    reason = f'<span class="lora-hint">{html.escape(finding.reason)}</span>' if finding.reason else ""
    message = w.HTML(f'<div class="lora-msg lora-{level}">{ICONS[level]} {html.escape(text)}{reason}</div>',
                     layout=w.Layout(flex="1 1 auto"))
    if not finding.fix:
        return message, None
    shown = ", ".join(f"{key} = {value!r}" if value is not None else f"{key} unset" for key, value in finding.fix.items())
    fix = button("Fix", "info", f"Set {shown}", "wrench")
    fix.on_click(lambda _button: on_fix(dict(finding.fix)))
    return w.HBox([message, fix], layout=w.Layout(align_items="center")), fix


def preview_html(plan: Any) -> str:
    """The exact text of the files Start/Save would write."""
    if plan is None:
        return '<div class="lora-muted">Fix the errors above to see the files.</div>'
    parts = [f"<b>{html.escape(str(plan.training_path))}</b>",
             f'<div class="lora-help lora-mono">{html.escape(plan.training_text)}</div>']
    if plan.dataset_path:
        parts += [f"<b>{html.escape(str(plan.dataset_path))}</b>",
                  f'<div class="lora-help lora-mono">{html.escape(plan.dataset_text or "")}</div>']
    return "".join(parts)


class FolderSettings:
    """Per-folder (subset) settings: pick an N_name folder, an option, a value; listed below."""

    def __init__(self, subset_options: list[str], on_change: Callable[[], None]) -> None:
        self.overrides: dict[str, dict[str, Any]] = {}
        self._on_change = on_change
        self.folder = w.Dropdown(options=[], description="folder", layout=w.Layout(width="280px"))
        self.option = w.Dropdown(options=subset_options, description="option", layout=w.Layout(width="320px"))
        self.value = w.Text(placeholder="value, e.g. true or 0.1", layout=w.Layout(width="200px"))
        self.set_button = button("Set for folder", tooltip="Use this value for the chosen folder only")
        self.clear_button = button("Clear folder", tooltip="Remove every per-folder setting of the chosen folder")
        self.listing = w.HTML()
        self.note = w.HTML()  # why a click did nothing, right beside the buttons
        self.set_button.on_click(lambda _b: self._set())
        self.clear_button.on_click(lambda _b: self._clear())
        self.box = w.VBox([w.HTML('<div class="lora-muted">Settings for one N_name folder only (written to the '
                                  "dataset config).</div>"),
                           w.HBox([self.folder, self.option, self.value, self.set_button, self.clear_button]),
                           self.note, self.listing])
        self.set_folders([])

    def set_folders(self, names: list[str]) -> None:
        """The folders to choose from (the dataset folder's N_name folders); a hint entry when there are none."""
        previous = self.folder.value
        self.folder.options = list(names) or [(NO_FOLDERS_HINT, NO_FOLDER)]
        self.folder.value = previous if previous in names else (names[0] if names else NO_FOLDER)

    def replace(self, overrides: dict[str, dict[str, Any]]) -> None:
        """Show ``overrides`` (from a loaded config)."""
        self.overrides = {name: dict(values) for name, values in overrides.items()}
        self._render()

    def _set(self) -> None:
        if not self.folder.value:
            self.note.value = message_html(WARNING, "Nothing set: there is no N_name folder to choose.",
                                           "Choose a dataset folder holding folders like 10_mychar first.")
            return
        if not self.option.value or not str(self.value.value).strip():
            self.note.value = message_html(WARNING, "Nothing set: type a value first.",
                                           "For example true, 0.1 or .caption, depending on the option.")
            return
        self.note.value = ""
        self.overrides.setdefault(self.folder.value, {})[self.option.value] = self.value.value
        self._render()
        self._on_change()

    def _clear(self) -> None:
        if not self.overrides.get(self.folder.value):
            self.note.value = message_html(INFO, "This folder has no settings of its own to clear.")
            return
        self.note.value = ""
        self.overrides.pop(self.folder.value, None)
        self._render()
        self._on_change()

    def _render(self) -> None:
        rows = [f"<li><code>{html.escape(folder)}</code>: "
                + ", ".join(f"{html.escape(k)} = {html.escape(repr(v))}" for k, v in values.items()) + "</li>"
                for folder, values in sorted(self.overrides.items()) if values]
        self.listing.value = f"<ul>{''.join(rows)}</ul>" if rows else ""
