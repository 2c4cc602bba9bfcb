"""Import files uploaded through the browser (the notebook's upload button) into a dataset.

The browser hands over names and bytes only. They are written to a hidden staging folder inside
the datasets folder (same disk) and imported from there with the folder or zip importer, so an
upload gets exactly the checks and the no-overwrite rule of any other import; the staging copy is
removed afterwards. Names are reduced to their last component: an upload cannot choose a path.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.datasets.files import is_image_file
from core.datasets.importers import CAPTION_EXTENSIONS, ImportResult, import_folder, import_zip
from core.datasets.naming import sanitize_name
from core.errors import CoreError


@dataclass(frozen=True)
class UploadedFile:
    """One file from the browser: its name as the user's machine called it, and its bytes."""

    name: str
    content: bytes


def _safe_name(name: str) -> str:
    """The last component of ``name`` (browsers may send ``folder/img.png`` or ``C:\\...``), made safe."""
    last = name.replace("\\", "/").rstrip("/").split("/")[-1]
    return sanitize_name(last, "file name")


def import_uploads(files: Sequence[UploadedFile], datasets_dir: Path, project: str, repeats: int = 10,
                   concept: str = "concept", *, on_conflict: str = "error") -> ImportResult:
    """Import images and captions (or one zip) uploaded through the browser.

    Either one ``.zip`` (imported with the zip importer's safety checks), or any number of images
    with their caption files. Other files are left out and listed in ``skipped``.
    """
    if not files:
        raise CoreError("No files were uploaded.", hint="Click the upload button and pick your images (or one zip).")
    zips = [f for f in files if f.name.lower().endswith(".zip")]
    if zips and len(files) > 1:
        raise CoreError(f"Upload either one zip or images with captions, not {len(zips)} zip(s) mixed with "
                        f"{len(files) - len(zips)} other file(s).", hint="Upload the zip on its own.")
    datasets_dir = Path(datasets_dir)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=datasets_dir))
    try:
        if zips:
            archive = staging / _safe_name(zips[0].name)
            archive.write_bytes(zips[0].content)
            return import_zip(archive, datasets_dir, project, repeats, concept, on_conflict=on_conflict)
        wanted, skipped = _stage(files, staging)
        if not wanted:
            raise CoreError("None of the uploaded files is an image (png jpg jpeg webp bmp) or a caption.",
                            hint="Pick image files, their .txt captions, or one zip.")
        result = import_folder(staging, datasets_dir, project, repeats, concept, on_conflict=on_conflict)
        return ImportResult(result.target, result.files, result.images, result.captions,
                            result.skipped + tuple(skipped), result.warnings)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own staging copy; the imported files are elsewhere


def _stage(files: Sequence[UploadedFile], staging: Path) -> tuple[list[Path], list[str]]:
    """Write the wanted uploads into ``staging``; refuse two uploads with the same name."""
    wanted, skipped, seen = [], [], set()
    for item in files:
        name = _safe_name(item.name)
        if not (is_image_file(name) or Path(name).suffix.lower() in CAPTION_EXTENSIONS):
            skipped.append(f"{item.name} (not an image or caption)")
            continue
        if name.lower() in seen:
            raise CoreError(f"Two uploaded files are both called {name}. Nothing was imported.",
                            hint="Rename one of them, or upload them as a zip that keeps their folders.")
        seen.add(name.lower())
        path = staging / name
        path.write_bytes(item.content)
        wanted.append(path)
    return wanted, skipped
