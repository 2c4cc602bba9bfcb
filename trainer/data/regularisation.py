"""Regularisation images balanced against the training images, as sd-scripts does.

Per dataset, the regularisation (class) images are given repeats so that one epoch holds as many
regularisation samples as training samples: a first pass takes each image with its own repeats,
later passes add one repeat to each image in turn, stopping once the count is reached. When the
regularisation set is already larger, the images after the count are not used at all (and the
user is told). The result depends only on the records' order, which the scan keeps stable.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the scan imports this module; records are only read and copied here
    from trainer.data.scan import ImageRecord


def balanced_repeats(train_samples: int, reg_repeats: Sequence[int]) -> list[int]:
    """New repeats for the regularisation images, given the training samples per epoch."""
    repeats = [0] * len(reg_repeats)
    if not reg_repeats:
        return repeats
    count = 0
    first_pass = True
    while count < train_samples:
        for index, own in enumerate(reg_repeats):
            step = own if first_pass else 1
            repeats[index] += step
            count += step
            if count >= train_samples:
                break
        first_pass = False
    return repeats


def balance_regularisation(records: Sequence[ImageRecord]) -> tuple[tuple[ImageRecord, ...], list[str]]:
    """Records with the regularisation images' repeats balanced per dataset; unused ones dropped."""
    warnings: list[str] = []
    new_repeats: dict[int, int] = {}  # position in ``records`` -> repeats
    for dataset_index in sorted({record.dataset_index for record in records}):
        positions = [i for i, record in enumerate(records) if record.dataset_index == dataset_index]
        regs = [i for i in positions if records[i].is_reg]
        if not regs:
            continue
        train_samples = sum(records[i].num_repeats for i in positions if not records[i].is_reg)
        repeats = balanced_repeats(train_samples, [records[i].num_repeats for i in regs])
        new_repeats.update(zip(regs, repeats))
        unused = sum(1 for value in repeats if value == 0)
        if unused:
            warnings.append(
                f"Dataset {dataset_index + 1}: {unused} of {len(regs)} regularisation images are not used, because "
                f"one epoch has only {train_samples} training samples to balance them against.")
    balanced = []
    for position, record in enumerate(records):
        if position in new_repeats:
            if new_repeats[position] == 0:
                continue
            record = replace(record, num_repeats=new_repeats[position])
        balanced.append(record)
    return tuple(balanced), warnings
