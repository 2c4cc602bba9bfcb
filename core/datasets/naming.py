"""Names that are safe on every OS, and the ``<repeats>_<concept>`` folder convention.

A project or concept name typed by a user ends up as a folder on a Linux server, then maybe in a
zip opened on Windows or macOS. So names lose the characters any of those refuse (``<>:"/\\|?*``,
control characters), trailing dots and spaces (Windows drops them), Windows' reserved device names
(``CON``, ``NUL``, ``COM1`` ...), and a leading ``.`` or ``_`` (the trainer skips such folders).
Unicode is kept, NFC-normalised so the same name is the same bytes however it was typed.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from core.errors import CoreError

_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_SPACES = re.compile(r"\s+")
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)
# 255 bytes is the usual per-component limit; leave room for "10_" and " (2)" suffixes.
_MAX_NAME_BYTES = 120
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.*)$")  # as the trainer reads them: "10_" is a folder too


def sanitize_name(name: str, what: str = "name") -> str:
    """``name`` made safe as one folder or file name on Linux, Windows and macOS.

    Raises :class:`CoreError` when nothing usable is left (an empty or all-symbol name).
    """
    text = unicodedata.normalize("NFC", str(name))
    text = _SPACES.sub(" ", text).strip()  # first, so a tab becomes a space rather than "_"
    text = _FORBIDDEN.sub("_", text)
    text = text.lstrip("._ ").rstrip(". ")
    encoded = text.encode("utf-8")[:_MAX_NAME_BYTES]
    text = encoded.decode("utf-8", errors="ignore").rstrip(". ")  # never cut a character in half
    if not text:
        raise CoreError(f"The {what} {name!r} has no usable characters.",
                        hint="Use letters, digits, spaces, '-' or '_' (for example 'mychar').")
    if text.split(".")[0].upper() in _RESERVED:
        text = f"{text}_"  # "CON.txt" is as reserved as "CON" on Windows
    return text


def project_name(name: str) -> str:
    """The one project-name rule of both notebooks: ``name`` as a safe folder and file name.

    The dataset panel (``datasets/<project>``) and the training form (``training_configs/<project>``,
    ``outputs/<project>``, the LoRA's file name) both use it, so "Alice Smith" is the same project
    everywhere. Names are accepted and made safe rather than refused: spaces and Unicode are kept,
    characters no OS allows become ``_``. Raises :class:`CoreError` when nothing usable is left.
    """
    return sanitize_name(name, "project name")


def subset_folder_name(repeats: int, concept: str) -> str:
    """The trainer's ``N_name`` folder: ``10_mychar`` trains each image 10 times per epoch.

    Raises :class:`CoreError` for a repeat count below 1 or an unusable concept name.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise CoreError(f"Repeats must be a whole number of 1 or more, not {repeats!r}.",
                        hint="Use e.g. 10 for 10-20 images, 5 for 50, 1 for hundreds.")
    return f"{repeats}_{sanitize_name(concept, 'concept name')}"


def parse_subset_folder(name: str) -> tuple[int, str] | None:
    """(repeats, concept) of an ``N_name`` folder name, or None when it is not one."""
    match = _REPEAT_FOLDER.match(name)
    if not match or int(match.group(1)) < 1:
        return None
    return int(match.group(1)), match.group(2)


def is_skipped_dir(name: str) -> bool:
    """Folders the trainer and these tools never look into: ``.hidden`` and ``_rejected``-style ones."""
    return name.startswith((".", "_"))


def free_path(path: Path) -> Path:
    """``path`` if nothing is there, else ``name (2).ext``, ``name (3).ext``, ... (never overwrites)."""
    if not path.exists() and not path.is_symlink():
        return path
    number = 2
    while True:
        candidate = path.with_name(f"{path.stem} ({number}){path.suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
        number += 1
