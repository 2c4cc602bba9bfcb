"""Caption files beside the images, and the per-step caption augmentations of sd-scripts.

Reading follows sd-scripts: ``img.png`` has its caption in ``img<caption_extension>``; only the
first line counts. We take the first NON-empty line (sd-scripts takes line one even when blank)
and report how many other non-empty lines were ignored, so the scan can warn about them.

:func:`process_caption` reproduces sd-scripts' ``process_caption`` order and numbers: prefix and
suffix joined with a space; whole-caption dropout; then, on the tags, the fixed part (before
``keep_tokens_separator``, or the first ``keep_tokens`` tags), shuffling of the rest, tag dropout
of the rest, and a ", " join. Randomness comes only from the ``rng`` passed in, so a caller that
seeds it gets the same caption every time.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trainer.errors import TrainerError


class CaptionRules(Protocol):
    """The caption fields of a subset; :class:`trainer.data.blueprint.SubsetSpec` fits."""

    shuffle_caption: bool
    keep_tokens: int
    keep_tokens_separator: str
    caption_separator: str
    caption_prefix: str | None
    caption_suffix: str | None
    caption_dropout_rate: float
    caption_dropout_every_n_epochs: int
    caption_tag_dropout_rate: float


@dataclass(frozen=True)
class CaptionFile:
    """What a caption file held: the caption, and how many further non-empty lines were ignored."""

    path: Path
    text: str  # "" when the file is empty or only whitespace
    ignored_lines: int


def caption_path(image_path: Path | str, extension: str) -> Path:
    """The caption file of ``image_path``: its suffix replaced by ``extension`` (a dot is added if missing)."""
    extension = extension if extension.startswith(".") else f".{extension}"
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + extension)


def read_caption_file(image_path: Path | str, extension: str) -> CaptionFile | None:
    """Read the caption file beside ``image_path``; None when there is none.

    UTF-8 with or without a BOM, any line endings. Raises :class:`TrainerError` naming the file
    when it cannot be read or is not UTF-8.
    """
    path = caption_path(image_path, extension)
    if not path.is_file():
        return None
    try:
        raw = path.read_bytes()
    except OSError as problem:
        raise TrainerError(f"Cannot read caption file {path}: {problem.strerror or problem}",
                           hint="Check the file's permissions.") from problem
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        raise TrainerError(
            f"Caption file {path} is not UTF-8 text (bad byte at position {problem.start}).",
            hint="Open it in a text editor and save it as UTF-8.",
        ) from problem
    lines = [line.strip() for line in text.splitlines()]
    non_empty = [line for line in lines if line]
    if not non_empty:
        return CaptionFile(path, "", 0)
    return CaptionFile(path, non_empty[0], len(non_empty) - 1)


def read_caption(image_path: Path | str, extension: str) -> str | None:
    """The caption of ``image_path`` (first non-empty line, stripped), "" for an empty file, None for no file."""
    found = read_caption_file(image_path, extension)
    return None if found is None else found.text


def _split_tags(text: str, separator: str) -> list[str]:
    # Empty pieces ("a,,b", a trailing comma) are dropped so the ", " join never makes ", ,".
    return [tag.strip() for tag in text.split(separator) if tag.strip()]


def _fixed_and_flexible(caption: str, rules: CaptionRules) -> tuple[list[str], list[str], list[str]]:
    """Split into (fixed head, shuffle/drop-able middle, fixed tail) the way sd-scripts does."""
    separator = rules.caption_separator or ","
    marker = rules.keep_tokens_separator
    if marker and marker in caption:
        head, rest = caption.split(marker, 1)
        tail = ""
        if marker in rest:  # a second marker pins the tags after it at the end
            rest, tail = rest.split(marker, 1)
        return _split_tags(head, separator), _split_tags(rest, separator), _split_tags(tail, separator)
    tags = _split_tags(caption, separator)
    keep = max(0, rules.keep_tokens)
    return tags[:keep], tags[keep:], []


def process_caption(caption: str, rules: CaptionRules, rng: random.Random, epoch: int) -> str:
    """The caption one training step sees, with sd-scripts' augmentations.

    ``epoch`` is 1-based as in sd-scripts: with ``caption_dropout_every_n_epochs`` = n, epochs
    n, 2n, ... train with empty captions. The tag list is split and re-joined with ", " only when
    shuffling, tag dropout or a ``keep_tokens_separator`` marker is in play; otherwise the caption
    is left as written. The marker itself never reaches the text encoder.
    """
    if rules.caption_prefix:
        caption = f"{rules.caption_prefix} {caption}"
    if rules.caption_suffix:
        caption = f"{caption} {rules.caption_suffix}"

    # The rng is only drawn from when the rate is set, as in sd-scripts, so turning dropout
    # off does not change the shuffles that follow.
    dropped = rules.caption_dropout_rate > 0 and rng.random() < rules.caption_dropout_rate
    every = rules.caption_dropout_every_n_epochs
    if dropped or (every > 0 and epoch % every == 0):
        return ""

    marker = rules.keep_tokens_separator
    has_marker = bool(marker) and marker in caption
    if not (rules.shuffle_caption or rules.caption_tag_dropout_rate > 0 or has_marker):
        return caption

    fixed, flexible, tail = _fixed_and_flexible(caption, rules)
    if rules.shuffle_caption:
        rng.shuffle(flexible)
    rate = rules.caption_tag_dropout_rate
    if rate > 0:
        flexible = [tag for tag in flexible if rng.random() >= rate]
    return ", ".join(fixed + flexible + tail)


def tags_of(caption: str, rules: CaptionRules) -> list[str]:
    """The tags of a raw caption as sd-scripts counts them for ss_tag_frequency (lower case)."""
    separator = rules.caption_separator or ","
    marker = rules.keep_tokens_separator
    if marker:
        caption = caption.replace(marker, separator)
    return [tag.lower() for tag in _split_tags(caption, separator)]
