"""The training form: option values in, checked values and the exact TOML files out.

The panel (or a script) fills a :class:`TrainingForm` with option name -> value. :func:`plan_config`
checks every value against the trainer's options table, fills in the project's output and log
folders, and renders the training TOML (sections by group) and, when the images need one, the
dataset TOML. Nothing is written until :func:`write_plan`. All paths in the files are absolute.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.datasets.naming import project_name
from core.errors import CoreError
from core.paths import ProjectPaths
from core.training.network_types import NetworkChoice, form_network, with_network_type
from core.training.toml_text import dataset_text, sections_text
from trainer.config import resolve_path_value
from trainer.errors import TrainerError
from trainer.options import BY_NAME, DATASET, GROUP_TITLES, OPTIONS, SECRET_KEYS, SUBSET, TRAIN, get_option
from trainer.options.schema import INT, PATH, Option

DATASET_SUFFIX = "_dataset"
# Options that exist only in a dataset config: they force one to be written.
DATASET_ONLY = tuple(o.name for o in OPTIONS if TRAIN not in o.scopes and DATASET in o.scopes)
SUBSET_ONLY = tuple(o.name for o in OPTIONS if TRAIN not in o.scopes and SUBSET in o.scopes
                    and DATASET not in o.scopes)
# image_dir's own folder settings (the N_name folders take repeats and tokens from their names).
IMAGE_DIR_SETTINGS = ("num_repeats", "class_tokens", "is_reg")
# A setting of the form, not of the trainer: it becomes num_repeats in every N_name subset of
# train_data_dir (a beginner sets repeats here instead of renaming folders). Same row shape as the
# table, so the panel shows it like every other option.
REPEATS = Option(
    "repeats", INT, None, "data",
    "How many times each image is seen per epoch, for every image folder of this run.",
    "Not set: each folder's own number (the 10 of 10_mychar). Set: this number for every folder of the dataset "
    "(regularisation folders keep theirs), written as num_repeats in the dataset config; the folders are not "
    "renamed. About 10 for 10-20 images, 5 for 50, 1-2 for hundreds.",
    level="basic", minimum=1, maximum=10000, title="Repeats",
)


@dataclass
class TrainingForm:
    """What the user filled in. ``values``: option name -> value (typed or text, as widgets give).

    ``subset_overrides`` maps an ``N_name`` folder's name (in ``train_data_dir`` or
    ``reg_data_dir``) to subset options for that folder only (e.g. ``{"5_style": {"flip_aug": True}}``).
    ``repeats`` (None: the folder names' numbers) overrides the repeats of every ``N_name`` folder
    of ``train_data_dir`` for this run. ``network_type`` (a key of
    :data:`core.training.network_types.NETWORK_TYPES`; None or "custom": ``values`` decide) writes
    ``network_module`` and ``network_args``, with ``conv_dim``/``conv_alpha`` for the types that
    train the conv layers (None: the network's dim / alpha).
    """

    project: str
    values: dict[str, Any] = field(default_factory=dict)
    subset_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    repeats: int | None = None
    network_type: str | None = None
    conv_dim: int | None = None
    conv_alpha: float | None = None


@dataclass(frozen=True)
class ConfigPlan:
    """The files a form turns into, not yet written."""

    project: str
    name: str
    training_path: Path
    training_text: str
    values: dict[str, Any]  # the checked values of the training config (what the trainer will read)
    dataset_path: Path | None = None
    dataset_text: str | None = None
    dataset: dict[str, Any] | None = None  # {"general": {...}, "datasets": [...]} as written

    @property
    def files(self) -> list[Path]:
        """The file paths this plan writes."""
        return [self.training_path] + ([self.dataset_path] if self.dataset_path else [])


def as_core_error(problem: TrainerError) -> CoreError:
    """The trainer's error as the core layer's (same message and hint)."""
    return CoreError(problem.message, problem.hint)


def check_project_name(project: str) -> str:
    """The project (or config) name as a safe folder and file name: the dataset panel's rule
    (:func:`core.datasets.naming.project_name`), so one name means one project in both notebooks."""
    return project_name(project or "")


def form_repeats(form: TrainingForm) -> int | None:
    """The form's repeats override, checked (None when not set)."""
    if is_empty(form.repeats):
        return None
    try:
        return REPEATS.coerce(form.repeats, "the Repeats setting")
    except TrainerError as problem:
        raise as_core_error(problem) from None


def form_network_choice(form: TrainingForm) -> NetworkChoice | None:
    """The form's network type, checked (None: not set, or Custom)."""
    return form_network(form.network_type, form.conv_dim, form.conv_alpha)


def form_values(form: TrainingForm) -> dict[str, Any]:
    """The form's option values with its network type written into network_module / network_args."""
    return with_network_type(form.values, form_network_choice(form))


def is_empty(value: Any) -> bool:
    """True for "not set": None, blank text, an empty list."""
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, (list, tuple)) and not value)


def check_value(name: str, raw: Any, scope: str = TRAIN, base: Path | None = None, source: str = "the form") -> Any:
    """One value typed and checked by the options table (None when empty); paths made absolute."""
    if name in SECRET_KEYS:
        raise CoreError(f"'{name}' is a secret and is never written to a config file.",
                        f"Set the environment variable {SECRET_KEYS[name]} instead.")
    try:
        option = get_option(name, scope, source)
        if is_empty(raw) and option.kind not in ("str_list",):
            return None
        value = option.normalise(option.coerce(raw, source))
    except TrainerError as problem:
        raise as_core_error(problem) from None
    if option.kind == PATH and value:
        value = resolve_path_value(name, value, Path(base or Path.cwd()))
    return value


def _differs_from_default(option: Option, value: Any) -> bool:
    default = option.default
    if value is None:
        return False
    if default is None:
        return not (isinstance(value, list) and not value)
    return value != default


def checked_values(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """Every set value checked. Advanced values equal to the table's default are dropped (they change
    nothing); basic ones are kept, so the file shows the numbers a beginner set (dim, lr...)."""
    checked = {}
    for name, raw in values.items():
        option = BY_NAME.get(name)
        scope = TRAIN if option is None or TRAIN in option.scopes else sorted(option.scopes)[0]
        value = check_value(name, raw, scope, base)
        if option is None or value is None:
            continue
        if _differs_from_default(option, value) or option.level == "basic":
            checked[name] = value
    return checked


def _with_project_defaults(values: dict[str, Any], project: str, paths: ProjectPaths) -> dict[str, Any]:
    """Output under ``outputs/<project>``, named after the project; logs under ``logs/<project>``."""
    filled = dict(values)
    filled.setdefault("output_dir", str(paths.outputs / project))
    if filled.get("output_name") in (None, BY_NAME["output_name"].default):  # the table's "last" names no project
        filled["output_name"] = project
    if filled.get("log_with"):
        filled.setdefault("logging_dir", str(paths.logs / project))
    return filled


def _training_sections(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {group: {} for group in GROUP_TITLES}
    for option in OPTIONS:  # table order, so related options sit together
        if option.name in values and TRAIN in option.scopes:
            sections.setdefault(option.group, {})[option.name] = values[option.name]
    return sections


def repeat_folders(root: str | Path | None, is_reg: bool = False) -> list[tuple[str, int, str | None, Path]]:
    """``(folder name, repeats, class tokens, path)`` of the ``N_name`` folders in ``root``, read by the
    trainer's own rules (zero repeats and unnumbered folders are skipped); [] when there are none."""
    if not root or not Path(root).is_dir():
        return []
    from trainer.config import load_training_config
    from trainer.data.blueprint import scan_repeat_folders

    try:
        subsets, _ = scan_repeat_folders(Path(root), is_reg, load_training_config())
    except TrainerError:
        return []
    return [(Path(s.image_dir).name, s.num_repeats, s.class_tokens, Path(s.image_dir)) for s in subsets]


def _dataset_tables(values: dict[str, Any], form: TrainingForm, base: Path) -> dict[str, Any] | None:
    """The dataset config for these values, or None when ``train_data_dir`` alone says it all."""
    folders = [(f, False) for f in repeat_folders(values.get("train_data_dir"))]
    folders += [(f, True) for f in repeat_folders(values.get("reg_data_dir"), is_reg=True)]
    extra = {name: values[name] for name in (*DATASET_ONLY, *SUBSET_ONLY) if name in values}
    if not folders and not extra and not form.subset_overrides:
        return None
    known = {folder[0] for folder, _ in folders}
    unknown = sorted(set(form.subset_overrides) - known)
    if unknown:
        raise CoreError(f"Per-folder settings name folder(s) {', '.join(unknown)}, which are not N_name folders "
                        "of the dataset folder.", "Remove those settings, or pick the dataset folder that holds them.")
    override = form_repeats(form)
    subsets = []
    for (name, repeats, tokens, path), is_reg in folders:
        if override is not None and not is_reg:
            repeats = override
        subset: dict[str, Any] = {"image_dir": str(path), "num_repeats": repeats}
        if tokens:
            subset["class_tokens"] = tokens
        if is_reg:
            subset["is_reg"] = True
        for key, raw in form.subset_overrides.get(name, {}).items():
            if key in ("image_dir", *IMAGE_DIR_SETTINGS):
                raise CoreError(f"{key} of folder {name} comes from the folder itself and cannot be set per folder.",
                                "Rename the folder to change its repeats or tokens (e.g. 5_mychar), or use image_dir.")
            value = check_value(key, raw, SUBSET, base, f"settings of folder {name}")
            if value is not None:
                subset[key] = value
        subsets.append(subset)
    if values.get("image_dir"):
        subsets.append({key: values[key] for key in ("image_dir", *IMAGE_DIR_SETTINGS) if key in values})
    else:
        stray = [key for key in IMAGE_DIR_SETTINGS if key in values]
        if stray:
            raise CoreError(f"{', '.join(stray)} set, but image_dir is not: these settings belong to image_dir's "
                            "folder (N_name folders take repeats and tokens from their names).",
                            f"Set image_dir, or clear {', '.join(stray)} (per-folder settings change N_name folders).")
    if not subsets:
        raise CoreError(f"{', '.join(extra)} need a dataset config, but there are no image folders to put in it.",
                        "Set the dataset folder (holding N_name folders) or image_dir.")
    dataset = {key: values[key] for key in DATASET_ONLY if key in values}
    return {"general": {}, "datasets": [{**dataset, "subsets": subsets}]}


def plan_config(form: TrainingForm, paths: ProjectPaths, name: str | None = None) -> ConfigPlan:
    """Check the form and render its files for ``<training_configs>/<project>/<name>.toml``.

    ``name`` defaults to the project name. Raises :class:`CoreError` naming the first bad option.
    """
    project = check_project_name(form.project)
    name = check_project_name(name or project)
    if name.endswith(DATASET_SUFFIX):
        raise CoreError(f"Config name {name!r} ends with {DATASET_SUFFIX}, which marks dataset configs.",
                        "Choose another name.")
    base = paths.work_dir
    values = _with_project_defaults(checked_values(form_values(form), base), project, paths)
    folder = paths.training_configs / project
    training_path = folder / f"{name}.toml"
    if values.get("dataset_config"):
        dataset = None  # the user's own dataset config decides; settings only it can hold must go there
        misplaced = [key for key in (*DATASET_ONLY, *SUBSET_ONLY) if key in values] + sorted(form.subset_overrides)
        if misplaced:
            raise CoreError(f"dataset_config is set, so {', '.join(misplaced)} cannot be added here.",
                            f"Put them in {values['dataset_config']}, or clear dataset_config to let the panel "
                            "write the dataset config.")
    else:
        dataset = _dataset_tables(values, form, base)
    dataset_path = folder / f"{name}{DATASET_SUFFIX}.toml" if dataset else None
    training_values = {key: value for key, value in values.items() if TRAIN in BY_NAME[key].scopes}
    if dataset_path:
        training_values["dataset_config"] = str(dataset_path)
    leaked = set(training_values) & set(SECRET_KEYS)
    if leaked:  # cannot happen through check_value; kept as the last line of defence
        raise CoreError(f"Refusing to write secret key(s) {sorted(leaked)}.", "Use environment variables.")
    header = (f"Training config of project {project} ({name}), written by the training panel.\n"
              f"Run: python -m trainer.train_network --config_file {shlex.quote(str(training_path))}")
    if dataset_path:
        header += "\nWhich images train, and how often, is in dataset_config."
    text = sections_text(header, _training_sections(training_values))
    data_text = None
    if dataset is not None:
        data_text = dataset_text(f"Dataset config of project {project} ({name}): one subset per image folder.",
                                 dataset["general"], dataset["datasets"])
    return ConfigPlan(project, name, training_path, text, training_values, dataset_path, data_text, dataset)


def write_plan(plan: ConfigPlan) -> list[Path]:
    """Write the plan's files (creating the folder); the caller decides about existing files first."""
    plan.training_path.parent.mkdir(parents=True, exist_ok=True)
    if plan.dataset_path and plan.dataset_text is not None:
        plan.dataset_path.write_text(plan.dataset_text, encoding="utf-8")
    plan.training_path.write_text(plan.training_text, encoding="utf-8")
    return plan.files
