"""Content hashes for duplicate finding: exact (SHA-256 of the bytes) and perceptual (dHash + aHash).

A perceptual hash survives resizing and re-encoding, so a picture saved twice at different sizes
or JPEG qualities still matches. Each is 64 bits from a tiny greyscale thumbnail:

* dHash: 9x8 thumbnail, one bit per horizontal neighbour pair (is the right pixel brighter?).
  It follows gradients, so it ignores overall brightness, but two smooth pictures with the same
  left-to-right shading can collide.
* aHash: 8x8 thumbnail, one bit per pixel (brighter than the mean?). It follows the layout of
  light and dark areas, which is exactly what dHash misses.

Two images count as near-duplicates only when BOTH hashes are close, which keeps the false
matches of either one alone out (measured on the test image set: two different smooth images
differ by 2 bits of dHash but 17 of aHash; a resized JPEG copy by 1 and 0).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and Pillow are imported where hashing happens: the panels open without them
    import numpy as np
    from PIL import Image

DEFAULT_DHASH_BITS = 8  # of 64: about what a resize plus JPEG re-encode moves
DEFAULT_AHASH_BITS = 8


@dataclass(frozen=True)
class PerceptualHash:
    """The two 64-bit hashes of one image."""

    dhash: int
    ahash: int

    def distance(self, other: "PerceptualHash") -> tuple[int, int]:
        """Differing bits of (dHash, aHash)."""
        return (self.dhash ^ other.dhash).bit_count(), (self.ahash ^ other.ahash).bit_count()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in chunks (big files do not fill memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for bit in bits.flatten():
        value = (value << 1) | int(bit)
    return value


def _grey_thumbnail(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    import numpy as np
    from PIL import Image

    # BOX averages whole areas: the thumbnail reflects the picture, not a few sampled pixels.
    return np.asarray(image.convert("L").resize(size, Image.Resampling.BOX), dtype=np.float64)


def dhash(image: Image.Image) -> int:
    """64-bit difference hash of ``image`` (any mode; alpha should already be flattened)."""
    grey = _grey_thumbnail(image, (9, 8))
    return _bits_to_int(grey[:, 1:] > grey[:, :-1])


def ahash(image: Image.Image) -> int:
    """64-bit average hash of ``image``."""
    grey = _grey_thumbnail(image, (8, 8))
    return _bits_to_int(grey > grey.mean())


def perceptual_hash(image: Image.Image) -> PerceptualHash:
    """Both hashes of ``image``."""
    return PerceptualHash(dhash(image), ahash(image))


def near_duplicate_pairs(
    hashes: list[PerceptualHash], max_dhash_bits: int = DEFAULT_DHASH_BITS, max_ahash_bits: int = DEFAULT_AHASH_BITS,
) -> list[tuple[int, int, int, int]]:
    """Index pairs (i, j, dHash bits, aHash bits), i < j, whose hashes are both within the limits.

    Vectorised per row with numpy, so a few thousand images take well under a second.
    """
    if len(hashes) < 2:
        return []
    import numpy as np

    d = np.array([h.dhash for h in hashes], dtype=np.uint64)
    a = np.array([h.ahash for h in hashes], dtype=np.uint64)
    pairs = []
    for i in range(len(hashes) - 1):
        d_bits = _popcount(d[i + 1 :] ^ d[i])
        a_bits = _popcount(a[i + 1 :] ^ a[i])
        for offset in np.nonzero((d_bits <= max_dhash_bits) & (a_bits <= max_ahash_bits))[0]:
            pairs.append((i, i + 1 + int(offset), int(d_bits[offset]), int(a_bits[offset])))
    return pairs


def _popcount(values: np.ndarray) -> np.ndarray:
    import numpy as np

    as_bytes = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    return np.unpackbits(as_bytes, axis=1).sum(axis=1)
