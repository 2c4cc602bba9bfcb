"""Read and save one image's caption from the notebook's caption editor, with a snapshot for undo.

Saving goes through the same snapshot as the bulk edits (``.caption_history`` of the dataset
folder), so the caption panel's Undo also takes back a hand edit. The file keeps its UTF-8 BOM
and its CRLF line endings when it had them: only the words the user changed are different.
"""
from __future__ import annotations

from pathlib import Path

from core.datasets.caption_history import FileChange, Snapshot, write_snapshot
from core.datasets.files import atomic_write_bytes, require_folder
from core.errors import CoreError
from trainer.data.captions import caption_path

_BOM = b"\xef\xbb\xbf"


def read_caption_text(image: Path, caption_extension: str = ".txt") -> str:
    """The whole caption text of ``image`` ("" when it has none); BOM dropped, line endings as ``\\n``."""
    path = caption_path(image, caption_extension)
    if not path.is_file():
        return ""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        raise CoreError(f"The caption {path} is not UTF-8 text, so it cannot be edited here.",
                        hint="Open it in a text editor and save it as UTF-8.") from problem
    return text.replace("\r\n", "\n")


def caption_bytes(text: str, before: bytes | None) -> bytes:
    """``text`` encoded like the file it replaces: BOM and CRLF kept when ``before`` had them."""
    bom = before is not None and before.startswith(_BOM)
    crlf = before is not None and b"\r\n" in before
    text = text.replace("\r\n", "\n")
    if crlf:
        text = text.replace("\n", "\r\n")
    return (_BOM if bom else b"") + text.encode("utf-8")


def save_caption(folder: Path, image: Path, text: str, caption_extension: str = ".txt") -> Snapshot | None:
    """Write ``text`` as ``image``'s caption, snapshot first (in ``folder``'s history). None: nothing changed.

    ``image`` must be inside ``folder`` (the dataset folder whose Undo should restore it).
    """
    folder = require_folder(folder, "dataset folder")
    image = Path(image).resolve()
    if not image.is_relative_to(folder):
        raise CoreError(f"{image} is not inside the dataset folder {folder}.", hint="Choose the image from the list.")
    if not image.is_file():
        raise CoreError(f"The image {image} is no longer there.", hint="Refresh the list of images.")
    path = caption_path(image, caption_extension)
    before = path.read_bytes() if path.is_file() else None
    if before is not None:
        read_caption_text(image, caption_extension)  # refuses a caption that is not UTF-8 before replacing it
    after = caption_bytes(text, before)
    if after == before or (before is None and not text.strip()):
        return None
    snapshot = write_snapshot(folder, f"hand edit of {path.name}", [FileChange(path, before, after)])
    atomic_write_bytes(path, after)
    return snapshot
