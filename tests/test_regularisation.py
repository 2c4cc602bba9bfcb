"""Regularisation images are balanced against the training samples per dataset, as sd-scripts does."""
from __future__ import annotations

from dataclasses import replace

import pytest

from tests.test_data_buckets_epochs import fake_record
from trainer.data.regularisation import balance_regularisation, balanced_repeats


@pytest.mark.parametrize("train,own,expected", [
    (30, [1, 1, 1, 1], [8, 8, 7, 7]),   # a first pass of 4, then one more each in turn up to 30
    (10, [4, 4], [5, 5]),               # own repeats first (8), then +1, +1
    (5, [4, 4], [4, 4]),                # the image that crosses the count is taken whole
    (3, [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]),  # more reg images than samples: the rest are not used
    (0, [2], [0]),
    (7, [], []),
])
def test_balanced_repeats(train: int, own: list[int], expected: list[int]) -> None:
    assert balanced_repeats(train, own) == expected


def reg(name: str, repeats: int, dataset_index: int = 0):
    return replace(fake_record(name, (512, 512), repeats, dataset_index), is_reg=True)


def test_each_dataset_is_balanced_on_its_own_and_unused_images_are_named_in_a_warning() -> None:
    records = (
        [fake_record(f"t{i}", (512, 512), 5) for i in range(2)]          # dataset 0: 10 training samples
        + [reg(f"r{i}", 1) for i in range(3)]                              # -> 4, 3, 3
        + [fake_record("u0", (512, 512), 2, dataset_index=1)]             # dataset 1: 2 samples
        + [reg(f"s{i}", 1, dataset_index=1) for i in range(4)]             # -> 1, 1, 0, 0
    )
    balanced, warnings = balance_regularisation(records)
    repeats = {record.path.stem: record.num_repeats for record in balanced}
    assert repeats == {"t0": 5, "t1": 5, "r0": 4, "r1": 3, "r2": 3, "u0": 2, "s0": 1, "s1": 1}
    assert [record.path.stem for record in balanced] == ["t0", "t1", "r0", "r1", "r2", "u0", "s0", "s1"]
    assert len(warnings) == 1 and "Dataset 2: 2 of 4 regularisation images are not used" in warnings[0]


def test_without_regularisation_images_nothing_changes() -> None:
    records = tuple(fake_record(f"t{i}", (512, 512), 3) for i in range(3))
    assert balance_regularisation(records) == (records, [])


def test_the_panel_step_estimate_matches_the_trainer_plan_with_regularisation(tmp_path) -> None:
    """The training panel's steps formula and the trainer's own scan agree once reg images are balanced."""
    from PIL import Image

    from core.paths import ProjectPaths
    from core.training import TrainingForm, live_checks
    from trainer.config import load_training_config
    from trainer.data.blueprint import build_datasets
    from trainer.data.epochs import steps_per_epoch
    from trainer.data.scan import scan_datasets

    for folder, count in {"ds/5_char": 3, "reg/1_person": 4}.items():
        (tmp_path / folder).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (64, 64), (index * 40, 90, 160)).save(tmp_path / folder / f"i{index}.png")
    values = {"pretrained_model_name_or_path": str(tmp_path / "m.safetensors"), "train_data_dir": str(tmp_path / "ds"),
              "reg_data_dir": str(tmp_path / "reg"), "resolution": "64", "max_train_epochs": 2, "train_batch_size": 1,
              "enable_bucket": False}
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work").ensure()
    report = live_checks(TrainingForm("reg", values), paths, include_rules=False)
    config = load_training_config(overrides=values, cwd=tmp_path)
    datasets, _ = build_datasets(config)
    scan = scan_datasets(datasets, strict=True)
    assert scan.num_train_images == 15 and scan.num_reg_images == 15
    assert report.steps.images_per_epoch == 30 == steps_per_epoch(scan.records, datasets)
