"""The one exception type of the ``custom`` layer (the WD14 tagger and the captioners)."""
from __future__ import annotations


class CustomError(Exception):
    """A problem the user can act on: what went wrong (naming the file or option) and, in ``hint``, what to do.

    The command-line tools print ``str(error)`` without a traceback unless ``--debug`` is given;
    ``core`` catches it and shows the message in the notebook.
    """

    def __init__(self, message: str, hint: str = "", option: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.option = option

    def __str__(self) -> str:
        return f"{self.message}\n  What to do: {self.hint}" if self.hint else self.message
