"""Dataset statistics, computed with the trainer's own scan so the numbers are the ones training uses.

The bucket table and the steps per epoch come from ``trainer.data.scan.scan_datasets`` and
``trainer.data.epochs.steps_per_epoch`` on the same folders and bucket settings a run would
use, not from a re-implementation that could drift: images the trainer would skip are skipped
here too, and every bucket is the one ``trainer.data.buckets`` assigns.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from core.datasets.files import require_folder
from core.datasets.naming import is_skipped_dir, parse_subset_folder
from core.errors import CoreError
from trainer.data.blueprint import DatasetSpec, SubsetSpec, contains_images
from trainer.data.buckets import Size
from trainer.data.epochs import steps_per_epoch
from trainer.data.scan import BucketCount, ScanResult, scan_datasets
from trainer.errors import TrainerError

# Shorter-side bins of the resolution histogram: where an image falls relative to usual training sizes.
SIDE_BINS = ((0, 256), (256, 512), (512, 768), (768, 1024), (1024, 1536), (1536, None))


@dataclass(frozen=True)
class BucketSettings:
    """The trainer's bucket options (same names and defaults as the options table, bucketing on)."""

    resolution: Size = (512, 512)
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False


# The trainer's options table has no default epoch count (it can train by steps); every preset uses 10.
_FALLBACK_EPOCHS = 10


@dataclass(frozen=True)
class StatisticsSettings:
    """What the statistics assume for one training resolution, and where those values come from."""

    buckets: BucketSettings
    batch_size: int
    epochs: int
    source: str  # "the SDXL preset", "the trainer's defaults"

    def describe(self) -> str:
        """One line for the panel and the CLI."""
        b = self.buckets
        width, height = b.resolution
        buckets = (f"buckets {b.min_bucket_reso}-{b.max_bucket_reso} px in steps of {b.bucket_reso_steps}"
                   if b.enable_bucket else "no buckets (square crops)")
        return f"Assumed: {width}x{height}, {buckets}, batch {self.batch_size}, {self.epochs} epochs ({self.source})."


def settings_for_resolution(side: int, presets: dict | None = None) -> StatisticsSettings:
    """Bucket settings, batch size and epochs a run at ``side`` x ``side`` px would most likely use.

    The first training preset with that resolution gives them (SD 1.5 at 512: buckets 256-1024;
    SDXL and its families at 1024: 512-2048, as ``core/training_presets.toml`` sets); without one,
    the trainer's options table defaults, widened so the bucket range holds the resolution.
    """
    from core.training.presets import load_training_presets
    from trainer.options import get_option

    if side < 64:
        raise CoreError(f"A training resolution of {side} px is too small.", hint="Use 512 (SD1.5) or 1024 (SDXL).")
    names = ("min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale", "train_batch_size",
             "max_train_epochs")
    values = {name: get_option(name).default for name in names}
    source = "the trainer's defaults"
    presets = load_training_presets() if presets is None else presets
    for preset in presets.values():
        resolution = preset.values.get("resolution")
        if resolution in ([side, side], side):
            values.update({name: preset.values[name] for name in names if name in preset.values})
            source = f"the {preset.label} preset"
            break
    buckets = BucketSettings(
        resolution=(side, side), enable_bucket=True,
        # The trainer refuses a bucket range that does not hold the resolution itself.
        min_bucket_reso=min(int(values["min_bucket_reso"]), side),
        max_bucket_reso=max(int(values["max_bucket_reso"]), side),
        bucket_reso_steps=int(values["bucket_reso_steps"]), bucket_no_upscale=bool(values["bucket_no_upscale"]),
    )
    return StatisticsSettings(buckets, int(values["train_batch_size"] or 1),
                              int(values["max_train_epochs"] or _FALLBACK_EPOCHS), source)


@dataclass(frozen=True)
class SubsetStats:
    """One ``N_name`` folder: its repeats and usable image count."""

    folder: Path
    repeats: int
    images: int


@dataclass(frozen=True)
class DatasetStatistics:
    """What :func:`compute_statistics` found. Dict fields are built once and not changed afterwards."""

    root: Path
    subsets: tuple[SubsetStats, ...]
    image_count: int  # usable images (the trainer's count)
    skipped: tuple[tuple[Path, str], ...]  # images the trainer would skip, with why
    sizes: dict[Size, int]  # (w, h) after EXIF rotation -> images, most common first
    side_histogram: dict[str, int]  # shorter side bin ("512-767") -> images
    bucket_table: dict[Size, BucketCount]  # exactly trainer.data.scan's
    batch_size: int
    epochs: int
    steps_per_epoch: int
    total_steps: int
    formula: str
    tag_frequency: dict[str, int]  # all folders together, most common first (class tokens count for uncaptioned images)
    assumed: str = ""  # the settings the numbers assume, in words (empty: the caller chose them)

    def summary_lines(self, top_tags: int = 20) -> list[str]:
        """Readable lines for the CLI and the panel."""
        lines = [f"{self.root}: {self.image_count} usable image(s)" + (f", {len(self.skipped)} skipped" if self.skipped else "")]
        lines += [f"  {s.folder.name}: {s.images} image(s) x {s.repeats} repeats" for s in self.subsets]
        if self.assumed:
            lines.append(self.assumed)
        lines.append("Shorter side: " + ", ".join(f"{name}: {count}" for name, count in self.side_histogram.items() if count))
        lines.append("Buckets (w x h: images, with repeats):")
        lines += [f"  {w}x{h}: {c.images}, {c.with_repeats}" for (w, h), c in self.bucket_table.items()]
        lines.append(self.formula)
        if self.tag_frequency:
            lines.append("Top tags: " + ", ".join(f"{t} ({n})" for t, n in list(self.tag_frequency.items())[:top_tags]))
        return lines


def _bin_name(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else f"{low}-{high - 1}"


def _subsets(root: Path, repeats: int | None, caption_extension: str) -> list[SubsetSpec]:
    """Subsets as the trainer's ``train_data_dir`` reading makes them; ``root`` may also be one image folder."""
    def spec(folder: Path, count: int, tokens: str | None) -> SubsetSpec:
        return SubsetSpec(image_dir=str(folder), num_repeats=repeats or count, class_tokens=tokens,
                          caption_extension=caption_extension)

    own = parse_subset_folder(root.name)
    children = sorted(p for p in root.iterdir() if p.is_dir() and not is_skipped_dir(p.name) and parse_subset_folder(p.name))
    if children:
        found = []
        for child in children:
            count, tokens = parse_subset_folder(child.name) or (1, "")
            found.append(spec(child.resolve(), count, tokens.strip() or None))
        return found
    if own is not None:
        return [spec(root, own[0], own[1].strip() or None)]
    if contains_images(root):
        return [spec(root, 1, None)]  # a plain folder: repeats from the caller, else 1
    raise CoreError(f"No images found in {root} or in N_name folders inside it.",
                    hint="Point at a project folder holding 10_name folders, or at an image folder.")


def _formula(scan: ScanResult, batch_size: int, epochs: int, steps: int) -> str:
    """The steps arithmetic written out, per bucket, as the trainer computes it."""
    terms = [f"ceil({c.with_repeats}/{batch_size})" for c in scan.bucket_table.values()]
    naive = math.ceil(scan.num_train_images / batch_size)
    text = (f"steps per epoch = sum over buckets of ceil(images x repeats / batch size) = "
            f"{' + '.join(terms)} = {steps}; total = {steps} x {epochs} epochs = {steps * epochs}")
    if naive != steps:
        text += (f" (not ceil({scan.num_train_images}/{batch_size}) = {naive}: a batch never mixes buckets, "
                 "so each bucket's last batch may be short)")
    return text


def compute_statistics(
    root: Path,
    settings: BucketSettings | None = None,
    *,
    batch_size: int = 1,
    epochs: int = 10,
    repeats: int | None = None,
    caption_extension: str = ".txt",
    workers: int | None = None,
    assumed: str = "",
) -> DatasetStatistics:
    """Image count, resolutions, the trainer's bucket table and steps, and tag frequency of ``root``.

    ``root`` is a project folder (its ``N_name`` folders are the subsets, as with
    ``train_data_dir``) or a single image folder. ``repeats`` overrides every folder's count.
    ``assumed`` describes where the settings came from (see :func:`settings_for_resolution`).
    """
    settings = settings or BucketSettings()
    if batch_size < 1 or epochs < 1 or (repeats is not None and repeats < 1):
        raise CoreError("Batch size, epochs and repeats must each be 1 or more.", hint="Use e.g. batch 2, 10 epochs.")
    root = require_folder(root, "dataset folder")
    subsets = _subsets(root, repeats, caption_extension)
    dataset = DatasetSpec(resolution=tuple(settings.resolution), batch_size=batch_size, enable_bucket=settings.enable_bucket,
                          min_bucket_reso=settings.min_bucket_reso, max_bucket_reso=settings.max_bucket_reso,
                          bucket_reso_steps=settings.bucket_reso_steps, bucket_no_upscale=settings.bucket_no_upscale,
                          subsets=tuple(subsets))
    try:
        scan = scan_datasets((dataset,), strict=False, workers=workers)
        steps = steps_per_epoch(scan.records, (dataset,))
    except TrainerError as problem:
        raise CoreError(problem.message, problem.hint) from problem
    sizes = Counter(record.original_size for record in scan.records)
    sides = {_bin_name(low, high): 0 for low, high in SIDE_BINS}
    for (width, height), count in sizes.items():
        side = min(width, height)
        for low, high in SIDE_BINS:
            if side >= low and (high is None or side < high):
                sides[_bin_name(low, high)] += count
    tags: Counter[str] = Counter()
    for folder_tags in scan.tag_frequency.values():
        tags.update(folder_tags)
    return DatasetStatistics(
        root=root,
        subsets=tuple(SubsetStats(Path(s.image_dir), s.num_repeats, scan.subset_image_counts[(0, i)]) for i, s in enumerate(subsets)),
        image_count=len(scan.records),
        skipped=tuple((s.path, s.reason) for s in scan.skipped),
        sizes=dict(sizes.most_common()),
        side_histogram=sides,
        bucket_table=dict(scan.bucket_table),
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps,
        total_steps=steps * epochs,
        formula=_formula(scan, batch_size, epochs, steps),
        tag_frequency=dict(sorted(tags.items(), key=lambda item: (-item[1], item[0]))),
        assumed=assumed,
    )
