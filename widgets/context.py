"""What the panels of one notebook share: the project folders and the current choices.

One ``NotebookContext`` is made in the notebook's first cell and passed to every panel, so the
dataset chosen in the dataset panel is the one the tagging panel tags, and the model downloaded in
the setup panel shows up in the training panel. Panels subscribe with ``on_change``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.paths import ProjectPaths

# Names of the shared values; a panel that sets one tells every subscriber.
DATASET_FOLDER = "dataset_folder"  # Path of the dataset folder being worked on
PROJECT_NAME = "project_name"  # str, the LoRA project name
BASE_MODEL = "base_model"  # Path or Hub id of the chosen base model
CONFIG_FILE = "config_file"  # Path of the training TOML written by the training panel
KEYS = (DATASET_FOLDER, PROJECT_NAME, BASE_MODEL, CONFIG_FILE)


@dataclass
class NotebookContext:
    """Shared state of one notebook's panels (one instance per notebook kernel)."""

    paths: ProjectPaths = field(default_factory=ProjectPaths.resolve)
    values: dict[str, Any] = field(default_factory=dict)
    _listeners: dict[str, list[Callable[[Any], None]]] = field(default_factory=dict, repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        """The current value of ``key`` (one of ``KEYS``)."""
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Change ``key`` and call its listeners (only when the value really changed)."""
        if key not in KEYS:
            raise KeyError(f"unknown context key {key!r}; known: {', '.join(KEYS)}")
        if self.values.get(key) == value:
            return
        self.values[key] = value
        for listener in list(self._listeners.get(key, [])):
            listener(value)

    def on_change(self, key: str, listener: Callable[[Any], None]) -> None:
        """Call ``listener(new_value)`` whenever ``key`` changes."""
        if key not in KEYS:
            raise KeyError(f"unknown context key {key!r}; known: {', '.join(KEYS)}")
        self._listeners.setdefault(key, []).append(listener)

    @property
    def dataset_folder(self) -> Path | None:
        value = self.get(DATASET_FOLDER)
        return Path(value) if value else None
