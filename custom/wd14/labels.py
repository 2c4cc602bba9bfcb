"""The label file of a WD14 model (``selected_tags.csv``) and how tag names are written into captions.

The CSV has the header ``tag_id,name,category,count`` and one row per model output, in output
order. Category 9 marks ratings, 4 characters; 0 is general. Any other category (some newer
taggers add artist, copyright or meta tags) is treated as general, so it gets the general
threshold rather than being dropped or crashing the run. Indices come from the category column,
never from assumed positions: sd-scripts' tagger crashed when a character tag fired because it
assumed a layout.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from custom.errors import CustomError

RATING, GENERAL, CHARACTER = 9, 0, 4

# Emoticon tags whose underscore is part of the face: replacing it would make "^ ^" of "^_^".
KAOMOJI = frozenset({
    "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
    "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
})


@dataclass(frozen=True)
class Labels:
    """Tag names and categories in model output order, and the output indices of each kind."""

    names: tuple[str, ...]
    categories: tuple[int, ...]
    rating: np.ndarray  # int indices into the model output
    general: np.ndarray
    character: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


def clean_tag(name: str, remove_underscore: bool) -> str:
    """``long_hair`` -> ``long hair`` when asked; kaomoji such as ``^_^`` keep their underscore."""
    name = name.strip()
    if remove_underscore and name not in KAOMOJI:
        return name.replace("_", " ")
    return name


def read_labels(csv_path: Path | str) -> Labels:
    """Read ``selected_tags.csv``. Raises :class:`CustomError` naming the file when it is unusable."""
    path = Path(csv_path)
    hint = "Delete the model folder so it is downloaded again, or check the file (header tag_id,name,category,count)."
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as problem:
        raise CustomError(f"Cannot read the tag list {path}: {problem.strerror or problem}.", hint=hint) from problem
    except (UnicodeDecodeError, csv.Error) as problem:
        raise CustomError(f"The tag list {path} is not a readable CSV file ({problem}).", hint=hint) from problem
    if not rows or "name" not in rows[0] or "category" not in rows[0]:
        raise CustomError(f"The tag list {path} has no 'name' and 'category' columns or no rows.", hint=hint)
    names: list[str] = []
    categories: list[int] = []
    for line, row in enumerate(rows, start=2):
        try:
            categories.append(int(row["category"]))
        except (TypeError, ValueError) as problem:
            raise CustomError(f"The tag list {path}, line {line}: category {row['category']!r} is not a number.",
                              hint=hint) from problem
        names.append((row["name"] or "").strip())
    kinds = np.asarray(categories)
    return Labels(
        names=tuple(names),
        categories=tuple(categories),
        rating=np.flatnonzero(kinds == RATING),
        general=np.flatnonzero((kinds != RATING) & (kinds != CHARACTER)),
        character=np.flatnonzero(kinds == CHARACTER),
    )
