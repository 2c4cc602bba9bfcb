"""Decode one training image into plain 8-bit RGB, whatever mode or container it came in.

Users' folders hold phone photos (EXIF rotation), cut-outs (alpha), print files (CMYK), scans
(16-bit grey) and the odd broken download. Every one of those must either become the RGB picture
a person sees in an image viewer, or fail with a :class:`TrainerError` that names the file and
says why, so one bad file never stops a run with a traceback. The user's file is only read.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from trainer.data.blueprint import IMAGE_EXTENSIONS
from trainer.errors import TrainerError

# Pillow's own threshold (about 89 megapixels), read once and never changed (it is process-wide
# state): we enforce it ourselves so an oversized file becomes an error naming the file. Pillow
# may still print its DecompressionBombWarning for such a file just before our error.
DEFAULT_MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485

_WHITE = (255, 255, 255, 255)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_MAX_REASON = 120  # Pillow's messages can embed whole reprs; keep the one-line reason readable


def is_image_file(path: Path | str) -> bool:
    """True when ``path`` has a training-image extension (png jpg jpeg webp bmp), any letter case."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _short_reason(problem: BaseException) -> str:
    text = " ".join(str(problem).split()) or type(problem).__name__
    # "cannot identify image file <_io.BufferedReader name='...'>" repeats the path we already name.
    if text.startswith("cannot identify image file"):
        text = "not a readable image (unknown or damaged format)"
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 0..65535 to 0..255; Pillow's convert() clips instead, turning most of the image white."""
    values = np.asarray(image, dtype=np.float64)
    grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite over white: transparent areas of cut-outs are white, not their hidden RGB."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    # A tRNS chunk makes a palette, grey or RGB PNG transparent without an alpha mode.
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _flatten_alpha(image)
    # CMYK, palette, L, 1, YCbCr: Pillow's conversion is right for these. Always a new image,
    # so the result no longer depends on the (closed) file.
    return image.convert("RGB")


class _Unusable(Exception):
    """Why one file cannot be used; turned into a TrainerError (or a skip reason) at the edge."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


_DAMAGED_HINT = "The file is damaged or not really an image. Re-export or re-download it, or remove it."


def _alpha_of(image: Image.Image) -> Image.Image | None:
    """The image's alpha as an "L" image (0 transparent, 255 opaque); None when it has none."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return None
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


def _decode(path: Path, max_pixels: int | None, with_alpha: bool = False) -> tuple[Image.Image, Image.Image | None]:
    try:
        if path.stat().st_size == 0:
            raise _Unusable("the file is empty (0 bytes)", "Re-copy or re-download it, or remove it from the dataset.")
        with Image.open(path) as opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise _Unusable(
                    f"{width}x{height} is {width * height:,} pixels, over the {max_pixels:,}-pixel safety "
                    "limit (decompression-bomb guard)",
                    "Downscale it (training resizes to about the training resolution anyway) or remove it.",
                )
            opened.load()  # decode now: truncated files fail here, not later in a training worker
            try:
                upright = ImageOps.exif_transpose(opened)
            except Exception:  # noqa: BLE001 - malformed EXIF must not cost a good picture; keep it as stored
                upright = opened
            return _to_rgb(upright), (_alpha_of(upright) if with_alpha else None)
    except (_Unusable, MemoryError):
        raise  # out of memory is the machine's problem, not this file's: never a silent skip
    except Image.DecompressionBombError as problem:
        raise _Unusable(f"too large to decode safely ({_short_reason(problem)})", "Downscale it or remove it.") from problem
    except Exception as problem:  # noqa: BLE001 - Pillow's decoders raise many types (OSError, SyntaxError, ValueError, struct.error, ...)
        raise _Unusable(_short_reason(problem), _DAMAGED_HINT) from problem


def load_image_rgb(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` fully into an RGB image as shown upright (EXIF orientation applied).

    Alpha is composited onto white, CMYK and palette images are converted, 16-bit grey is scaled
    (not clipped). ``max_pixels`` guards against decompression bombs (None disables the guard).
    Raises :class:`TrainerError` naming the file when it is empty, truncated, not an image, or
    too large.
    """
    return load_image_rgb_and_alpha(path, max_pixels, with_alpha=False)[0]


def load_image_rgb_and_alpha(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                             with_alpha: bool = True) -> tuple[Image.Image, Image.Image | None]:
    """:func:`load_image_rgb` plus the image's alpha channel ("L", upright like the RGB; None when
    the file has no transparency), for ``alpha_mask`` subsets."""
    path = Path(path)
    try:
        return _decode(path, max_pixels, with_alpha)
    except _Unusable as problem:
        raise TrainerError(f"Cannot use image {path}: {problem.reason}.", hint=problem.hint) from problem


def try_load_image_rgb(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Image.Image | None, str]:
    """Like :func:`load_image_rgb`, but returns ``(None, short reason)`` instead of raising."""
    try:
        return _decode(Path(path), max_pixels)[0], ""
    except _Unusable as problem:
        return None, problem.reason


# color_aug, with sd-scripts' numbers: a third of the time, either a hue shift of up to 8 OpenCV
# hue units (0-180 scale, so up to 16 degrees) or a gamma in [0.95, 1.05], half and half.
COLOR_AUG_PROBABILITY = 0.33
HUE_SHIFT_LIMIT_DEGREES = 16.0
GAMMA_RANGE = (0.95, 1.05)


def shift_hue(image: Image.Image, degrees: float) -> Image.Image:
    """``image`` (RGB) with every pixel's hue turned by ``degrees`` (saturation, value kept)."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.int16).copy()
    steps = int(round(degrees / 360.0 * 256.0))  # Pillow's hue runs 0-255 round the circle
    hsv[..., 0] = (hsv[..., 0] + steps) % 256
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def apply_gamma(image: Image.Image, gamma: float) -> Image.Image:
    """``255 * (value / 255) ** gamma`` per channel (below 1 brightens the mid-tones)."""
    table = [min(255, max(0, int(round(255.0 * (value / 255.0) ** gamma)))) for value in range(256)]
    return image.point(table * len(image.getbands()))


def color_augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """sd-scripts' color_aug on an RGB image: usually unchanged, else a small hue shift or gamma.

    Draws from ``rng`` in a fixed order (apply?, which?, how much?), so a seeded batch is
    reproducible.
    """
    if rng.random() > COLOR_AUG_PROBABILITY:
        return image
    if rng.random() > 0.5:
        return shift_hue(image, rng.uniform(-HUE_SHIFT_LIMIT_DEGREES, HUE_SHIFT_LIMIT_DEGREES))
    return apply_gamma(image, rng.uniform(*GAMMA_RANGE))
