"""Hooks into the training loop, for the things that run beside training: samples, validation,
logging to trackers, saved states. Each is a small class in its own module; the loop calls them
in order and knows nothing else about them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class Callback:
    """Does nothing by default; override what you need. ``state`` is the loop's LoopState."""

    def on_train_start(self, session: Any, state: Any) -> None:
        """Before the first step (after all caches are built)."""

    def on_step_end(self, session: Any, state: Any, loss: float) -> None:
        """After each optimizer update; ``state.step`` is already advanced."""

    def on_epoch_end(self, session: Any, state: Any) -> None:
        """After each epoch's last update."""

    def on_save(self, session: Any, state: Any, path: Path) -> None:
        """After a LoRA file was written."""

    def on_train_end(self, session: Any, state: Any, final_path: Path | None) -> None:
        """After the final save, or when the run stops early."""
