"""Finding images and writing caption files safely, shared by the WD14 tagger and the captioners.

A caption file is the user's work: an existing one is only replaced or extended when the caller
chose so (:class:`ExistingPolicy`), and every write goes to a temporary file in the same folder
that is then renamed over the target, so an interrupted run never leaves half a caption.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from custom.errors import CustomError
from trainer.data.captions import caption_path
from trainer.data.images import is_image_file

# Folders never entered when listing images: hidden ones and the rejects the dataset validator moves aside.
_SKIPPED_FOLDERS = frozenset({"_rejected"})


class ExistingPolicy(str, Enum):
    """What to do when an image already has a non-empty caption file."""

    SKIP = "skip"  # keep it untouched and do not process the image (the default everywhere)
    OVERWRITE = "overwrite"  # replace it (explicit choice)
    APPEND = "append"  # keep it and add the new text after it


@dataclass(frozen=True)
class CaptionTarget:
    """One image to caption, its caption file and that file's current text (None when absent or empty)."""

    image: Path
    caption: Path
    existing: str | None


def normalise_extension(extension: str, option: str = "--caption_extension") -> str:
    """``txt`` -> ``.txt``; refuses empty, path-like or image extensions (they would clobber images)."""
    extension = extension.strip()
    if not extension.startswith("."):
        extension = "." + extension
    if extension == "." or "/" in extension or "\\" in extension or is_image_file("x" + extension):
        raise CustomError(f"{option} {extension!r} is not a usable caption extension.",
                          hint="Use something like .txt or .caption.", option=option)
    return extension


def list_images(directory: Path | str, recursive: bool) -> list[Path]:
    """Image files in ``directory`` (png jpg jpeg webp bmp, any letter case), sorted, hidden files left out.

    With ``recursive`` sub-folders are searched too, except hidden ones and ``_rejected``.
    Raises :class:`CustomError` when ``directory`` is not a folder.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise CustomError(f"Image folder {root} does not exist or is not a folder.",
                          hint="Give the folder that holds your images (or its parent with --recursive).")
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        # Pruning in place is how os.walk is told not to descend.
        subfolders[:] = sorted(d for d in subfolders if recursive and not d.startswith(".")
                               and d not in _SKIPPED_FOLDERS)
        found.extend(Path(folder) / name for name in files if not name.startswith(".") and is_image_file(name))
    return sorted(found)


def read_text(path: Path) -> str | None:
    """The whole text of a caption file (UTF-8, BOM dropped), or None when there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as problem:
        raise CustomError(f"Cannot read caption file {path}: {problem.strerror or problem}.",
                          hint="Check the file's permissions.") from problem
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        raise CustomError(f"Caption file {path} is not UTF-8 text (bad byte at position {problem.start}).",
                          hint="Open it in a text editor and save it as UTF-8, or choose another --caption_extension.") \
            from problem


def plan_targets(images: list[Path], extension: str, policy: ExistingPolicy,
                 log: Callable[[str], None] = print) -> tuple[list[CaptionTarget], list[Path]]:
    """Split ``images`` into those to process and those left alone because they already have a caption.

    A caption file holding only whitespace counts as no caption. A caption file that is not
    UTF-8 is never merged: it is replaced with OVERWRITE and otherwise left alone (and named).
    Deciding this before decoding means skipped images cost nothing.
    """
    todo: list[CaptionTarget] = []
    kept: list[Path] = []
    for image in images:
        target = caption_path(image, extension)
        try:
            text = read_text(target)
        except CustomError as problem:
            if policy is ExistingPolicy.OVERWRITE:
                todo.append(CaptionTarget(image, target, None))
            else:
                log(f"Left {target} alone: {problem.message}")
                kept.append(image)
            continue
        existing = text if text is not None and text.strip() else None
        if existing is not None and policy is ExistingPolicy.SKIP:
            kept.append(image)
        else:
            todo.append(CaptionTarget(image, target, existing))
    return todo, kept


def merge_first_line(existing: str | None, new_line: str, merge: Callable[[str, str], str]) -> str:
    """The text to write: ``new_line`` alone, or ``merge(old_first_line, new_line)`` in place of the
    existing file's first non-empty line, every other line kept as it was (trainers read line one)."""
    if existing is None or not existing.strip():
        return new_line
    lines = existing.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip())
    lines[first] = merge(lines[first].strip(), new_line)
    return "\n".join(line.rstrip("\r") for line in lines)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(text.encode("utf-8"))
        # mkstemp makes the file private (0600); a caption should read like any other file.
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as problem:
        Path(temporary).unlink(missing_ok=True)
        raise CustomError(f"Cannot write caption file {path}: {problem.strerror or problem}.",
                          hint="Check the folder's permissions and free disk space.") from problem
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
