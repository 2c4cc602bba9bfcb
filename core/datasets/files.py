"""File operations every dataset tool shares: atomic writes, moves that never overwrite, listing.

The user's images and captions are the one thing we must not lose, so writes go to a temporary
file in the same folder and are renamed into place (a crash leaves the old file or the new one,
never half of either), and moves refuse to replace an existing file.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.datasets.naming import free_path, is_skipped_dir
from core.errors import CoreError
from trainer.data.blueprint import IMAGE_EXTENSIONS  # plain data: no numpy/PIL when a panel opens


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename.

    An existing file's permission bits are kept. Raises :class:`CoreError` naming the file.
    """
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as problem:
        raise CoreError(f"Cannot write in {path.parent}: {problem.strerror or problem}.",
                        hint="Check the folder exists and is writable, and that the disk is not full.") from problem
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except OSError as problem:
        temp.unlink(missing_ok=True)  # our own temp file, never the user's
        raise CoreError(f"Cannot write {path}: {problem.strerror or problem}.",
                        hint="Check the file is writable and the disk is not full.") from problem


def move_without_overwrite(source: Path, target: Path) -> Path:
    """Move ``source`` to ``target``, or to ``target (2)`` etc. when taken; return where it went."""
    target = free_path(Path(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # os.rename on one filesystem is atomic; shutil.move copies across filesystems.
        shutil.move(str(source), str(target))
    except OSError as problem:
        raise CoreError(f"Cannot move {source} to {target}: {problem.strerror or problem}.",
                        hint="Check both folders are writable.") from problem
    return target


def walk_files(root: Path, recursive: bool = True) -> Iterator[Path]:
    """Regular files under ``root`` in sorted order, skipping dot-files and ``.``/``_`` folders.

    ``_rejected/``, ``_originals/`` and ``.caption_history/`` are ours; the trainer skips them too.
    Symlinked folders are not followed (a link loop or a link out of the dataset is not ours to walk).
    """
    root = Path(root)
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as problem:
        raise CoreError(f"Cannot list {root}: {problem.strerror or problem}.", hint="Check the folder exists.") from problem
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if recursive and not is_skipped_dir(entry.name):
                yield from walk_files(entry, recursive)
        elif entry.is_file():
            yield entry


def is_image_file(path: Path | str) -> bool:
    """True when ``path`` has an extension the trainer reads as an image (any letter case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(root: Path, recursive: bool = True) -> list[Path]:
    """Image files (png jpg jpeg webp bmp, any letter case) under ``root``; see :func:`walk_files`."""
    return [path for path in walk_files(root, recursive) if is_image_file(path)]


def require_folder(folder: Path, what: str = "folder") -> Path:
    """``folder`` resolved, or a :class:`CoreError` when it is not an existing folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CoreError(f"The {what} {folder} does not exist or is not a folder.", hint="Check the path.")
    return folder.resolve()
