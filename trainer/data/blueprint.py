"""Which image folders train, with which settings: the dataset config cascade and the N_name folders.

Two ways in, one result (a tuple of :class:`DatasetSpec`):

* a dataset config (``[general]``, ``[[datasets]]``, ``[[datasets.subsets]]``), where a subset's
  value overrides its dataset's, which overrides ``[general]``, which overrides the training config;
* ``train_data_dir`` (and ``reg_data_dir``), whose ``N_name`` sub-folders are subsets repeated N
  times with "name" as the caption of images that have none.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from trainer.config import TrainingConfig, read_toml, resolve_path_value
from trainer.errors import TrainerError
from trainer.options import BY_NAME, DATASET, SUBSET, get_option
from trainer.options.schema import PATH

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.*)$")


@dataclass(frozen=True)
class SubsetSpec:
    """One image folder and how its images and captions are used. Field names are option names."""

    image_dir: str
    num_repeats: int = 1
    class_tokens: str | None = None
    is_reg: bool = False
    caption_extension: str = ".txt"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_separator: str = ","
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False
    alpha_mask: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """A group of subsets that share a resolution and bucket settings."""

    resolution: tuple[int, int]
    batch_size: int
    enable_bucket: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    bucket_no_upscale: bool
    subsets: tuple[SubsetSpec, ...]


SUBSET_FIELDS = tuple(item.name for item in fields(SubsetSpec))
DATASET_FIELDS = tuple(item.name for item in fields(DatasetSpec) if item.name != "subsets")


def _from_training(config: TrainingConfig, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: config[name] for name in names if name in config}


def _check_level(values: dict[str, Any], scope: str, source: str, base: Path) -> dict[str, Any]:
    checked = {}
    for name, raw in values.items():
        if isinstance(raw, (dict, list)) and name in ("datasets", "subsets"):
            continue
        option = get_option(name, scope, source)
        value = option.normalise(option.coerce(raw, source))
        if option.kind == PATH and value is not None:
            value = resolve_path_value(name, value, base)
        checked[name] = value
    return checked


def _dataset_spec(merged: dict[str, Any], subsets: list[SubsetSpec], default_batch: int) -> DatasetSpec:
    width, height = merged["resolution"]
    return DatasetSpec(
        resolution=(int(width), int(height)),
        batch_size=int(merged.get("batch_size") or default_batch),
        enable_bucket=bool(merged["enable_bucket"]),
        min_bucket_reso=int(merged["min_bucket_reso"]),
        max_bucket_reso=int(merged["max_bucket_reso"]),
        bucket_reso_steps=int(merged["bucket_reso_steps"]),
        bucket_no_upscale=bool(merged["bucket_no_upscale"]),
        subsets=tuple(subsets),
    )


def _subset_spec(merged: dict[str, Any]) -> SubsetSpec:
    return SubsetSpec(**{name: merged[name] for name in SUBSET_FIELDS if merged.get(name) is not None})


def from_dataset_config(path: Path, config: TrainingConfig) -> tuple[DatasetSpec, ...]:
    """Read a dataset TOML with the sd-scripts cascade; relative paths resolve against its folder."""
    path = Path(path).resolve()
    data = read_toml(path)
    source, base = str(path), path.parent
    unknown = set(data) - {"general", "datasets"}
    if unknown:
        raise TrainerError(
            f"{source}: unknown top-level section(s) {sorted(unknown)}.",
            hint="A dataset config has [general] and [[datasets]] (each with [[datasets.subsets]]).",
        )
    training_level = {**_from_training(config, DATASET_FIELDS), **_from_training(config, SUBSET_FIELDS)}
    training_level["batch_size"] = config["train_batch_size"]
    general = _check_level(dict(data.get("general", {})), DATASET, f"{source} [general]", base)
    datasets = data.get("datasets") or []
    if not datasets:
        raise TrainerError(f"{source} has no [[datasets]] section.", hint="Add [[datasets]] with at least one [[datasets.subsets]] image_dir.")
    specs = []
    for number, dataset in enumerate(datasets, start=1):
        where = f"{source} [[datasets]] #{number}"
        dataset_level = _check_level({k: v for k, v in dataset.items() if k != "subsets"}, DATASET, where, base)
        subset_specs = []
        for sub_number, subset in enumerate(dataset.get("subsets") or [], start=1):
            sub_where = f"{where} subset #{sub_number}"
            subset_level = _check_level(dict(subset), SUBSET, sub_where, base)
            merged = {**training_level, **general, **dataset_level, **subset_level}
            if not merged.get("image_dir"):
                raise TrainerError(f"{sub_where} has no image_dir.", hint='Add image_dir = "path/to/images".', option="image_dir")
            subset_specs.append(_subset_spec(merged))
        if not subset_specs:
            raise TrainerError(f"{where} has no [[datasets.subsets]].", hint="Add at least one subset with an image_dir.")
        specs.append(_dataset_spec({**training_level, **general, **dataset_level}, subset_specs, config["train_batch_size"]))
    return tuple(specs)


def contains_images(folder: Path) -> bool:
    """True when ``folder`` directly holds at least one file with an image extension (any case)."""
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def scan_repeat_folders(root: Path, is_reg: bool, config: TrainingConfig) -> tuple[list[SubsetSpec], list[str]]:
    """Subsets from the ``N_name`` folders under ``root``; also warnings for folders skipped."""
    root = Path(root)
    what = "reg_data_dir" if is_reg else "train_data_dir"
    if not root.is_dir():
        raise TrainerError(f"{what} does not exist or is not a folder: {root}", hint="Check the path.", option=what)
    subsets, warnings = [], []
    defaults = _from_training(config, SUBSET_FIELDS)
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        match = _REPEAT_FOLDER.match(child.name)
        if not match:
            if not child.name.startswith((".", "_")):
                warnings.append(
                    f"Folder '{child.name}' in {what} is skipped: its name does not start with a repeat count "
                    f"(rename it like 10_{child.name})."
                )
            continue
        repeats, tokens = int(match.group(1)), match.group(2).strip()
        if repeats < 1:
            warnings.append(f"Folder '{child.name}' is skipped: a repeat count of 0 trains nothing.")
            continue
        subsets.append(SubsetSpec(**{
            **defaults, "image_dir": str(child.resolve()), "num_repeats": repeats,
            "class_tokens": tokens or None, "is_reg": is_reg,
        }))
    if not subsets and not is_reg:
        if contains_images(root):
            hint = (f"{root} holds images directly. Put them in a sub-folder named like 10_mychar "
                    f"(10 repeats, 'mychar' as the default caption) and keep train_data_dir = {root}.")
        else:
            hint = (f"Inside {root}, each image folder must be named like 10_mychar. If your images are in "
                    "such a folder, set train_data_dir to the folder that CONTAINS it.")
        raise TrainerError(f"No image folders found in {what} {root}.", hint=hint, option=what)
    return subsets, warnings


def build_datasets(config: TrainingConfig) -> tuple[tuple[DatasetSpec, ...], list[str]]:
    """The datasets to train on, from ``dataset_config`` or ``train_data_dir``/``reg_data_dir``."""
    if config["dataset_config"]:
        return from_dataset_config(Path(config["dataset_config"]), config), []
    if not config["train_data_dir"]:
        raise TrainerError(
            "No training images given.",
            hint="Set train_data_dir (the folder holding your 10_name folders) or dataset_config.",
            option="train_data_dir",
        )
    subsets, warnings = scan_repeat_folders(Path(config["train_data_dir"]), False, config)
    if config["reg_data_dir"]:
        reg, reg_warnings = scan_repeat_folders(Path(config["reg_data_dir"]), True, config)
        subsets += reg
        warnings += reg_warnings
    merged = {name: config[name] for name in DATASET_FIELDS if name in config}
    return (_dataset_spec(merged, subsets, config["train_batch_size"]),), warnings


def check_field_coverage() -> list[str]:
    """Subset/dataset fields that do not match the options table (used by a test to stop drift)."""
    problems = []
    for name in SUBSET_FIELDS:
        if name not in BY_NAME or SUBSET not in BY_NAME[name].scopes:
            problems.append(f"SubsetSpec.{name} is not a subset option")
    for option in BY_NAME.values():
        if SUBSET in option.scopes and option.name not in SUBSET_FIELDS:
            problems.append(f"subset option {option.name} missing from SubsetSpec")
        if option.scopes == frozenset({DATASET}) and option.name not in DATASET_FIELDS:
            problems.append(f"dataset option {option.name} missing from DatasetSpec")
    return problems
