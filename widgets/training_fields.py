"""One widget per training option, generated from the trainer's options table.

``OptionField`` picks the widget from the option's kind: a Checkbox for booleans, bounded number
boxes (with a "set" tick when the option may stay unset), a Dropdown whose labels are only shown
and whose values are what gets stored, and text boxes for paths, lists and resolutions. A "?"
button opens the explanation (what it does, typical values, the allowed range).
"""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from trainer.options.schema import (
    BOOL, CHOICE, FLOAT, FLOAT_LIST, INT, NUMBER, RESOLUTION, STR_LIST, Option, range_text,
)

UNSET = ""  # the Dropdown value of "(not set)"; the form reads it as None
_BIG = 1e12
LABEL_WIDTH = "240px"


def _number_widget(option: Option, value: float | int) -> w.Widget:
    low = option.minimum if option.minimum is not None else -_BIG
    high = option.maximum if option.maximum is not None else _BIG
    layout = w.Layout(width="160px")
    if option.kind == INT:
        return w.BoundedIntText(value=int(value), min=int(low), max=int(min(high, 2**53)), layout=layout)
    return w.BoundedFloatText(value=float(value), min=float(low), max=float(high), layout=layout)


def _choice_options(option: Option) -> list[tuple[str, Any]]:
    choices = [(option.label_for(choice), choice) for choice in option.choices]
    if option.default is None:
        choices.insert(0, ("(not set)", UNSET))
    return choices


def _text_of(option: Option, value: Any) -> str:
    if value is None:
        return ""
    if option.kind == STR_LIST:
        return "\n".join(str(item) for item in value)
    if option.kind == RESOLUTION:
        width, height = (value, value) if isinstance(value, int) else value
        return str(width) if width == height else f"{width},{height}"
    if option.kind == FLOAT_LIST and isinstance(value, (list, tuple)):
        return ", ".join(repr(float(item)) for item in value)
    return str(value)


class OptionField:
    """The widget(s) of one option. ``widget`` holds the value; ``toggle`` (a "set" Checkbox) exists
    for numbers that may stay unset. ``value()`` gives what the form stores; ``set_value`` shows one."""

    def __init__(self, option: Option, has_cuda: bool = True, on_change: Callable[[], None] | None = None) -> None:
        self.option = option
        self.toggle: w.Checkbox | None = None
        self.widget = self._make_widget()
        self.help_button = w.ToggleButton(value=False, description="?", tooltip=f"Explain {option.name}",
                                          layout=w.Layout(width="32px"))
        self.help_html = w.HTML("", layout=w.Layout(display="none"))
        self.help_button.observe(self._toggle_help, names="value")
        flags = []
        if option.needs_cuda and not has_cuda:
            flags.append("needs an NVIDIA GPU (none found)")
        if not option.implemented:
            flags.append("accepted but not used by this trainer yet")
            self.widget.disabled = True
        self.flag_html = w.HTML(f'<span class="lora-muted">⚠ {html.escape("; ".join(flags))}</span>' if flags else "")
        # A plain-language title when the table has one ("Network size (dim)"); the option's name
        # (what a TOML file calls it) is in the tooltip and the explanation.
        shown = html.escape(option.title) if option.title else f"<code>{html.escape(option.name)}</code>"
        self.label = w.HTML(shown, layout=w.Layout(width=LABEL_WIDTH), tooltip=f"{option.name}: {option.help}")
        parts = [self.label] + ([self.toggle] if self.toggle else []) + [self.widget, self.help_button, self.flag_html]
        self.box = w.VBox([w.HBox(parts), self.help_html])
        if on_change is not None:
            self.widget.observe(lambda _change: on_change(), names="value")
            if self.toggle is not None:
                self.toggle.observe(lambda _change: on_change(), names="value")

    def _make_widget(self) -> w.Widget:
        option, default = self.option, self.option.default
        if option.kind == BOOL:
            return w.Checkbox(value=bool(default), indent=False, layout=w.Layout(width="auto"))
        if option.kind == CHOICE or (option.choices and option.kind == INT):
            value = UNSET if default is None else default
            return w.Dropdown(options=_choice_options(option), value=value, layout=w.Layout(width="260px"))
        if option.kind in (INT, FLOAT, NUMBER):
            if default is None:
                self.toggle = w.Checkbox(value=False, indent=False, description="set", layout=w.Layout(width="60px"))
                start = option.minimum if option.minimum is not None and option.minimum > 0 else (
                    1 if option.kind == INT else 0.0)
                return _number_widget(option, start)
            return _number_widget(option, default)
        if option.kind == STR_LIST:
            return w.Textarea(value=_text_of(option, default), placeholder="one item per line, e.g. key=value",
                              rows=2, layout=w.Layout(width="360px"))
        placeholder = {RESOLUTION: "1024 or 832,1216", FLOAT_LIST: "one number, or two for SDXL"}.get(option.kind, "")
        return w.Text(value=_text_of(option, default), placeholder=placeholder or "(not set)",
                      layout=w.Layout(width="360px"))

    def value(self) -> Any:
        """What the form stores: typed for numbers, booleans and choices; text for the rest (None when unset)."""
        if self.toggle is not None and not self.toggle.value:
            return None
        raw = self.widget.value
        if isinstance(self.widget, w.Dropdown):
            return None if raw == UNSET else raw
        if self.option.kind == STR_LIST:
            return [line.strip() for line in str(raw).splitlines() if line.strip()]
        if isinstance(raw, str):
            return raw.strip() or None
        if self.option.kind == NUMBER and isinstance(raw, float) and raw.is_integer() and raw >= 1:
            return int(raw)
        return raw

    def set_value(self, value: Any) -> None:
        """Show ``value`` (None: the table's default, or unset)."""
        option = self.option
        if value is None:
            value = option.default
        if self.toggle is not None:
            self.toggle.value = value is not None
            if value is None:
                return
        if isinstance(self.widget, w.Dropdown):
            self.widget.value = UNSET if value is None else option.normalise(value)
        elif option.kind == BOOL:
            self.widget.value = bool(value)
        elif option.kind in (INT, FLOAT, NUMBER):
            self.widget.value = value
        else:
            self.widget.value = _text_of(option, value)

    def _toggle_help(self, change: dict) -> None:
        if change["new"] and not self.help_html.value:
            self.help_html.value = explanation_html(self.option)
        self.help_html.layout.display = "" if change["new"] else "none"


def explanation_html(option: Option) -> str:
    """The educational text of one option: what it does, typical values, range, default."""
    named = f"<code>{html.escape(option.name)}</code>"
    head = f"<b>{html.escape(option.title)}</b> ({named})" if option.title else f"<b>{named}</b>"
    parts = [f"{head}: {html.escape(option.help)}"]
    if option.explanation:
        parts.append(html.escape(option.explanation))
    allowed = range_text(option)
    if option.labels:
        allowed = ", ".join(f"{label} (stored as {value})" for value, label in option.labels)
    if allowed:
        parts.append(f"Allowed: {html.escape(allowed)}")
    parts.append(f"Default: {html.escape('not set' if option.default is None else _text_of(option, option.default) or repr(option.default))}")
    if not option.implemented:
        parts.append("Accepted for compatibility with sd-scripts configs, but this trainer does not use it yet.")
    return '<div class="lora-help">' + "<br>".join(parts) + "</div>"
