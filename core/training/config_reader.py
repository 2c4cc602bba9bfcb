"""Read a training TOML (ours, or any sd-scripts one) back into a :class:`TrainingForm`.

Every key goes through the options table: an unknown key is an error naming the key and its
closest known name, a secret is refused, an ignored sd-scripts key becomes a warning. A dataset
config the panel wrote folds back into the form (per-folder settings, image_dir, batch_size); any
other dataset config is kept as ``dataset_config``, so nothing in it is lost.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import CoreError
from core.training.form import (
    DATASET_ONLY, IMAGE_DIR_SETTINGS, TrainingForm, as_core_error, check_value, repeat_folders,
)
from core.training.network_types import CUSTOM, network_type_of
from trainer.config import flatten_sections, read_toml
from trainer.errors import TrainerError
from trainer.options import BY_NAME, IGNORED_OPTIONS, SECRET_KEYS, SUBSET, TRAIN

_FOLDER_KEYS = ("image_dir", "num_repeats", "class_tokens", "is_reg")


@dataclass
class ReadResult:
    """A form read from files, and what the user should know about the reading."""

    form: TrainingForm
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_toml(path)
    except TrainerError as problem:
        raise as_core_error(problem) from None


def values_from_mapping(flat: dict[str, Any], base: Path, source: str) -> tuple[dict[str, Any], list[str]]:
    """Check every key of a flat training mapping; return the typed values and warnings."""
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for name, raw in flat.items():
        if name in IGNORED_OPTIONS and name not in BY_NAME and name not in SECRET_KEYS:
            warnings.append(f"'{name}' (in {source}) is not used: {IGNORED_OPTIONS[name]}")
            continue
        value = check_value(name, raw, TRAIN, base, source)
        if value is not None:
            values[name] = value
    return values, warnings


def read_training_toml(path: str | Path, project: str | None = None) -> ReadResult:
    """The form a training TOML (and its dataset config, if any) describes."""
    path = Path(path).expanduser().resolve()
    try:
        flat = flatten_sections(_read(path), str(path))
    except TrainerError as problem:
        raise as_core_error(problem) from None
    values, warnings = values_from_mapping(flat, path.parent, str(path))
    form = with_network_type_read(TrainingForm(project or _project_from(values, path), values))
    result = ReadResult(form, warnings, [path])
    if values.get("dataset_config"):
        _fold_dataset_config(result, Path(values["dataset_config"]))
    return result


def with_network_type_read(form: TrainingForm) -> TrainingForm:
    """Set the form's network type (and conv settings) to what its network_module and network_args
    were written as; "custom" when no type writes exactly those."""
    choice = network_type_of(form.values)
    form.network_type = choice.key if choice else CUSTOM
    form.conv_dim = choice.conv_dim if choice else None
    form.conv_alpha = choice.conv_alpha if choice else None
    return form


def _project_from(values: dict[str, Any], path: Path) -> str:
    name = str(values.get("output_name") or path.stem)
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name).strip("._-")
    return cleaned or "my_lora"


def _fold_dataset_config(result: ReadResult, dataset_path: Path) -> None:
    """Turn a dataset config we can express in the form back into form values; keep any other."""
    values = result.form.values
    if not dataset_path.is_file():
        result.warnings.append(f"dataset_config {dataset_path} does not exist; it is kept as written.")
        return
    data = _read(dataset_path)
    folded = _as_form_parts(data, values, dataset_path)
    if folded is None:
        result.warnings.append(f"dataset_config {dataset_path} is kept as it is (it has settings the form shows "
                               "only as the file path).")
        return
    extra, overrides, repeats = folded
    values.pop("dataset_config")
    values.update(extra)
    result.form.subset_overrides = overrides
    result.form.repeats = repeats
    result.files.append(dataset_path)


def _as_form_parts(data: dict[str, Any], values: dict[str, Any],
                   path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], int | None] | None:
    """(form values, per-folder settings, the Repeats setting) for a one-dataset config over the N_name
    folders; else None. One num_repeats shared by every training folder that differs from the folder
    names is the form's Repeats setting."""
    datasets = data.get("datasets") or []
    if data.get("general") or len(datasets) != 1 or set(data) - {"general", "datasets"}:
        return None
    dataset = datasets[0]
    if set(dataset) - {"subsets", *DATASET_ONLY}:
        return None
    base = path.parent
    folders = {str(p): (name, repeats, tokens, False)
               for name, repeats, tokens, p in repeat_folders(values.get("train_data_dir"))}
    folders.update({str(p): (name, repeats, tokens, True)
                    for name, repeats, tokens, p in repeat_folders(values.get("reg_data_dir"), is_reg=True)})
    extra = {key: check_value(key, dataset[key], "dataset", base, str(path)) for key in DATASET_ONLY if key in dataset}
    overrides: dict[str, dict[str, Any]] = {}
    image_dir_subsets = []
    train_repeats: list[tuple[int, int]] = []  # (in the file, in the folder name) per training folder
    for raw in dataset.get("subsets") or []:
        subset = {key: check_value(key, value, SUBSET, base, str(path)) for key, value in raw.items()}
        known = folders.get(str(subset.get("image_dir")))
        if known is None:
            image_dir_subsets.append(subset)
            continue
        name, repeats, tokens, is_reg = known
        if not is_reg:
            train_repeats.append((subset.get("num_repeats", 1), repeats))
        if ((is_reg and subset.get("num_repeats", 1) != repeats) or subset.get("class_tokens") != tokens
                or bool(subset.get("is_reg")) != is_reg):
            return None  # the file disagrees with the folder names: keep the file
        own = {key: value for key, value in subset.items() if key not in _FOLDER_KEYS}
        if own:
            overrides[name] = own
    if len(image_dir_subsets) > 1:
        return None
    if image_dir_subsets:
        subset = image_dir_subsets[0]
        if set(subset) - {"image_dir", *IMAGE_DIR_SETTINGS}:
            return None
        extra.update(subset)
    repeats = None
    if any(written != named for written, named in train_repeats):
        if len({written for written, _ in train_repeats}) != 1:
            return None  # different numbers than the folder names, per folder: only the file says it
        repeats = train_repeats[0][0]
    return extra, overrides, repeats


def import_sd_scripts_toml(path: str | Path, project: str | None = None) -> ReadResult:
    """Import an existing sd-scripts training TOML; unknown keys raise, naming the closest option."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CoreError(f"Config file not found: {path}", "Check the path (absolute, or relative to the work folder).")
    return read_training_toml(path, project)
