"""The one exception type of the ``trainer`` layer."""
from __future__ import annotations


class TrainerError(Exception):
    """A problem the user can act on. ``option`` or ``path`` names what is wrong, ``hint`` what to do.

    The command line prints ``str(error)`` without a traceback unless ``--debug`` is given, and
    the events file records it as an ``error`` event with the hint.
    """

    def __init__(self, message: str, hint: str = "", option: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.option = option

    def __str__(self) -> str:
        return f"{self.message}\n  What to do: {self.hint}" if self.hint else self.message
