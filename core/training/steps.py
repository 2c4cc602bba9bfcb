"""How many steps a training run will take, with the arithmetic shown.

Images are counted by extension (the trainer's list: png jpg jpeg webp bmp, any case), per image
folder, without decoding them: cheap enough to run on every change in the panel. The trainer
counts the same way (then skips unreadable files, which the dataset panel reports).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.datasets.files import is_image_file
from trainer.data.regularisation import balanced_repeats


@dataclass(frozen=True)
class FolderCount:
    """One image folder: how many images, how often each is seen per epoch."""

    name: str
    path: Path
    images: int
    repeats: int
    is_reg: bool = False

    @property
    def seen(self) -> int:
        """Images times repeats."""
        return self.images * self.repeats


@dataclass(frozen=True)
class StepEstimate:
    """The step arithmetic of a run; ``formula`` shows it with the numbers filled in."""

    folders: tuple[FolderCount, ...]
    images: int
    images_per_epoch: int
    batch_size: int
    accumulation: int
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    formula: str
    by_epochs: bool  # True when max_train_epochs decides, False when max_train_steps does
    note: str = ""


def count_images(folder: Path) -> int:
    """Image files directly in ``folder`` (hidden files skipped, like the trainer's scan)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and is_image_file(p))


def folders_of(values: dict[str, Any], dataset: dict[str, Any] | None) -> list[FolderCount]:
    """The image folders a config trains on: the dataset config's subsets, else the N_name folders."""
    from core.training.form import repeat_folders

    if dataset:
        found = []
        for data in dataset.get("datasets", ()):
            for subset in data.get("subsets", ()):
                path = Path(subset["image_dir"])
                found.append(FolderCount(path.name, path, count_images(path), int(subset.get("num_repeats", 1)),
                                         bool(subset.get("is_reg"))))
        return found
    found = [FolderCount(name, path, count_images(path), repeats)
             for name, repeats, _, path in repeat_folders(values.get("train_data_dir"))]
    found += [FolderCount(name, path, count_images(path), repeats, True)
              for name, repeats, _, path in repeat_folders(values.get("reg_data_dir"), is_reg=True)]
    return found


def estimate_steps(values: dict[str, Any], folders: list[FolderCount], dataset_batch: int | None = None) -> StepEstimate:
    """Total steps the way the trainer plans them (epochs win over max_train_steps when both are set).

    With aspect-ratio buckets each bucket's last batch may be smaller, so the real count can be a
    little higher (at most one batch per bucket per epoch); the note says so.
    """
    batch = int(dataset_batch or values.get("train_batch_size") or 1)
    accumulation = int(values.get("gradient_accumulation_steps") or 1)
    train_seen = sum(folder.seen for folder in folders if not folder.is_reg)
    reg_folders = [folder for folder in folders if folder.is_reg]
    # The trainer balances regularisation images against the training samples (sd-scripts' rule).
    reg_seen = sum(balanced_repeats(train_seen, [f.repeats for f in reg_folders for _ in range(f.images)]))
    seen = train_seen + reg_seen
    images = sum(folder.images for folder in folders)
    batches = max(1, math.ceil(seen / batch)) if seen else 0
    per_epoch = max(1, math.ceil(batches / accumulation)) if batches else 0
    parts = [f"{f.images} images x {f.repeats} repeats ({f.name})" for f in folders if not f.is_reg]
    if reg_folders:
        names = ", ".join(f.name for f in reg_folders)
        parts.append(f"{sum(f.images for f in reg_folders)} regularisation images balanced to {reg_seen} ({names})")
    lines = [(" + ".join(parts) or "no images") + f" = {seen} images per epoch"]
    lines.append(f"{seen} / batch size {batch} = {batches} batches per epoch")
    if accumulation > 1:
        lines.append(f"{batches} / gradient accumulation {accumulation} = {per_epoch} steps per epoch")
    epochs_set = values.get("max_train_epochs")
    if epochs_set:
        epochs, total = int(epochs_set), per_epoch * int(epochs_set)
        lines.append(f"{per_epoch} steps per epoch x {epochs} epochs = {total} steps")
    else:
        total = int(values.get("max_train_steps") or 1600)
        epochs = math.ceil(total / per_epoch) if per_epoch else 0
        lines.append(f"max_train_steps = {total} (no max_train_epochs set), about {epochs} epochs")
    note = ""
    if values.get("enable_bucket"):
        note = "With aspect-ratio buckets a few more steps are possible (each bucket's last batch can be smaller)."
    return StepEstimate(tuple(folders), images, seen, batch, accumulation, batches, per_epoch, epochs, total,
                        "\n".join(lines), bool(epochs_set), note)
