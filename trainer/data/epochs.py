"""The order images are trained in, epoch by epoch, and the loading of one batch.

Plan (sd-scripts' scheme, never dropping an image): per dataset, each record is repeated
``num_repeats`` times, grouped by bucket, shuffled, and cut into batches of the dataset's
``batch_size``; a bucket's last, smaller batch is kept. Then the batches of all datasets are
shuffled together. The shuffles use a generator seeded from (seed, epoch) only, so a resumed run
replays the same order, and ``steps_per_epoch`` is known without planning.

Loading: :class:`EpochBatches` is a map-style sequence of loaded batches (``len`` and ``[i]``).
Iterate it directly, or hand it to ``torch.utils.data.DataLoader(batches, batch_size=None,
num_workers=N)``: each batch's randomness (flips, caption shuffles, random crops, colour changes) is
seeded from (seed, epoch, batch index), so the result is the same whichever worker loads it.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainer.data.blueprint import DatasetSpec
from trainer.data.buckets import (
    MASK_DOWNSCALE, Size, image_to_tensor, prepare_mask, random_crop_assignment, resize_and_crop, sdxl_crop_top_left_hw,
    sdxl_original_size_hw, sdxl_target_size_hw,
)
from trainer.data.captions import process_caption
from trainer.data.images import color_augment, load_image_rgb_and_alpha
from trainer.data.scan import ImageRecord
from trainer.errors import TrainerError

# (record, flipped) -> the cached latent of that record, e.g. a LatentCache. A lookup that also
# has a ``mask(record, flipped)`` method supplies the alpha masks too (LatentCache does); without
# one, masks are read from the image files as batches load.
LatentLookup = Callable[[ImageRecord, bool], torch.Tensor]


@dataclass(frozen=True)
class Batch:
    """Records trained together in one step: all from one dataset and one bucket."""

    dataset_index: int
    bucket: Size
    records: tuple[ImageRecord, ...]


def _by_dataset_and_bucket(records: Sequence[ImageRecord]) -> dict[tuple[int, Size], list[ImageRecord]]:
    groups: dict[tuple[int, Size], list[ImageRecord]] = defaultdict(list)
    for record in records:
        groups[(record.dataset_index, record.bucket)].append(record)
    # Sorted keys and members: the plan must not depend on the order the records were listed in.
    return {key: sorted(groups[key], key=_record_order) for key in sorted(groups)}


def _record_order(record: ImageRecord) -> tuple[str, int, int]:
    return str(record.path), record.dataset_index, record.subset_index


def _batch_size(datasets: Sequence[DatasetSpec], index: int) -> int:
    size = datasets[index].batch_size
    if size < 1:
        raise TrainerError(f"Dataset {index + 1} has batch_size {size}.", hint="Use a batch size of 1 or more.", option="batch_size")
    return size


def plan_epoch(records: Sequence[ImageRecord], datasets: Sequence[DatasetSpec], epoch: int, seed: int) -> tuple[Batch, ...]:
    """The batches of one epoch, in training order; the same (seed, epoch) gives the same plan."""
    rng = random.Random(f"epoch-plan:{seed}:{epoch}")  # str seeds are stable across processes
    batches: list[Batch] = []
    for (dataset_index, bucket), members in _by_dataset_and_bucket(records).items():
        samples = [record for record in members for _ in range(record.num_repeats)]
        rng.shuffle(samples)
        size = _batch_size(datasets, dataset_index)
        for start in range(0, len(samples), size):
            batches.append(Batch(dataset_index, bucket, tuple(samples[start : start + size])))
    rng.shuffle(batches)
    return tuple(batches)


def steps_per_epoch(records: Sequence[ImageRecord], datasets: Sequence[DatasetSpec]) -> int:
    """Batches per epoch: the sum over datasets and buckets of ceil(images x repeats / batch_size)."""
    return sum(
        math.ceil(sum(r.num_repeats for r in members) / _batch_size(datasets, dataset_index))
        for (dataset_index, _), members in _by_dataset_and_bucket(records).items()
    )


def load_batch(
    records: Sequence[ImageRecord],
    epoch: int,
    rng: random.Random,
    latent_lookup: LatentLookup | None = None,
) -> dict[str, Any]:
    """Load one batch: images (or cached latents), processed captions and SDXL size conditioning.

    Keys: "pixels" float32 [B, 3, H, W] in [-1, 1] (or "latents" from ``latent_lookup``),
    "captions" list[str], "original_sizes", "crop_top_lefts", "target_sizes" int64 [B, 2] as
    (h, w) rows, "is_reg" bool [B], "flipped" bool [B], "paths" list[Path], and, when a record's
    subset has alpha_mask, "masks" float32 [B, H/8, W/8] in 0..1 (all ones for images without
    transparency or subsets without alpha_mask). Random draws from ``rng``, in this order: flips
    (flip_aug subsets), caption augmentations, then per record the crop offset (random_crop) and
    the colour change (color_aug); the last two apply to images loaded now, not to cached latents.
    """
    if not records:
        raise TrainerError("An empty batch was requested.", hint="This is a bug in the epoch plan; please report it.")
    buckets = {record.bucket for record in records}
    if len(buckets) > 1:
        raise TrainerError(f"A batch mixes buckets {sorted(buckets)}.", hint="Batches must come from plan_epoch.")
    flips = [record.subset.flip_aug and rng.random() < 0.5 for record in records]
    captions = [process_caption(record.caption, record.subset, rng, epoch) for record in records]
    batch: dict[str, Any] = {
        "captions": captions,
        "original_sizes": torch.tensor([sdxl_original_size_hw(r.assignment) for r in records], dtype=torch.int64),
        "crop_top_lefts": torch.tensor(
            [sdxl_crop_top_left_hw(r.assignment, flip) for r, flip in zip(records, flips)], dtype=torch.int64
        ),
        "target_sizes": torch.tensor([sdxl_target_size_hw(r.assignment) for r in records], dtype=torch.int64),
        "is_reg": torch.tensor([r.is_reg for r in records], dtype=torch.bool),
        "flipped": torch.tensor(flips, dtype=torch.bool),
        "paths": [r.path for r in records],
    }
    wants_masks = any(record.subset.alpha_mask for record in records)
    if latent_lookup is not None:
        batch["latents"] = torch.stack([latent_lookup(r, flip) for r, flip in zip(records, flips)])
        if wants_masks:
            batch["masks"] = torch.stack([_cached_mask(latent_lookup, r, flip) for r, flip in zip(records, flips)])
        return batch
    pixels, masks = zip(*(_load_pixels(record, flip, rng) for record, flip in zip(records, flips)))
    batch["pixels"] = torch.stack(pixels)
    if wants_masks:
        batch["masks"] = torch.stack(masks)
    return batch


def _load_pixels(record: ImageRecord, flip: bool, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's pixels with its augmentations, and its mask (all ones without alpha_mask)."""
    subset = record.subset
    image, alpha = load_image_rgb_and_alpha(record.path, with_alpha=subset.alpha_mask)
    assignment = random_crop_assignment(record.assignment, rng) if subset.random_crop else record.assignment
    fitted = resize_and_crop(image, assignment, flip)
    if subset.color_aug:
        fitted = color_augment(fitted, rng)
    return image_to_tensor(fitted), prepare_mask(alpha, assignment, flip, MASK_DOWNSCALE)


def _cached_mask(lookup: LatentLookup, record: ImageRecord, flip: bool) -> torch.Tensor:
    mask_of = getattr(lookup, "mask", None)
    if mask_of is not None:
        return mask_of(record, flip)
    _, alpha = load_image_rgb_and_alpha(record.path, with_alpha=record.subset.alpha_mask)
    return prepare_mask(alpha, record.assignment, flip, MASK_DOWNSCALE)


@dataclass(frozen=True)
class EpochBatches:
    """The loaded batches of one epoch, as a sequence (usable as a DataLoader dataset)."""

    batches: tuple[Batch, ...]
    epoch: int
    seed: int
    latent_lookup: LatentLookup | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = random.Random(f"batch:{self.seed}:{self.epoch}:{index}")
        return load_batch(self.batches[index].records, self.epoch, rng, self.latent_lookup)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[index] for index in range(len(self)))


def epoch_batches(
    records: Sequence[ImageRecord],
    datasets: Sequence[DatasetSpec],
    epoch: int,
    seed: int,
    latent_lookup: LatentLookup | None = None,
) -> EpochBatches:
    """:func:`plan_epoch` wrapped in an :class:`EpochBatches` ready to iterate."""
    return EpochBatches(plan_epoch(records, datasets, epoch, seed), epoch, seed, latent_lookup)

