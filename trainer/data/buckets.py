"""Aspect-ratio buckets, with sd-scripts' bucket set and numbers, and the pixels of one training image.

The rules (sizes are (width, height) unless a name ends in ``_hw``):

* ``enable_bucket`` on: the bucket set is sd-scripts' ``make_bucket_resolutions``: the square
  ``floor(sqrt(area) / steps) * steps``, plus, for every width ``w`` from ``min_bucket_reso`` to
  ``max_bucket_reso`` in steps, the LARGEST height ``h = min(max, floor(area / w / steps) * steps)``
  with ``h >= min``, as (w, h) and (h, w). So not every bucket under the area, only the frontier:
  each bucket is as big as the area allows for its shape. An image goes to the bucket whose aspect
  ratio is closest (its exact size wins when that is a bucket; ties go to the first bucket in
  sorted order), is scaled to cover it (aspect kept, sides rounded half up) and centre-cropped.
  ``min_bucket_reso`` is rounded up and ``max_bucket_reso`` down to a multiple of the steps, so
  every bucket side is a multiple of the steps (sd-scripts would walk odd widths).
* ``bucket_no_upscale``: each image gets its own bucket. Larger than the resolution's area, it is
  scaled down to that area (sd-scripts' choice between rounding the width or the height, whichever
  keeps the aspect closer); then the bucket is the size rounded DOWN to multiples of the steps and
  the rest is centre-cropped. Never enlarged, with one exception: a side shorter than one step is
  enlarged to one step, since a zero-sized bucket cannot train (sd-scripts crashes there).
* ``enable_bucket`` off: every image is scaled to cover the fixed resolution and centre-cropped
  (sd-scripts instead demands images of exactly that size).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageOps

from trainer.data.blueprint import DatasetSpec
from trainer.errors import TrainerError

Size = tuple[int, int]
# Loss masks are kept at latent size (the VAE's factor 8): the loss area-averages them to that anyway.
MASK_DOWNSCALE = 8


@dataclass(frozen=True)
class BucketAssignment:
    """Where one image trains: its bucket, the size it is resized to, and the crop taken from that.

    ``bucket``, ``resized`` and ``original_size`` are (width, height); ``crop_top_left`` is
    (top, left) in pixels of the resized image. ``original_size`` is after EXIF rotation.
    """

    bucket: Size
    resized: Size
    crop_top_left: tuple[int, int]
    original_size: Size


def _round_half_up(value: float) -> int:
    return int(value + 0.5)


def make_bucket_resolutions(resolution: Size, min_reso: int, max_reso: int, steps: int) -> tuple[Size, ...]:
    """sd-scripts' bucket set for ``resolution`` (w, h), sorted; see the module docstring."""
    area = resolution[0] * resolution[1]
    low = math.ceil(min_reso / steps) * steps
    high = (max_reso // steps) * steps
    square = int(math.sqrt(area) // steps) * steps
    buckets = {(square, square)}
    for width in range(low, high + 1, steps):
        height = min(high, (area // width) // steps * steps)
        if height >= low:
            buckets.add((width, height))
            buckets.add((height, width))
    return tuple(sorted(buckets))


def _check_dataset(dataset: DatasetSpec) -> None:
    if not dataset.enable_bucket or dataset.bucket_no_upscale:
        return
    width, height = dataset.resolution
    if min(width, height) < dataset.min_bucket_reso:
        raise TrainerError(
            f"min_bucket_reso {dataset.min_bucket_reso} is larger than the resolution {width}x{height}.",
            hint="Lower min_bucket_reso (256 is usual) or raise the resolution.", option="min_bucket_reso",
        )
    if max(width, height) > dataset.max_bucket_reso:
        raise TrainerError(
            f"max_bucket_reso {dataset.max_bucket_reso} is smaller than the resolution {width}x{height}.",
            hint="Raise max_bucket_reso (1024 for SD1.5, 2048 for SDXL) or lower the resolution.",
            option="max_bucket_reso",
        )


def _cover(original: Size, bucket: Size) -> BucketAssignment:
    """Scale ``original`` to cover ``bucket`` (aspect kept) and centre-crop."""
    width, height = original
    if width / height > bucket[0] / bucket[1]:
        scale = bucket[1] / height  # wider than the bucket: match heights, crop the sides
    else:
        scale = bucket[0] / width
    # max(): a float rounding a hair under the bucket side must not leave a 1-pixel gap.
    resized = (max(bucket[0], _round_half_up(width * scale)), max(bucket[1], _round_half_up(height * scale)))
    crop = ((resized[1] - bucket[1]) // 2, (resized[0] - bucket[0]) // 2)
    return BucketAssignment(bucket=bucket, resized=resized, crop_top_left=crop, original_size=original)


def _no_upscale_size(original: Size, area: int, steps: int) -> Size:
    """The resized size for bucket_no_upscale, before rounding the bucket down to the steps."""
    width, height = original
    if width * height <= area:
        return original
    aspect = width / height
    scaled_width = math.sqrt(area * aspect)
    scaled_height = area / scaled_width

    def to_steps(value: float) -> int:
        value = _round_half_up(value)
        return value - value % steps

    by_width = to_steps(scaled_width)
    by_height = to_steps(scaled_height)
    height_for_width = to_steps(by_width / aspect)
    width_for_height = to_steps(by_height * aspect)
    error_width = abs(by_width / height_for_width - aspect) if height_for_width else math.inf
    error_height = abs(width_for_height / by_height - aspect) if by_height else math.inf
    if error_width < error_height:
        return by_width, _round_half_up(by_width / aspect)
    return _round_half_up(by_height * aspect), by_height


@dataclass(frozen=True)
class BucketSelector:
    """Assigns images of one dataset to buckets. Build it with :meth:`for_dataset`."""

    dataset: DatasetSpec
    buckets: tuple[Size, ...]  # the predefined set; empty for bucket_no_upscale and fixed size

    @classmethod
    def for_dataset(cls, dataset: DatasetSpec) -> "BucketSelector":
        """Validate the bucket options of ``dataset`` and precompute its bucket set."""
        _check_dataset(dataset)
        buckets: tuple[Size, ...] = ()
        if dataset.enable_bucket and not dataset.bucket_no_upscale:
            buckets = make_bucket_resolutions(
                dataset.resolution, dataset.min_bucket_reso, dataset.max_bucket_reso, dataset.bucket_reso_steps,
            )
        return cls(dataset, buckets)

    def assign(self, original_size: Size) -> BucketAssignment:
        """The bucket, resize and crop of an image of ``original_size`` (w, h)."""
        width, height = original_size
        if width < 1 or height < 1:
            raise TrainerError(f"An image of size {width}x{height} cannot be trained.", hint="Remove it.")
        dataset = self.dataset
        if not dataset.enable_bucket:
            return _cover(original_size, dataset.resolution)
        if not dataset.bucket_no_upscale:
            if original_size in self.buckets:
                return _cover(original_size, original_size)
            aspect = width / height
            bucket = min(self.buckets, key=lambda b: abs(b[0] / b[1] - aspect))
            return _cover(original_size, bucket)
        steps = dataset.bucket_reso_steps
        resized = _no_upscale_size(original_size, dataset.resolution[0] * dataset.resolution[1], steps)
        if min(resized) < steps:
            grow = max(steps / resized[0], steps / resized[1])
            resized = (max(steps, math.ceil(resized[0] * grow)), max(steps, math.ceil(resized[1] * grow)))
        bucket = (resized[0] - resized[0] % steps, resized[1] - resized[1] % steps)
        crop = ((resized[1] - bucket[1]) // 2, (resized[0] - bucket[0]) // 2)
        return BucketAssignment(bucket=bucket, resized=resized, crop_top_left=crop, original_size=original_size)


def assign_bucket(original_size: Size, dataset: DatasetSpec) -> BucketAssignment:
    """One-off :meth:`BucketSelector.assign`; build a selector once when assigning many images."""
    return BucketSelector.for_dataset(dataset).assign(original_size)


# SDXL's size conditioning. SDXL takes (height, width) pairs, in this order: original size,
# crop top-left, target size.

def sdxl_original_size_hw(assignment: BucketAssignment) -> tuple[int, int]:
    """The image's size before resizing, as (height, width)."""
    return assignment.original_size[1], assignment.original_size[0]


def sdxl_target_size_hw(assignment: BucketAssignment) -> tuple[int, int]:
    """The bucket (the size trained at), as (height, width)."""
    return assignment.bucket[1], assignment.bucket[0]


def sdxl_crop_top_left_hw(assignment: BucketAssignment, flipped: bool = False) -> tuple[int, int]:
    """The crop conditioning, as (top, left), with sd-scripts' numbers.

    sd-scripts (``get_crop_ltrb``, "according to the preprocessing of Stability AI") does not send
    the pixels actually cropped: it fits the ORIGINAL image inside the bucket and sends the offset
    of that fitted image, ``(bucket - fitted) // 2`` per side. We send the same numbers so a LoRA
    trained here sees the conditioning an sd-scripts one does. When flipped, left becomes
    ``bucket_width - (left + fitted_width)``, again as sd-scripts does.
    """
    bucket_w, bucket_h = assignment.bucket
    image_aspect = assignment.original_size[0] / assignment.original_size[1]
    if bucket_w / bucket_h > image_aspect:
        fitted_w, fitted_h = bucket_h * image_aspect, float(bucket_h)
    else:
        fitted_w, fitted_h = float(bucket_w), bucket_w / image_aspect
    left = (bucket_w - fitted_w) // 2
    top = (bucket_h - fitted_h) // 2
    if flipped:
        left = bucket_w - (left + fitted_w)
    return int(top), int(left)


def resize_and_crop(image: Image.Image, assignment: BucketAssignment, flip: bool = False) -> Image.Image:
    """Resize ``image`` (RGB, as decoded) to ``assignment.resized``, crop the bucket, mirror if ``flip``."""
    if image.size != assignment.original_size:
        raise TrainerError(
            f"Image is {image.size[0]}x{image.size[1]} but was scanned as "
            f"{assignment.original_size[0]}x{assignment.original_size[1]}.",
            hint="The file changed after the dataset scan; start the run again.",
        )
    if image.size != assignment.resized:
        shrinking = assignment.resized[0] * assignment.resized[1] < image.size[0] * image.size[1]
        # BOX averages areas like sd-scripts' cv2.INTER_AREA when shrinking; Lanczos when enlarging.
        method = Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS
        image = image.resize(assignment.resized, method)
    top, left = assignment.crop_top_left
    width, height = assignment.bucket
    if image.size != assignment.bucket:
        image = image.crop((left, top, left + width, top + height))
    return ImageOps.mirror(image) if flip else image


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as float32 [3, H, W] in [-1, 1]."""
    array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32)
    return tensor / 127.5 - 1.0


def prepare_pixels(image: Image.Image, assignment: BucketAssignment, flip: bool = False) -> torch.Tensor:
    """The training tensor of ``image``: float32 [3, H, W] in [-1, 1] at the bucket size."""
    return image_to_tensor(resize_and_crop(image.convert("RGB") if image.mode != "RGB" else image, assignment, flip))


def random_crop_assignment(assignment: BucketAssignment, rng: random.Random) -> BucketAssignment:
    """``assignment`` with the crop at a random offset instead of the centre (``random_crop``).

    Only the pixels change: the SDXL crop conditioning follows sd-scripts, which derives it from
    the sizes alone (:func:`sdxl_crop_top_left_hw`). Draws top, then left, from ``rng``.
    """
    spare_h = assignment.resized[1] - assignment.bucket[1]
    spare_w = assignment.resized[0] - assignment.bucket[0]
    top = rng.randint(0, spare_h) if spare_h > 0 else 0
    left = rng.randint(0, spare_w) if spare_w > 0 else 0
    return replace(assignment, crop_top_left=(top, left))


def prepare_mask(alpha: Image.Image | None, assignment: BucketAssignment, flip: bool = False,
                 downscale: int = 1) -> torch.Tensor:
    """The loss mask of one image: float32 [H, W] in 0..1 at the bucket size divided by ``downscale``.

    ``alpha`` ("L", as decoded) goes through the same resize, crop and flip as the pixels; None
    (an image without transparency) gives all ones. ``downscale`` > 1 area-averages blocks
    (8 gives the latent size), which is what the loss does to a full-size mask anyway.
    """
    height, width = assignment.bucket[1], assignment.bucket[0]
    size = (max(1, height // downscale), max(1, width // downscale)) if downscale > 1 else (height, width)
    if alpha is None:
        return torch.ones(size, dtype=torch.float32)
    fitted = resize_and_crop(alpha.convert("L") if alpha.mode != "L" else alpha, assignment, flip)
    mask = torch.from_numpy(np.asarray(fitted, dtype=np.uint8).copy()).to(torch.float32) / 255.0
    if size != (height, width):
        mask = torch.nn.functional.interpolate(mask[None, None], size=size, mode="area")[0, 0]
    return mask
