"""The fixes a user can choose after validation. None of them deletes anything.

* :func:`move_rejects` moves chosen files (with their captions) into ``<root>/_rejected/``,
  keeping their relative paths, and logs each move with its reason in ``_rejected/moves.tsv``.
  The trainer skips folders starting with ``_``, so a rejected file no longer trains; moving it
  back restores it.
* :func:`convert_images` rewrites odd-mode images (CMYK, 16-bit, palette, alpha) as plain 8-bit
  RGB PNG or JPEG, exactly as the trainer would see them, and keeps each original in
  ``<root>/_originals/``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.datasets.files import atomic_write_bytes, is_image_file, move_without_overwrite
from core.datasets.validation import BROKEN_KINDS, ODD_MODE_KINDS, Finding, ValidationReport
from core.errors import CoreError
from trainer.data.captions import caption_path
from trainer.errors import TrainerError

REJECTED_DIR = "_rejected"
ORIGINALS_DIR = "_originals"
MOVES_LOG = "moves.tsv"
DEFAULT_REJECT_KINDS = BROKEN_KINDS
FORMATS = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg"}


@dataclass(frozen=True)
class MovedFile:
    """One file moved aside: from where, to where, why."""

    source: Path
    dest: Path
    reason: str


@dataclass(frozen=True)
class ConvertedImage:
    """One conversion: the new RGB file, and where the untouched original now is."""

    original: Path
    converted: Path
    backup: Path


@dataclass(frozen=True)
class FixResult:
    """What a fix did, and what it left alone (with why)."""

    moved: tuple[MovedFile, ...] = ()
    converted: tuple[ConvertedImage, ...] = ()
    skipped: tuple[str, ...] = ()

    def summary_lines(self) -> list[str]:
        """Lines for the CLI and the panel."""
        lines = [f"moved {m.source} -> {m.dest} ({m.reason})" for m in self.moved]
        lines += [f"converted {c.original.name} -> {c.converted.name} (original kept at {c.backup})" for c in self.converted]
        lines += [f"skipped {reason}" for reason in self.skipped]
        return lines or ["nothing to do"]


def _aside(root: Path, folder: str, path: Path) -> Path:
    relative = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    return root / folder / relative


def _log_moves(root: Path, moved: list[MovedFile]) -> None:
    if not moved:
        return
    log = root / REJECTED_DIR / MOVES_LOG
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    old = log.read_bytes() if log.exists() else "time\treason\tfrom\tto\n".encode("utf-8")
    lines = "".join(f"{stamp}\t{m.reason}\t{m.source.relative_to(root)}\t{m.dest.relative_to(root)}\n" for m in moved)
    atomic_write_bytes(log, old + lines.encode("utf-8"))


def move_rejects(
    report: ValidationReport,
    kinds: tuple[str, ...] = DEFAULT_REJECT_KINDS,
    *,
    paths: set[Path] | None = None,
    caption_extension: str | None = None,
) -> FixResult:
    """Move every file with a finding of ``kinds`` (or only those in ``paths``) into ``_rejected/``.

    An image's caption file goes with it, so no orphan caption is left behind. Files that are no
    longer there (moved by hand since the report) are skipped and listed.
    """
    root = report.root
    extension = caption_extension or report.settings.caption_extension
    reasons: dict[Path, str] = {}
    for finding in report.of_kind(*kinds):
        if paths is None or finding.path in paths:
            reasons.setdefault(finding.path, finding.kind)
    moved, skipped = [], []
    for path, reason in reasons.items():
        if not path.exists():
            skipped.append(f"{path}: no longer there")
            continue
        moved.append(MovedFile(path, move_without_overwrite(path, _aside(root, REJECTED_DIR, path)), reason))
        caption = caption_path(path, extension)
        if is_image_file(path) and caption.is_file() and caption not in reasons:
            moved.append(MovedFile(caption, move_without_overwrite(caption, _aside(root, REJECTED_DIR, caption)),
                                   f"caption of {path.name}"))
    _log_moves(root, moved)
    return FixResult(moved=tuple(moved), skipped=tuple(skipped))


def _encode(path: Path, fmt: str, quality: int) -> bytes:
    from trainer.data.images import load_image_rgb  # Pillow and numpy: only when converting

    try:
        image = load_image_rgb(path)
    except TrainerError as problem:
        raise CoreError(problem.message, problem.hint) from problem
    buffer = io.BytesIO()
    with image:
        if fmt == ".png":
            image.save(buffer, "PNG", optimize=False)
        else:
            # 4:4:4 chroma: thin coloured lines in anime art smear with the default 4:2:0.
            image.save(buffer, "JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def _convert_one(root: Path, path: Path, suffix: str, quality: int) -> ConvertedImage | str:
    target = path.with_suffix(suffix)
    if target != path and target.exists() and not target.samefile(path):
        return f"{path}: {target.name} already exists beside it"
    data = _encode(path, suffix, quality)  # decode before anything moves: a failure leaves all as it was
    backup = move_without_overwrite(path, _aside(root, ORIGINALS_DIR, path))
    try:
        atomic_write_bytes(target, data)
    except CoreError:
        move_without_overwrite(backup, path)  # put the original back where it was
        raise
    return ConvertedImage(original=path, converted=target, backup=backup)


def convert_images(
    report: ValidationReport,
    kinds: tuple[str, ...] = ODD_MODE_KINDS,
    *,
    image_format: str = "png",
    quality: int = 95,
    paths: set[Path] | None = None,
) -> FixResult:
    """Rewrite images with a finding of ``kinds`` as 8-bit RGB ``png`` or ``jpeg``; originals to ``_originals/``.

    The new file keeps the stem, so its caption still matches. Alpha is flattened onto white and
    EXIF rotation applied, as the trainer does. A name clash (``img.png`` converting to ``img.jpg``
    beside an existing ``img.jpg``) skips that image.
    """
    suffix = FORMATS.get(image_format.lower())
    if suffix is None:
        raise CoreError(f"Unknown image format {image_format!r}.", hint="Use 'png' (lossless) or 'jpeg'.")
    if not 1 <= quality <= 100:
        raise CoreError(f"JPEG quality must be 1 to 100, not {quality}.", hint="95 keeps nearly all detail.")
    findings: list[Finding] = [f for f in report.of_kind(*kinds) if paths is None or f.path in paths]
    converted, skipped = [], []
    for path in dict.fromkeys(f.path for f in findings):  # an image may have several odd-mode findings
        if not path.exists():
            skipped.append(f"{path}: no longer there")
            continue
        outcome = _convert_one(report.root, path, suffix, quality)
        if isinstance(outcome, str):
            skipped.append(outcome)
        else:
            converted.append(outcome)
    return FixResult(converted=tuple(converted), skipped=tuple(skipped))
