"""Managers the notebooks talk to. This module starts with the setup side: the environment report.

Later managers (models, datasets, training, utilities) live in their own modules beside this one;
``SetupManager`` is the entry point the setup panel uses.
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from core.environment import (
    EnvironmentReport,
    EnvWarning,
    GpuInfo,
    Platform,
    detect_environment,
    detect_platform,
)
from core.paths import ProjectPaths

__all__ = [
    "EnvWarning",
    "EnvironmentReport",
    "FolderSpace",
    "GpuInfo",
    "Platform",
    "SetupManager",
    "detect_environment",
    "detect_platform",
]


@dataclass(frozen=True)
class FolderSpace:
    """One project folder, whether it exists yet, and the free disk space where it is (or will be)."""

    name: str
    path: Path
    exists: bool
    free_gb: float


def free_gb(folder: Path) -> float:
    """Free space in GB on the disk holding ``folder`` (its nearest existing parent if it does not exist)."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return round(shutil.disk_usage(existing).free / 1024**3, 2)


class SetupManager:
    """Answers "what machine is this and where do my files go?" for the setup panel."""

    def __init__(self, paths: ProjectPaths | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.environ = environ
        self.paths = paths or ProjectPaths.resolve(environ)

    def environment(self) -> EnvironmentReport:
        """Probe the machine (GPU, RAM, disk under the work folder, platform)."""
        return detect_environment(environ=self.environ, work_dir=self.paths.work_dir)

    def prepare_folders(self) -> ProjectPaths:
        """Create the datasets/models/outputs/... folders and return where they are."""
        return self.paths.ensure()

    def folder_space(self) -> list[FolderSpace]:
        """Every project folder with its free disk space (folders may sit on different disks)."""
        return [FolderSpace(item.name, Path(getattr(self.paths, item.name)),
                            Path(getattr(self.paths, item.name)).is_dir(), free_gb(getattr(self.paths, item.name)))
                for item in fields(self.paths)]

    def report_text(self) -> str:
        """The environment report as plain text, for the CLI and for logs."""
        return "\n".join(self.environment().summary_lines())


def main() -> int:
    """``python -m core.managers``: print the environment report and where files go."""
    manager = SetupManager()
    print(manager.report_text())
    for name, folder in vars(manager.paths).items():
        print(f"{name:17s} {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
