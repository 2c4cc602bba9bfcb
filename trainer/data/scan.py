"""Scan the datasets once, before training: decode every image, read every caption, bucket them.

Every image is decoded here (a few threads, since Pillow releases the GIL while decoding), so a
truncated or fake file is found in seconds, named with its reason and skipped (or, with
``strict``, refused) instead of crashing a run hours in. Only files directly in each subset's
image folder count: sub-folders are not entered (sd-scripts does not either), and hidden files
such as macOS ``._name.jpg`` companions are ignored. Nothing in the folders is written.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from trainer.data.blueprint import DatasetSpec, SubsetSpec
from trainer.data.buckets import BucketAssignment, BucketSelector, Size
from trainer.data.captions import CaptionFile, caption_path, read_caption_file, tags_of
from trainer.data.images import DEFAULT_MAX_PIXELS, is_image_file, try_load_image_rgb
from trainer.data.regularisation import balance_regularisation
from trainer.errors import TrainerError

CAPTION_FILE = "file"
CAPTION_CLASS_TOKENS = "class_tokens"
CAPTION_NONE = "none"
_LISTED = 5  # names shown in one warning before "and N more"


@dataclass(frozen=True)
class ImageRecord:
    """One usable training image and everything later stages need to know about it."""

    path: Path
    dataset_index: int
    subset_index: int
    caption: str  # raw caption: the file's first line, else the class tokens, else ""
    caption_source: str  # CAPTION_FILE, CAPTION_CLASS_TOKENS or CAPTION_NONE
    original_size: Size  # (w, h) after EXIF rotation
    assignment: BucketAssignment
    num_repeats: int
    is_reg: bool
    subset: SubsetSpec  # caption rules and flip_aug, for the batch loader

    @property
    def bucket(self) -> Size:
        """The (w, h) bucket this image trains in."""
        return self.assignment.bucket


@dataclass(frozen=True)
class SkippedImage:
    """An image file that could not be used, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class BucketCount:
    """Images in one bucket: distinct files, and samples per epoch (files x repeats)."""

    images: int
    with_repeats: int


@dataclass(frozen=True)
class ScanResult:
    """What the scan found. Dict fields are built once and not changed afterwards."""

    records: tuple[ImageRecord, ...]
    skipped: tuple[SkippedImage, ...]
    warnings: tuple[str, ...]
    bucket_table: dict[Size, BucketCount]  # all datasets together, sorted by bucket
    subset_image_counts: dict[tuple[int, int], int]  # (dataset_index, subset_index) -> usable images
    dataset_dirs: dict[str, dict[str, int]]  # ss_dataset_dirs: {dir: {"n_repeats", "img_count"}}
    reg_dataset_dirs: dict[str, dict[str, int]]  # ss_reg_dataset_dirs, same shape
    tag_frequency: dict[str, dict[str, int]]  # ss_tag_frequency: {dir: {tag: count}}

    @property
    def num_train_images(self) -> int:
        """Training (non-regularisation) samples per epoch, repeats included (ss_num_train_images)."""
        return sum(r.num_repeats for r in self.records if not r.is_reg)

    @property
    def num_reg_images(self) -> int:
        """Regularisation samples per epoch, repeats included (ss_num_reg_images)."""
        return sum(r.num_repeats for r in self.records if r.is_reg)


@dataclass(frozen=True)
class _Job:
    dataset_index: int
    subset_index: int
    path: Path


@dataclass(frozen=True)
class _Inspection:
    size: Size | None
    caption: CaptionFile | None
    reason: str  # why the image is unusable; "" when usable


def _list_images(subset: SubsetSpec, where: str) -> list[Path]:
    folder = Path(subset.image_dir)
    if not folder.is_dir():
        raise TrainerError(f"{where}: image_dir {folder} does not exist or is not a folder.",
                           hint="Check the path in your dataset config or train_data_dir.", option="image_dir")
    files = [p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and is_image_file(p)]
    return sorted(files, key=lambda p: p.name)


def _inspect(job: _Job, extension: str, max_pixels: int | None) -> _Inspection:
    image, reason = try_load_image_rgb(job.path, max_pixels)
    if image is None:
        return _Inspection(None, None, reason)
    size = image.size
    image.close()  # only the size is kept; pixels are decoded again when the batch is built
    try:
        caption = read_caption_file(job.path, extension)
    except TrainerError as problem:
        return _Inspection(None, None, f"its caption file cannot be used ({problem.message})")
    return _Inspection(size, caption, "")


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:_LISTED])
    return shown + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")


def _caption_of(inspection: _Inspection, subset: SubsetSpec) -> tuple[str, str]:
    if inspection.caption is not None and inspection.caption.text:
        return inspection.caption.text, CAPTION_FILE
    if subset.class_tokens:
        return subset.class_tokens, CAPTION_CLASS_TOKENS
    return "", CAPTION_NONE


def _subset_warnings(subset: SubsetSpec, images: list[Path], results: list[_Inspection], used: int) -> list[str]:
    folder = Path(subset.image_dir)
    warnings = []
    good = [(p, r) for p, r in zip(images, results) if not r.reason]
    no_caption = [p for p, r in good if r.caption is None or not r.caption.text]
    if no_caption and not subset.class_tokens:
        warnings.append(f"{len(no_caption)} image(s) in {folder} have no caption and the folder has no class tokens, "
                        f"so they train with an empty caption: {_names(no_caption)}.")
    empty = [r.caption.path for _, r in good if r.caption is not None and not r.caption.text]
    if empty:
        warnings.append(f"{len(empty)} caption file(s) in {folder} are empty: {_names(empty)}.")
    multi = [r.caption.path for _, r in good if r.caption is not None and r.caption.ignored_lines]
    if multi:
        warnings.append(f"{len(multi)} caption file(s) in {folder} have more than one line; only the first "
                        f"non-empty line is used: {_names(multi)}.")
    extension = caption_path(folder / "x.png", subset.caption_extension).suffix.lower()
    stems = {p.stem for p in folder.iterdir() if p.is_file() and is_image_file(p)}
    orphans = sorted(p for p in folder.iterdir()
                     if p.is_file() and p.suffix.lower() == extension and not p.name.startswith(".") and p.stem not in stems)
    if orphans:
        warnings.append(f"{len(orphans)} caption file(s) in {folder} have no image beside them: {_names(orphans)}.")
    if used == 0:
        warnings.append(f"Subset {folder} has no usable images; it adds nothing to training.")
    return warnings


def _unique_key(table: dict[str, dict], folder: Path) -> str:
    # Two subsets may share a folder name (or a folder): keep both entries, as "name (2)".
    key, number = folder.name, 2
    while key in table:
        key, number = f"{folder.name} ({number})", number + 1
    return key


def _strict_error(skipped: list[SkippedImage]) -> TrainerError:
    lines = "\n".join(f"  {s.path}: {s.reason}" for s in skipped[:50])
    more = f"\n  ... and {len(skipped) - 50} more" if len(skipped) > 50 else ""
    return TrainerError(
        f"{len(skipped)} image(s) cannot be used (strict_images is on):\n{lines}{more}",
        hint="Fix or remove these files, or turn strict_images off to skip them with a warning.",
        option="strict_images",
    )


def scan_datasets(
    datasets: tuple[DatasetSpec, ...],
    strict: bool,
    *,
    workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Decode every image of ``datasets``, read captions, assign buckets; see :class:`ScanResult`.

    ``workers`` threads decode (default: 2 to 4 by CPU count); results come back in folder and
    file-name order whatever the thread timing. Undecodable images are skipped and listed, or,
    when ``strict``, reported all at once in a :class:`TrainerError`. ``progress(done, total)``
    is called as images finish. Raises :class:`TrainerError` when no training image is usable.
    """
    selectors = [BucketSelector.for_dataset(dataset) for dataset in datasets]  # bad bucket options fail before decoding
    listed: list[tuple[int, int, list[Path]]] = []
    for d, dataset in enumerate(datasets):
        for s, subset in enumerate(dataset.subsets):
            listed.append((d, s, _list_images(subset, f"dataset {d + 1} subset {s + 1}")))
    jobs = [_Job(d, s, path) for d, s, paths in listed for path in paths]
    workers = workers or max(2, min(4, os.cpu_count() or 2))

    def run(job: _Job) -> _Inspection:
        return _inspect(job, datasets[job.dataset_index].subsets[job.subset_index].caption_extension, max_pixels)

    results: list[_Inspection] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan") as pool:
        for inspection in pool.map(run, jobs):  # map keeps the input order
            results.append(inspection)
            if progress is not None:
                progress(len(results), len(jobs))

    records: list[ImageRecord] = []
    skipped: list[SkippedImage] = []
    warnings: list[str] = []
    counts: dict[tuple[int, int], int] = {}
    dataset_dirs: dict[str, dict[str, int]] = {}
    reg_dirs: dict[str, dict[str, int]] = {}
    tag_frequency: dict[str, dict[str, int]] = {}
    position = 0
    for d, s, paths in listed:
        subset = datasets[d].subsets[s]
        subset_results = results[position : position + len(paths)]
        position += len(paths)
        tags: Counter[str] = Counter()
        used = 0
        for path, inspection in zip(paths, subset_results):
            if inspection.reason:
                skipped.append(SkippedImage(path, inspection.reason))
                continue
            assert inspection.size is not None
            caption, source = _caption_of(inspection, subset)
            tags.update(tags_of(caption, subset))
            records.append(ImageRecord(
                path=path, dataset_index=d, subset_index=s, caption=caption, caption_source=source,
                original_size=inspection.size, assignment=selectors[d].assign(inspection.size),
                num_repeats=subset.num_repeats, is_reg=subset.is_reg, subset=subset,
            ))
            used += 1
        counts[(d, s)] = used
        warnings += _subset_warnings(subset, paths, subset_results, used)
        folder = Path(subset.image_dir)
        dirs = reg_dirs if subset.is_reg else dataset_dirs
        dirs[_unique_key(dirs, folder)] = {"n_repeats": subset.num_repeats, "img_count": used}
        tag_frequency[_unique_key(tag_frequency, folder)] = dict(sorted(tags.items()))

    if skipped:
        if strict:
            raise _strict_error(skipped)
        warnings.insert(0, f"Skipped {len(skipped)} image(s) that cannot be decoded: "
                           + "; ".join(f"{s.path.name} ({s.reason})" for s in skipped[:_LISTED])
                           + (f"; and {len(skipped) - _LISTED} more" if len(skipped) > _LISTED else "") + ".")
    if not any(not r.is_reg for r in records):
        folders = ", ".join(str(Path(sub.image_dir)) for ds in datasets for sub in ds.subsets if not sub.is_reg)
        raise TrainerError(
            f"No usable training images in {folders or 'any subset'}.",
            hint="Put .png/.jpg/.jpeg/.webp/.bmp images directly in each image folder (sub-folders are not "
                 "searched), and check the skipped files listed above.",
        )

    records, balance_warnings = balance_regularisation(records)
    warnings += balance_warnings
    table: dict[Size, list[int]] = defaultdict(lambda: [0, 0])
    for record in records:
        table[record.bucket][0] += 1
        table[record.bucket][1] += record.num_repeats
    bucket_table = {bucket: BucketCount(*table[bucket]) for bucket in sorted(table)}
    return ScanResult(
        records=tuple(records), skipped=tuple(skipped), warnings=tuple(warnings), bucket_table=bucket_table,
        subset_image_counts=counts, dataset_dirs=dataset_dirs, reg_dataset_dirs=reg_dirs,
        tag_frequency=tag_frequency,
    )
