"""One status per image for the dataset grid: ok, or what is wrong with it, and how bad that is.

Two sources: :func:`quick_statuses` only lists files and looks for captions (instant, for a first
look at a large set), and :func:`statuses_from_report` turns a validation report (every image
decoded) into per-image statuses. A caption problem (empty, not UTF-8) is shown on its image.
The folders the trainer reads are named by :func:`image_folders`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from core.datasets import validation as v
from core.datasets.files import list_images, require_folder
from core.datasets.naming import is_skipped_dir, parse_subset_folder
from trainer.data.captions import caption_path

OK, INFO, WARNING, ERROR = "ok", "info", "warning", "error"
NOT_CHECKED = "not_checked"

# Short words for the grid's badges, and how serious each finding is. Broken files cannot train.
LABELS = {
    v.EMPTY: "empty file", v.CORRUPT: "corrupt", v.TRUNCATED: "truncated", v.HUGE: "too large",
    v.TOO_SMALL: "small", v.CMYK: "CMYK", v.SIXTEEN_BIT: "16-bit", v.PALETTE: "palette", v.ALPHA: "alpha",
    v.DUPLICATE: "duplicate", v.NEAR_DUPLICATE: "near duplicate", v.NO_CAPTION: "no caption",
    v.EMPTY_CAPTION: "empty caption", v.BAD_CAPTION: "caption not UTF-8", v.OUTSIDE_SUBSET: "not trained",
    NOT_CHECKED: "not checked",
}
ERROR_KINDS = frozenset(v.BROKEN_KINDS) | {v.BAD_CAPTION}
CAPTIONLESS_KINDS = (v.NO_CAPTION, v.EMPTY_CAPTION)  # the image trains on its folder's class tokens only
# A grid cell is 150 px wide: about three tags fit on two short lines.
CAPTION_PREVIEW_TAGS = 3
CAPTION_PREVIEW_CHARS = 48

# The grid's filter choices: name -> the kinds it shows (() every image, ("*",) any finding).
FILTERS = {
    "all": (),
    "problems": ("*",),
    "broken": tuple(v.BROKEN_KINDS),
    "duplicates": (v.DUPLICATE, v.NEAR_DUPLICATE),
    "captions": (v.NO_CAPTION, v.EMPTY_CAPTION, v.BAD_CAPTION),
    "odd modes": tuple(v.ODD_MODE_KINDS),
}


@dataclass(frozen=True)
class ImageStatus:
    """One image of the grid: where it is, its findings (empty: ok) and their details."""

    path: Path
    relative: str  # shown under the thumbnail, relative to the dataset folder
    kinds: tuple[str, ...]
    details: tuple[str, ...]
    checked: bool  # False: only listed (quick_statuses), not decoded yet
    caption: str = ""  # the caption line the trainer reads ("" when there is none)

    @property
    def level(self) -> str:
        """ok, warning or error: the worst of its findings; info for an image not decoded yet."""
        if any(kind in ERROR_KINDS for kind in self.kinds):
            return ERROR
        real = [kind for kind in self.kinds if kind != NOT_CHECKED]
        if real:
            return WARNING
        return OK if self.checked else INFO

    @property
    def label(self) -> str:
        """The badge text: "ok" or the findings' short names."""
        if not self.kinds:
            return "ok"
        return ", ".join(LABELS.get(kind, kind) for kind in self.kinds)

    def caption_preview(self, tags: int = CAPTION_PREVIEW_TAGS, chars: int = CAPTION_PREVIEW_CHARS) -> str:
        """The caption's first ``tags`` tags, cut at ``chars`` characters, for a grid cell ("" when none)."""
        from core.datasets.tags import split_tags

        words = split_tags(self.caption)
        text = ", ".join(words[:tags]) + (", ..." if len(words) > tags else "")
        return text if len(text) <= chars else text[: chars - 3].rstrip(", ") + "..."

    def matches(self, filter_name: str) -> bool:
        """True when this image belongs under the grid filter ``filter_name`` (see ``FILTERS``)."""
        wanted = FILTERS.get(filter_name, ())
        if not wanted:
            return True
        real = [kind for kind in self.kinds if kind != NOT_CHECKED]
        if wanted == ("*",):
            return bool(real)
        return any(kind in wanted for kind in real)


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def read_caption_line(image: Path, caption_extension: str = ".txt") -> str:
    """The first non-empty line of ``image``'s caption, as the trainer reads it ("" when missing or unreadable)."""
    try:
        text = caption_path(image, caption_extension).read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return ""  # validation reports an unreadable caption; the grid just shows none
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def quick_statuses(root: Path, caption_extension: str = ".txt") -> list[ImageStatus]:
    """Every image under ``root`` with only "no caption" known: listing, no decoding (fast on any size)."""
    root = require_folder(root, "dataset folder")
    statuses = []
    for image in list_images(root, recursive=True):
        missing = not caption_path(image, caption_extension).is_file()
        kinds = ((v.NO_CAPTION,) if missing else ()) + (NOT_CHECKED,)
        details = (f"no {caption_path(image, caption_extension).name} beside it",) if missing else ()
        caption = "" if missing else read_caption_line(image, caption_extension)
        statuses.append(ImageStatus(image, _relative(root, image), kinds, details, checked=False, caption=caption))
    return statuses


def statuses_from_report(report: v.ValidationReport) -> list[ImageStatus]:
    """One status per image file of ``report`` (decodable or not), in file order."""
    extension = report.settings.caption_extension
    extension = extension if extension.startswith(".") else f".{extension}"
    by_image: dict[Path, list[v.Finding]] = defaultdict(list)
    images = set(report.image_files)
    by_caption = {caption_path(image, extension): image for image in report.image_files}
    for finding in report.findings:
        if finding.path in images:
            by_image[finding.path].append(finding)
        elif finding.path in by_caption:  # empty or unreadable caption: show it on its image
            by_image[by_caption[finding.path]].append(finding)
    statuses = []
    for image in report.image_files:
        found = by_image.get(image, [])
        kinds = tuple(dict.fromkeys(f.kind for f in found))
        statuses.append(ImageStatus(image, _relative(report.root, image), kinds, tuple(f.detail for f in found), True,
                                    caption=read_caption_line(image, extension)))
    return statuses


def count_levels(statuses: list[ImageStatus]) -> dict[str, int]:
    """How many images are ok, not checked yet (info), have warnings, or are broken."""
    counts = {OK: 0, INFO: 0, WARNING: 0, ERROR: 0}
    for status in statuses:
        counts[status.level] += 1
    return counts


def count_captionless(statuses: list[ImageStatus]) -> int:
    """How many images have no caption, or an empty one (they train on the folder's class tokens only)."""
    return sum(1 for status in statuses if any(kind in CAPTIONLESS_KINDS for kind in status.kinds))


def image_folders(root: Path) -> list[Path]:
    """The folders the trainer reads images from: ``root``'s ``N_name`` folders, else ``root`` itself."""
    root = require_folder(root, "dataset folder")
    if parse_subset_folder(root.name) is not None:
        return [root]
    children = sorted(p for p in root.iterdir()
                      if p.is_dir() and not is_skipped_dir(p.name) and parse_subset_folder(p.name) is not None)
    return children or [root]


def page_of(items: list, page: int, per_page: int) -> tuple[list, int, int]:
    """The items of page ``page`` (0-based, clamped), the page actually shown, and the number of pages."""
    per_page = max(1, per_page)
    pages = max(1, -(-len(items) // per_page))
    page = min(max(page, 0), pages - 1)
    return items[page * per_page:(page + 1) * per_page], page, pages
