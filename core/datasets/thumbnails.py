"""Small JPEG thumbnails of dataset images for the notebook's grid, cached so a page shows at once.

A thumbnail is made from the picture exactly as the trainer decodes it (EXIF rotation, alpha on
white, CMYK and 16-bit converted), so what the grid shows is what training sees. The user's image
is only read: thumbnails live in ``<cache>/thumbnails/``, keyed by the image's path, size and
modification time, so an edited image gets a fresh one and the cache never goes stale.
"""
from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.datasets.files import atomic_write_bytes
from core.errors import CoreError

THUMBNAIL_DIR = "thumbnails"
DEFAULT_SIDE = 160
_QUALITY = 82


def thumbnail_key(image: Path, side: int) -> str | None:
    """The cache key of ``image`` at ``side`` pixels, or None when the file cannot be read."""
    try:
        stat = Path(image).stat()
    except OSError:
        return None
    text = f"{Path(image).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{side}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _render(image: Path, side: int) -> bytes | None:
    """JPEG bytes of ``image`` shrunk to fit ``side`` x ``side``, or None when it does not decode."""
    from trainer.data.images import try_load_image_rgb  # Pillow and numpy: only when a grid page is drawn

    picture, _reason = try_load_image_rgb(image)
    if picture is None:
        return None
    with picture:
        picture.thumbnail((side, side))
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=_QUALITY)
    return buffer.getvalue()


def make_thumbnail(image: Path, cache_dir: Path, side: int = DEFAULT_SIDE) -> bytes | None:
    """The JPEG thumbnail of ``image`` (from the cache when there), or None for an unreadable image.

    ``cache_dir`` is the project's cache folder; thumbnails go to its ``thumbnails/`` folder.
    A cache that cannot be written (read-only disk) only costs speed: the bytes are still returned.
    """
    if side < 16:
        raise CoreError(f"Thumbnail side {side} is too small.", hint="Use 64 pixels or more.")
    key = thumbnail_key(image, side)
    if key is None:
        return None
    cached = Path(cache_dir) / THUMBNAIL_DIR / key[:2] / f"{key}.jpg"
    if cached.is_file():
        return cached.read_bytes()
    data = _render(Path(image), side)
    if data is None:
        return None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, data)
    except (OSError, CoreError):
        pass  # a cache we cannot write is slower, not wrong
    return data


def make_thumbnails(images: list[Path], cache_dir: Path, side: int = DEFAULT_SIDE, workers: int = 2) -> list[bytes | None]:
    """Thumbnails of ``images`` in order, made in ``workers`` threads (Pillow decodes without the GIL)."""
    if workers <= 1 or len(images) <= 1:
        return [make_thumbnail(path, cache_dir, side) for path in images]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumbnails") as pool:
        return list(pool.map(lambda path: make_thumbnail(path, cache_dir, side), images))
