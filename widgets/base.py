"""What every panel shares: a framed root box, a message area, and guarded button handlers.

A panel is view only. Its handlers call ``core`` and show the result; a ``CoreError`` (or the
trainer's or tagger's own error type) is shown as a red message with its hint, never as a traceback.
"""
from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from widgets.style import CSS, ERROR, INFO, OK, WARNING, message_html

@functools.cache
def user_error_types() -> tuple[type[BaseException], ...]:
    """The three layers' error types (messages written for users), imported on first use."""
    from core.errors import CoreError
    from custom.errors import CustomError
    from trainer.errors import TrainerError

    return (CoreError, TrainerError, CustomError)


class MessageArea:
    """A stack of coloured messages under a panel; ``clear`` empties it."""

    def __init__(self) -> None:
        self.widget = w.HTML(value="")
        self._lines: list[str] = []

    def show(self, level: str, message: str, hint: str = "") -> None:
        """Add one message."""
        self._lines.append(message_html(level, message, hint))
        self.widget.value = "".join(self._lines)

    def ok(self, message: str) -> None:
        self.show(OK, message)

    def info(self, message: str) -> None:
        self.show(INFO, message)

    def warning(self, message: str, hint: str = "") -> None:
        self.show(WARNING, message, hint)

    def error(self, message: str, hint: str = "") -> None:
        self.show(ERROR, message, hint)

    def clear(self) -> None:
        self._lines = []
        self.widget.value = ""

    @property
    def text(self) -> str:
        """The messages as plain HTML (tests read it)."""
        return self.widget.value


class Panel:
    """Base class: subclasses build ``self.body`` children and call ``self._finish(title, children)``."""

    title = "Panel"

    def __init__(self) -> None:
        self.messages = MessageArea()
        self.root: w.Box = w.VBox()

    def _finish(self, children: list[w.Widget]) -> None:
        heading = w.HTML(CSS + f"<h3>{self.title}</h3>")
        self.root = w.VBox([heading, *children, self.messages.widget])
        self.root.add_class("lora-panel")

    def display(self) -> None:
        """Show the panel in the notebook cell."""
        from IPython.display import display

        display(self.root)

    def _ipython_display_(self) -> None:  # lets a cell end with just the panel
        self.display()

    def guarded(self, action: Callable[..., Any], *, busy: w.Button | None = None) -> Callable[..., Any]:
        """Wrap a handler: user errors become a red message with the hint; others show a short trace."""

        def handler(*args: Any, **kwargs: Any) -> Any:
            if busy is not None:
                busy.disabled = True
            try:
                return action(*args, **kwargs)
            except user_error_types() as problem:
                self.messages.error(getattr(problem, "message", str(problem)), getattr(problem, "hint", ""))
            except Exception as problem:  # noqa: BLE001 - shown to the user instead of lost in a log
                last = traceback.format_exception_only(type(problem), problem)[-1].strip()
                self.messages.error(f"Unexpected error: {last}",
                                    "Please report it with the notebook's log (File > Save) attached.")
            finally:
                if busy is not None:
                    busy.disabled = False
            return None

        return handler


def button(description: str, style: str = "", tooltip: str = "", icon: str = "") -> w.Button:
    """A button with our sizing; ``style`` is ipywidgets' button_style (primary, success, danger...)."""
    return w.Button(description=description, button_style=style, tooltip=tooltip or description, icon=icon,
                    layout=w.Layout(width="auto", min_width="120px"))


def labelled(label: str, widget: w.Widget, width: str = "180px") -> w.HBox:
    """A fixed-width label beside a widget, so forms line up."""
    return w.HBox([w.Label(label, layout=w.Layout(width=width)), widget])


__all__ = ["MessageArea", "Panel", "button", "labelled", "user_error_types", "ERROR", "INFO", "OK", "WARNING"]
