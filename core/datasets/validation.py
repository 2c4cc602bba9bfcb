"""Check a dataset folder by decoding every image, and report what is wrong with which file.

Nothing is changed here: :func:`validate_dataset` only reads, and returns a
:class:`ValidationReport`. The fixes the user picks from it live in :mod:`core.datasets.fixes`.

Each image is opened twice over: its header (format, mode, size: enough to refuse a
decompression bomb before decoding it) and then a full decode with the trainer's own
``try_load_image_rgb``, so an image passes here exactly when the trainer can use it.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.datasets.files import list_images, require_folder, walk_files
from core.datasets.hashing import (
    DEFAULT_AHASH_BITS, DEFAULT_DHASH_BITS, PerceptualHash, near_duplicate_pairs, perceptual_hash,
)
from core.datasets.naming import parse_subset_folder
from trainer.data.captions import caption_path

# Finding kinds. Broken ones make an image unusable; the trainer skips them.
EMPTY = "empty"  # zero bytes
CORRUPT = "corrupt"  # not an image at all (no readable header)
TRUNCATED = "truncated"  # header fine, pixels fail to decode (cut short or damaged)
HUGE = "huge"  # over the pixel limit (decompression-bomb guard)
TOO_SMALL = "too_small"
CMYK = "cmyk"
SIXTEEN_BIT = "16bit"
PALETTE = "palette"
ALPHA = "alpha"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
NO_CAPTION = "no_caption"
EMPTY_CAPTION = "empty_caption"
BAD_CAPTION = "bad_caption"  # not UTF-8
ORPHAN_CAPTION = "orphan_caption"
OUTSIDE_SUBSET = "outside_subset"  # an image the trainer will not read (not directly in an N_name folder)

BROKEN_KINDS = (EMPTY, CORRUPT, TRUNCATED, HUGE)
ODD_MODE_KINDS = (CMYK, SIXTEEN_BIT, PALETTE, ALPHA)
# The trainer's decompression-bomb limit (trainer.data.images.DEFAULT_MAX_PIXELS, Pillow's own), written
# out so this module loads without Pillow and numpy; a test keeps the two equal.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_MIN_SIDE = 256  # the usual min_bucket_reso: smaller images are enlarged, and look it
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass(frozen=True)
class Finding:
    """One problem with one file. ``related`` is the other file of a duplicate pair (the one kept)."""

    kind: str
    path: Path
    detail: str
    related: Path | None = None


@dataclass(frozen=True)
class ImageInfo:
    """A decodable image: upright size, mode as stored, format, and its hashes."""

    path: Path
    size: tuple[int, int]  # (w, h) after EXIF rotation, as the trainer sees it
    mode: str
    format: str
    sha256: str
    phash: PerceptualHash


@dataclass(frozen=True)
class ValidationSettings:
    """The limits a report was made with."""

    min_side: int = DEFAULT_MIN_SIDE
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    caption_extension: str = ".txt"
    max_dhash_bits: int = DEFAULT_DHASH_BITS
    max_ahash_bits: int = DEFAULT_AHASH_BITS
    recursive: bool = True


@dataclass(frozen=True)
class ValidationReport:
    """Everything :func:`validate_dataset` found under ``root``."""

    root: Path
    settings: ValidationSettings
    images: tuple[ImageInfo, ...]  # decodable images only
    image_files: tuple[Path, ...]  # every file with an image extension, decodable or not
    findings: tuple[Finding, ...]

    def of_kind(self, *kinds: str) -> tuple[Finding, ...]:
        """The findings of the given kinds, in file order."""
        return tuple(f for f in self.findings if f.kind in kinds)

    def paths(self, *kinds: str) -> set[Path]:
        """The files with a finding of the given kinds."""
        return {f.path for f in self.of_kind(*kinds)}

    @property
    def ok(self) -> bool:
        """True when nothing at all was found."""
        return not self.findings

    def counts(self) -> dict[str, int]:
        """Findings per kind."""
        counts: dict[str, int] = defaultdict(int)
        for finding in self.findings:
            counts[finding.kind] += 1
        return dict(counts)

    def summary_lines(self, limit: int = 200) -> list[str]:
        """Human-readable lines: a count per kind, then one line per finding (up to ``limit``)."""
        good = len(self.images)
        lines = [f"{self.root}: {len(self.image_files)} image file(s), {good} decodable, {len(self.findings)} finding(s)."]
        lines += [f"  {kind}: {count}" for kind, count in sorted(self.counts().items())]
        for finding in self.findings[:limit]:
            shown = finding.path.relative_to(self.root) if finding.path.is_relative_to(self.root) else finding.path
            lines.append(f"  [{finding.kind}] {shown}: {finding.detail}")
        if len(self.findings) > limit:
            lines.append(f"  ... and {len(self.findings) - limit} more")
        return lines


@dataclass(frozen=True)
class _Checked:
    info: ImageInfo | None
    findings: tuple[Finding, ...]


def _mode_findings(path: Path, mode: str, info: dict) -> list[Finding]:
    found = []
    if mode == "CMYK":
        found.append(Finding(CMYK, path, "CMYK (print) colours; some tools show them wrongly"))
    if mode in _SIXTEEN_BIT_MODES:
        found.append(Finding(SIXTEEN_BIT, path, f"{mode}: more than 8 bits per channel"))
    if mode in ("P", "PA"):
        found.append(Finding(PALETTE, path, "palette image (limited colours)"))
    if mode in _ALPHA_MODES or "transparency" in info:
        found.append(Finding(ALPHA, path, "has transparency; training sees it on white"))
    return found


def _check_image(path: Path, settings: ValidationSettings) -> _Checked:
    """Header, then full decode; the findings of one image file."""
    from PIL import Image  # decoding is the only part of this module that needs Pillow

    from trainer.data.images import try_load_image_rgb

    data = path.read_bytes()
    if not data:
        return _Checked(None, (Finding(EMPTY, path, "the file is empty (0 bytes)"),))
    try:
        with Image.open(io.BytesIO(data)) as header:
            mode, stored_size, fmt, info = header.mode, header.size, header.format or "?", dict(header.info)
    except Image.DecompressionBombError as problem:
        return _Checked(None, (Finding(HUGE, path, f"too large to open safely ({problem})"),))
    except Exception as problem:  # noqa: BLE001 - Pillow raises many types for non-images
        return _Checked(None, (Finding(CORRUPT, path, f"not a readable image ({type(problem).__name__})"),))
    pixels = stored_size[0] * stored_size[1]
    if settings.max_pixels is not None and pixels > settings.max_pixels:
        return _Checked(None, (Finding(HUGE, path, f"{stored_size[0]}x{stored_size[1]} = {pixels:,} pixels, over the "
                                                   f"{settings.max_pixels:,} limit (decompression-bomb guard)"),))
    image, reason = try_load_image_rgb(path, settings.max_pixels)
    if image is None:
        return _Checked(None, (Finding(TRUNCATED, path, f"the header reads but the pixels do not: {reason}"),))
    with image:
        info_out = ImageInfo(path, image.size, mode, fmt, hashlib.sha256(data).hexdigest(), perceptual_hash(image))
    findings = _mode_findings(path, mode, info)
    width, height = info_out.size
    if min(width, height) < settings.min_side:
        findings.append(Finding(TOO_SMALL, path, f"{width}x{height}: shorter side under {settings.min_side} px, "
                                                 "training enlarges it and it will look soft"))
    return _Checked(info_out, tuple(findings))


def _caption_findings(files: list[Path], image_files: list[Path], decodable: list[Path],
                      settings: ValidationSettings) -> list[Finding]:
    """Missing, empty and unreadable captions of decodable images (a broken image has a bigger
    problem), and caption files whose image is not there at all."""
    found = []
    extension = settings.caption_extension if settings.caption_extension.startswith(".") else f".{settings.caption_extension}"
    for image in decodable:
        caption = caption_path(image, extension)
        if not caption.is_file():
            found.append(Finding(NO_CAPTION, image, f"no {caption.name} beside it"))
            continue
        try:
            text = caption.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            found.append(Finding(BAD_CAPTION, caption, "not UTF-8 text; the trainer cannot read it"))
            continue
        if not text.strip():
            found.append(Finding(EMPTY_CAPTION, caption, "the caption file is empty"))
    stems = {(p.parent, p.stem) for p in image_files}
    for path in files:
        if path.suffix.lower() == extension.lower() and (path.parent, path.stem) not in stems:
            found.append(Finding(ORPHAN_CAPTION, path, "a caption with no image of the same name beside it"))
    return found


def _layout_findings(root: Path, image_files: list[Path]) -> list[Finding]:
    """Images the trainer will not read: not directly inside an ``N_name`` folder."""
    subset_root = parse_subset_folder(root.name) is not None
    has_subsets = any(p.is_dir() and parse_subset_folder(p.name) for p in root.iterdir())
    if not (subset_root or has_subsets):
        return []  # a plain folder: the statistics and import steps explain the layout instead
    return [Finding(OUTSIDE_SUBSET, image, "not directly inside an N_name folder; the trainer will not read it")
            for image in image_files if parse_subset_folder(image.parent.name) is None]


def _has_caption(image: Path, settings: ValidationSettings) -> bool:
    """True when ``image`` has a caption file with some text in it (the copy worth keeping)."""
    extension = settings.caption_extension if settings.caption_extension.startswith(".") else f".{settings.caption_extension}"
    try:
        return bool(caption_path(image, extension).read_bytes().strip())
    except OSError:
        return False


def _duplicate_findings(images: list[ImageInfo], settings: ValidationSettings) -> list[Finding]:
    found = []
    copies: dict[str, list[ImageInfo]] = defaultdict(list)
    for info in images:
        copies[info.sha256].append(info)
    # Which copy stays: one with a caption (moving it aside would lose the user's words from
    # training), else the first in file order. The others are reported as its duplicates.
    keep_of = {digest: next((i for i in group if _has_caption(i.path, settings)), group[0])
               for digest, group in copies.items()}
    unique: list[ImageInfo] = []
    for info in images:
        keep = keep_of[info.sha256]
        if info is keep:
            unique.append(info)
        else:
            found.append(Finding(DUPLICATE, info.path, f"same bytes as {keep.path.name}", related=keep.path))
    # Exact copies are reported once above; near-duplicates are looked for among distinct files only.
    for i, j, d_bits, a_bits in near_duplicate_pairs([u.phash for u in unique], settings.max_dhash_bits, settings.max_ahash_bits):
        keep, drop = unique[i], unique[j]
        keep_area, drop_area = keep.size[0] * keep.size[1], drop.size[0] * drop.size[1]
        if drop_area > keep_area or (drop_area == keep_area and _has_caption(drop.path, settings)
                                     and not _has_caption(keep.path, settings)):
            keep, drop = drop, keep  # suggest rejecting the smaller copy (at equal size, the uncaptioned one)
        found.append(Finding(NEAR_DUPLICATE, drop.path, f"looks like {keep.path.name} ({d_bits}+{a_bits} of 128 hash "
                                                        f"bits differ; {drop.size[0]}x{drop.size[1]} vs {keep.size[0]}x{keep.size[1]})",
                             related=keep.path))
    return found


def validate_dataset(root: Path, settings: ValidationSettings | None = None, *, workers: int | None = None) -> ValidationReport:
    """Decode every image under ``root`` and report broken files, odd modes, sizes, duplicates and captions.

    ``root`` may be a project folder (holding ``N_name`` folders) or one image folder. Folders
    starting with ``.`` or ``_`` (``_rejected/``, ``.caption_history/``) are not looked into.
    """
    settings = settings or ValidationSettings()
    root = require_folder(root, "dataset folder")
    files = list(walk_files(root, settings.recursive))
    image_files = list_images(root, settings.recursive)
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="validate") as pool:
        checked = list(pool.map(lambda path: _check_image(path, settings), image_files))  # map keeps file order
    images = [c.info for c in checked if c.info is not None]
    findings = [f for c in checked for f in c.findings]
    findings += _duplicate_findings(images, settings)
    findings += _caption_findings(files, image_files, [i.path for i in images], settings)
    findings += _layout_findings(root, image_files)
    return ValidationReport(root, settings, tuple(images), tuple(image_files), tuple(findings))
