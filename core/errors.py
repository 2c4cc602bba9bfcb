"""The one exception type of the ``core`` layer."""
from __future__ import annotations


class CoreError(Exception):
    """A problem the user can act on: what went wrong, and (in ``hint``) what to do about it.

    The widgets show ``str(error)``; the command-line tools print it without a traceback
    unless ``--debug`` is given.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  What to do: {self.hint}" if self.hint else self.message


def cli_error(error: CoreError, debug: bool = False) -> int:
    """What a ``core`` command line does with a user error: print it plainly (exit code 2), or re-raise
    it with its traceback when ``--debug`` was given."""
    if debug:
        raise error
    import sys

    print(f"Error: {error}", file=sys.stderr)
    return 2
