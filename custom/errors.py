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


def report_cli_error(problem: Exception, debug: bool = False) -> int:
    """What the tagger and captioner command lines do with an error: one plain message and exit code 1
    (a ``CustomError`` as written, anything else as a probable bug), or the traceback with ``--debug``."""
    if debug:
        raise problem
    import sys

    if isinstance(problem, CustomError):
        print(f"Error: {problem}", file=sys.stderr)
    else:
        print(f"Unexpected error: {type(problem).__name__}: {problem}\n"
              "  What to do: this looks like a bug; run again with --debug and report the traceback.", file=sys.stderr)
    return 1
