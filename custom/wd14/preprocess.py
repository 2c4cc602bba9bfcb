"""Turn one image file into the array a WD14 model expects.

The steps (FORMATS.md section 3): decode to upright RGB with transparency composited onto white
(``trainer.data.images.load_image_rgb`` does this for every odd mode), pad to a centred square
with white, resize to the model's side, reverse the channels to BGR, float32 0..255 HWC.

Shrinking uses exact area averaging (each output pixel is the mean of the input area it covers,
with fractional pixels weighted by coverage, as OpenCV's ``INTER_AREA``): Pillow's BOX filter
only counts pixels whose centres fall inside, which differs for non-integer scale factors.
Enlarging uses Pillow's bicubic filter. Padding is folded into the resize, which
gives the same result as padding first (the operations are separable) without allocating a
huge white square for a large photo: taps that land on the padding simply add white.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trainer.data.images import DEFAULT_MAX_PIXELS, try_load_image_rgb

WHITE = 255


@dataclass(frozen=True)
class Prepared:
    """One decoded image ready for the model, or the reason it could not be used."""

    path: Path
    array: np.ndarray | None  # [side, side, 3] float32 BGR 0..255
    error: str = ""


def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Input indices and coverage weights, each [n_out, taps], for area-shrinking one axis.

    Output ``i`` covers input ``[i*s, (i+1)*s)`` with ``s = n_in / n_out``; an input pixel's weight
    is the length of its overlap with that interval, divided by ``s``.
    """
    scale = n_in / n_out
    starts = np.arange(n_out, dtype=np.float64) * scale
    ends = starts + scale
    taps = int(np.ceil(scale)) + 1
    index = np.floor(starts).astype(np.int64)[:, None] + np.arange(taps)[None, :]
    covered = np.minimum(index + 1, ends[:, None]) - np.maximum(index, starts[:, None])
    weights = np.clip(covered, 0.0, None) / scale
    # Indices past the edge only ever carry zero weight; clamp them so the gather stays in range.
    return np.minimum(index, n_in - 1), weights.astype(np.float32)


def _area_axis(array: np.ndarray, n_out: int, axis: int, line: int, offset: int) -> np.ndarray:
    """Area-shrink ``array`` along ``axis`` to ``n_out``, as float32.

    The array sits at ``offset`` inside a white-padded line of length ``line`` (``offset`` 0 and
    ``line`` equal to the array's length: no padding). Taps that fall on the padding add white
    directly, so the padded array is never built.
    """
    length = array.shape[axis]
    index, weights = _area_taps(line, n_out)
    index = index - offset
    outside = (index < 0) | (index >= length)
    white = (weights * outside).sum(axis=1) * WHITE
    weights = np.where(outside, 0.0, weights).astype(np.float32)
    index = np.clip(index, 0, length - 1)
    shape = [1] * array.ndim
    shape[axis] = n_out
    result = list(array.shape)
    result[axis] = n_out
    out = np.empty(result, dtype=np.float32)
    out[...] = white.reshape(shape)
    for tap in range(index.shape[1]):
        # A weighted sum of a few gathers: a handful of numpy calls, several times faster than
        # np.add.reduceat or a dense weight matrix at these sizes.
        out += weights[:, tap].reshape(shape) * np.take(array, index[:, tap], axis=axis)
    return out


def shrink_to_square(rgb: np.ndarray, side: int) -> np.ndarray:
    """Pad ``rgb`` ([h, w, 3] uint8) to a centred white square and area-shrink it to ``side``; float32 RGB.

    The square's side is ``max(h, w)``, which must be larger than ``side``. Rows are shrunk first
    whatever the orientation: gathering whole contiguous rows is the cheap pass, and it leaves
    only ``side`` rows for the column pass. The extra pixel of an odd padding goes right (or bottom).
    """
    height, width = rgb.shape[:2]
    square = max(height, width)
    rows = _area_axis(rgb, side, 0, square, (square - height) // 2)
    return _area_axis(rows, side, 1, square, (square - width) // 2)


def pad_and_enlarge(image: Image.Image, side: int) -> np.ndarray:
    """Pad an RGB image to a centred white square and resize it to ``side`` with bicubic; float32 RGB."""
    width, height = image.size
    square = max(width, height)
    canvas = Image.new("RGB", (square, square), (WHITE, WHITE, WHITE))
    canvas.paste(image, ((square - width) // 2, (square - height) // 2))
    if square != side:
        canvas = canvas.resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(canvas, dtype=np.float32)


def to_model_input(image: Image.Image, side: int) -> np.ndarray:
    """An upright RGB PIL image -> [side, side, 3] float32 BGR 0..255, padded and resized as WD14 expects."""
    if max(image.size) > side:
        rgb = shrink_to_square(np.asarray(image.convert("RGB")), side)
    else:
        rgb = pad_and_enlarge(image.convert("RGB"), side)
    return np.ascontiguousarray(rgb[..., ::-1], dtype=np.float32)


def prepare_image(path: Path, side: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Prepared:
    """Decode and preprocess one file; a broken file gives ``Prepared(path, None, reason)``, never an exception."""
    image, reason = try_load_image_rgb(path, max_pixels)
    if image is None:
        return Prepared(path, None, reason)
    return Prepared(path, to_model_input(image, side))
