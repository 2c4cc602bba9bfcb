"""Booru imports through gallery-dl (when it is installed), and the cleaning of the tags it writes.

gallery-dl's ``--write-tags`` saves each picture's tags beside it as ``img.jpg.txt``, one tag per
line, with booru underscores (``long_hair``) and sometimes HTML entities (``&#039;``). The trainer
reads ``img.txt``, one comma-separated line. :func:`clean_booru_folder` converts every such file;
the raw tag files are moved into ``_raw_tags/`` (the trainer skips ``_`` folders), never deleted.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.datasets.files import atomic_write_bytes, is_image_file, move_without_overwrite, require_folder, walk_files
from core.datasets.importers import ImportResult, import_folder
from core.datasets.remote import redact_url
from core.datasets.tags import clean_booru_tags, join_tags, parse_booru_tag_file
from core.errors import CoreError

RAW_TAGS_DIR = "_raw_tags"
_OUTPUT_LINES = 8


@dataclass(frozen=True)
class TagCleanResult:
    """Captions written from raw tag files, and the raw files left alone (with why)."""

    written: tuple[Path, ...]
    kept_aside: tuple[Path, ...]  # raw tag files moved to _raw_tags/
    skipped: tuple[str, ...]


def gallery_dl_executable() -> str | None:
    """The gallery-dl command when it is installed, else None (booru import is then unavailable)."""
    return shutil.which("gallery-dl")


def booru_caption_for(raw_tag_file: Path) -> tuple[Path, Path] | None:
    """(image, caption) for a gallery-dl tag file ``img.jpg.txt``: ``img.jpg`` and ``img.txt``; else None."""
    if raw_tag_file.suffix.lower() != ".txt":
        return None
    image = raw_tag_file.with_suffix("")  # img.jpg.txt -> img.jpg
    if not is_image_file(image):
        return None
    return image, image.with_suffix(".txt")


def clean_booru_folder(folder: Path, recursive: bool = True) -> TagCleanResult:
    """Turn every ``img.<ext>.txt`` beside its image into a clean ``img.txt`` caption.

    An existing ``img.txt`` with different content is left as it is (reported in ``skipped``):
    the user's caption wins. The raw file goes to ``_raw_tags/`` beside it either way only when
    a caption was written or already matched.
    """
    folder = require_folder(folder)
    written, aside, skipped = [], [], []
    for raw in walk_files(folder, recursive):
        pair = booru_caption_for(raw)
        if pair is None:
            continue
        image, caption = pair
        if not image.is_file():
            skipped.append(f"{raw.name}: no image {image.name} beside it")
            continue
        try:
            text = raw.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            skipped.append(f"{raw.name}: not UTF-8 text")
            continue
        data = (join_tags(clean_booru_tags(parse_booru_tag_file(text))) + "\n").encode("utf-8")
        if caption.exists():
            if caption.read_bytes() != data:
                skipped.append(f"{raw.name}: {caption.name} already exists with other text; kept it")
                continue
        else:
            atomic_write_bytes(caption, data)
            written.append(caption)
        aside.append(move_without_overwrite(raw, raw.parent / RAW_TAGS_DIR / raw.name))
    return TagCleanResult(tuple(written), tuple(aside), tuple(skipped))


def import_booru(
    url: str,
    datasets_dir: Path,
    project: str,
    repeats: int = 10,
    concept: str = "concept",
    *,
    limit: int | None = 100,
    on_conflict: str = "error",
    executable: str | None = None,
    timeout: float | None = None,
) -> ImportResult:
    """Download a booru search or pool with gallery-dl (tags included), clean the tags, import the result.

    ``limit`` caps the number of files (gallery-dl's ``--range``). Raises :class:`CoreError` when
    gallery-dl is not installed or fails.
    """
    exe = executable or gallery_dl_executable()
    if not exe:
        raise CoreError("Booru import needs gallery-dl, which is not installed.",
                        hint="Install it with 'pip install gallery-dl', or download the images yourself and import the folder.")
    if limit is not None and limit < 1:
        raise CoreError(f"The image limit must be 1 or more, not {limit}.", hint="Use e.g. 100.")
    datasets_dir = Path(datasets_dir)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".booru-", dir=datasets_dir))
    command = [exe, "--write-tags", "-D", str(staging)]
    if limit is not None:
        command += ["--range", f"1-{limit}"]
    try:
        try:
            done = subprocess.run(command + [url], capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as problem:
            raise CoreError(f"gallery-dl could not run for {redact_url(url)}: {problem}.",
                            hint="Check gallery-dl works: 'gallery-dl --version'.") from problem
        if done.returncode != 0 and not any(is_image_file(p) for p in walk_files(staging)):
            tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-_OUTPUT_LINES:])
            raise CoreError(f"gallery-dl failed for {redact_url(url)} (exit {done.returncode}):\n{tail}",
                            hint="Check the link opens in a browser; some sites need cookies or a login (see gallery-dl's docs).")
        clean_booru_folder(staging)
        return import_folder(staging, datasets_dir, project, repeats, concept, on_conflict=on_conflict)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gallery-dl's download folder, already copied
