"""Named training configs under ``<training_configs>/<project>/``: save, list, load, and the run config.

Nothing is overwritten silently: saving over an existing name needs ``overwrite=True``, and even
then the old files are first moved to ``<project>/backups/<name>.<N>.toml``.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from core.errors import CoreError
from core.paths import ProjectPaths
from core.training.config_reader import ReadResult, read_training_toml
from core.training.form import DATASET_SUFFIX, ConfigPlan, TrainingForm, check_project_name, plan_config, write_plan

BACKUP_FOLDER = "backups"


@dataclass(frozen=True)
class SavedConfig:
    """What a save wrote, and where the files it replaced went."""

    plan: ConfigPlan
    backups: tuple[Path, ...] = ()

    @property
    def path(self) -> Path:
        """The training TOML (what ``--config_file`` takes)."""
        return self.plan.training_path


def project_folder(paths: ProjectPaths, project: str) -> Path:
    """``<training_configs>/<project>``."""
    return paths.training_configs / check_project_name(project)


def list_projects(paths: ProjectPaths) -> list[str]:
    """Projects that have a config folder, sorted."""
    root = paths.training_configs
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def list_configs(paths: ProjectPaths, project: str) -> list[str]:
    """Names of the saved training configs of ``project`` (dataset configs and backups left out)."""
    folder = project_folder(paths, project)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.toml") if not p.stem.endswith(DATASET_SUFFIX))


def _backup(path: Path) -> Path:
    folder = path.parent / BACKUP_FOLDER
    folder.mkdir(exist_ok=True)
    number = 1
    while (target := folder / f"{path.stem}.{number}{path.suffix}").exists():
        number += 1
    shutil.move(str(path), str(target))
    return target


def _same_text(path: Path, text: str | None) -> bool:
    return text is not None and path.is_file() and path.read_text(encoding="utf-8") == text


def save_config(form: TrainingForm, paths: ProjectPaths, name: str | None = None,
                overwrite: bool = False) -> SavedConfig:
    """Write the form as ``<project>/<name>.toml`` (+ ``<name>_dataset.toml``).

    An existing config of that name is an error unless ``overwrite``; then its files are moved to
    ``backups/`` first (files whose text would not change are left as they are).
    """
    plan = plan_config(form, paths, name)
    # A stale dataset file from an earlier save of this name would no longer be referenced.
    stale_dataset = plan.training_path.with_name(f"{plan.name}{DATASET_SUFFIX}.toml")
    targets = [(plan.training_path, plan.training_text),
               (stale_dataset, plan.dataset_text if plan.dataset_path else None)]
    existing = [path for path, _ in targets if path.exists()]
    if existing and not overwrite and not all(_same_text(path, text) for path, text in targets if path.exists()):
        raise CoreError(f"A config named '{plan.name}' already exists in {plan.training_path.parent}.",
                        "Choose another name, or tick 'overwrite' (the old files are kept in backups/).")
    backups = tuple(_backup(path) for path, text in targets if path.exists() and not _same_text(path, text))
    write_plan(plan)
    return SavedConfig(plan, backups)


def load_config(paths: ProjectPaths, project: str, name: str) -> ReadResult:
    """The form saved as ``<project>/<name>.toml``."""
    path = project_folder(paths, project) / f"{check_project_name(name)}.toml"
    if not path.is_file():
        raise CoreError(f"No saved config '{name}' in {path.parent}.",
                        f"Saved configs: {', '.join(list_configs(paths, project)) or 'none yet'}.")
    return read_training_toml(path, project)


def write_run_config(form: TrainingForm, paths: ProjectPaths) -> SavedConfig:
    """The config a Start uses: ``<project>/<project>.toml``, earlier versions kept in ``backups/``."""
    return save_config(form, paths, None, overwrite=True)
