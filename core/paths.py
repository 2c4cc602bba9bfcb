"""Where the project keeps datasets, models, outputs, logs and configs on disk.

Defaults live inside the project folder. Every folder can be moved, for example onto the
persistent ``/workspace`` disk of a rented server, with one environment variable for all of
them (``LORA_WORK_DIR``) or one per folder (``LORA_DATASETS_DIR`` and so on). Every path
here is absolute, so configs written from it work from any working directory.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Folder name under the work dir, and the environment variable that overrides it alone.
_FOLDERS = {
    "datasets": "LORA_DATASETS_DIR",
    "models": "LORA_MODELS_DIR",
    "vae": "LORA_VAE_DIR",
    "outputs": "LORA_OUTPUT_DIR",
    "logs": "LORA_LOGS_DIR",
    "training_configs": "LORA_CONFIGS_DIR",
    "cache": "LORA_CACHE_DIR",
}


@dataclass(frozen=True)
class ProjectPaths:
    """The absolute folders the managers read from and write to."""

    work_dir: Path
    datasets: Path
    models: Path
    vae: Path
    outputs: Path
    logs: Path
    training_configs: Path
    cache: Path

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, work_dir: Path | None = None) -> "ProjectPaths":
        """Build the folder set from ``work_dir`` (or ``LORA_WORK_DIR``, or the project folder).

        Relative values are taken relative to the work dir; ``~`` is expanded.
        """
        env = os.environ if environ is None else environ
        base = work_dir or Path(env.get("LORA_WORK_DIR") or PROJECT_ROOT)
        base = Path(base).expanduser().resolve()
        chosen: dict[str, Path] = {}
        for name, variable in _FOLDERS.items():
            value = env.get(variable)
            folder = Path(value).expanduser() if value else Path(name)
            chosen[name] = folder if folder.is_absolute() else (base / folder).resolve()
        return cls(work_dir=base, **chosen)

    def ensure(self) -> "ProjectPaths":
        """Create every folder that does not exist yet; return self for chaining."""
        for item in fields(self):
            Path(getattr(self, item.name)).mkdir(parents=True, exist_ok=True)
        return self
