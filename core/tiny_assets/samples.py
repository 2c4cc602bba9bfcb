"""A few clean sample images that the tiny WD14 tagger recognises, in the trainer's ``N_name`` layout.

"Check my setup" tags and trains on these. Unlike the odd-case set in ``images.py`` every image
here decodes cleanly, and each one is built from the colours the tiny tagger's hand-wired
detectors react to (see ``tagger.py``), so the check can say exactly which tag each image must
get: a tagger that feeds RGB instead of BGR, or pads with the wrong colour, fails visibly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SIDE = 64  # the trainer's smallest useful resolution; also the tiny tagger's input side
REPEATS = 5
CONCEPT = "selfcheck"

# (file stem, top-half RGB, bottom-half RGB, the tag the tiny tagger must give it)
_PLAN: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int], str], ...] = (
    ("red", (255, 0, 0), (255, 0, 0), "red_background"),
    ("blue", (0, 0, 255), (0, 0, 255), "blue_background"),
    ("cyan", (0, 255, 255), (0, 255, 255), "hatsune_miku"),
    ("red_over_white", (255, 0, 0), (255, 255, 255), "hakurei_reimu"),
)


@dataclass(frozen=True)
class SampleImages:
    """Where :func:`build_sample_images` wrote the images and which tag each must receive."""

    train_dir: Path  # the folder that holds ``N_name`` sub-folders (the trainer's train_data_dir)
    folder: Path  # the one ``N_name`` sub-folder with the images
    images: tuple[Path, ...]
    expected_tags: dict[Path, str]  # image -> raw tag name as in selected_tags.csv


def build_sample_images(train_dir: Path) -> SampleImages:
    """Write the sample PNGs into ``train_dir/5_selfcheck`` (created if missing) and describe them."""
    from PIL import Image

    train_dir = Path(train_dir).resolve()
    folder = train_dir / f"{REPEATS}_{CONCEPT}"
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    expected = {}
    for stem, top, bottom, tag in _PLAN:
        image = Image.new("RGB", (SIDE, SIDE), bottom)
        image.paste(Image.new("RGB", (SIDE, SIDE // 2), top), (0, 0))
        path = folder / f"{stem}.png"
        image.save(path)
        images.append(path)
        expected[path] = tag
    return SampleImages(train_dir=train_dir, folder=folder, images=tuple(images), expected_tags=expected)
