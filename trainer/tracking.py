"""Training curves for TensorBoard and Weights & Biases.

``log_with`` picks the trackers (``tensorboard``, ``wandb`` or ``all``); setting only
``logging_dir`` means TensorBoard, as in sd-scripts. Each run logs under its own folder,
``<logging_dir>/<log_prefix><output_name>_<YYYYmmdd-HHMMSS>`` (``logging_dir`` defaults to
``<output_dir>/logs``), so runs sit side by side in one TensorBoard.

Scalars, by global step: ``loss/current`` (this step), ``loss/average`` (mean of the epoch so
far), ``lr/<group>`` for each optimizer group (``lr/unet``, ``lr/te``, ``lr/te1``, ``lr/te2``),
``loss/epoch`` at each epoch's end and ``loss/validation`` when validation runs. Sample images
go to the ``samples/<index>`` image tags.

The W&B key is never read from the config: wandb takes it from the ``WANDB_API_KEY`` environment
variable (or an earlier ``wandb login``) itself.
"""
from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from trainer.callbacks import Callback
from trainer.errors import TrainerError

DEFAULT_PROJECT = "network_train"  # sd-scripts' tracker name when log_tracker_name is empty
WANDB_HINT = "pip install wandb, then set WANDB_API_KEY in the environment (never in the config file)."


class Tracker(Protocol):
    """What the tracking callback writes to."""

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Record named numbers at a global step."""

    def log_images(self, step: int, images: Mapping[str, Path]) -> None:
        """Record PNG files under tag names at a global step."""

    def close(self) -> None:
        """Flush and release the tracker."""


def wanted_trackers(log_with: str | None, logging_dir: str | None) -> list[str]:
    """The tracker names ``log_with`` (and ``logging_dir``) ask for, in a fixed order."""
    if log_with is None:
        return ["tensorboard"] if logging_dir else []
    return ["tensorboard", "wandb"] if log_with == "all" else [log_with]


def require_wandb(log_with: str | None) -> None:
    """Raise a TrainerError when wandb is asked for but not installed (checked before any heavy work)."""
    if log_with in ("wandb", "all") and importlib.util.find_spec("wandb") is None:
        raise TrainerError(f"log_with = \"{log_with}\" needs the wandb package, which is not installed.",
                           hint=WANDB_HINT, option="log_with")


def run_log_dir(logging_dir: str | Path | None, output_dir: str | Path, log_prefix: str | None, output_name: str,
                now: float | None = None) -> Path:
    """This run's own log folder (not created); never an existing one."""
    root = Path(logging_dir) if logging_dir else Path(output_dir) / "logs"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    base = f"{log_prefix or ''}{output_name}_{stamp}"
    folder, number = root / base, 2
    while folder.exists():  # two runs in the same second must not mix their curves
        folder, number = root / f"{base}_{number}", number + 1
    return folder


class TensorBoardTracker:
    """Writes TensorBoard event files with torch's SummaryWriter."""

    def __init__(self, folder: Path, settings: Mapping[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as problem:
            raise TrainerError("TensorBoard logging needs the tensorboard package, which is not installed.",
                               hint="pip install tensorboard (it is in requirements.txt).",
                               option="log_with") from problem
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._writer = SummaryWriter(log_dir=str(folder))
        self._writer.add_text("config", "```\n" + json.dumps(dict(settings), indent=1, default=str) + "\n```", 0)

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One scalar per tag."""
        for tag, value in values.items():
            self._writer.add_scalar(tag, float(value), step)

    def log_images(self, step: int, images: Mapping[str, Path]) -> None:
        """Each PNG as an HWC uint8 image."""
        import numpy as np
        from PIL import Image

        for tag, path in images.items():
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            self._writer.add_image(tag, pixels, step, dataformats="HWC")

    def close(self) -> None:
        """Flush the event file to disk and close it."""
        self._writer.flush()
        self._writer.close()


class WandbTracker:
    """Logs to a Weights & Biases run (project ``log_tracker_name``, name ``wandb_run_name``)."""

    def __init__(self, folder: Path, project: str, run_name: str, settings: Mapping[str, Any]) -> None:
        require_wandb("wandb")
        import wandb

        folder.mkdir(parents=True, exist_ok=True)
        self._wandb = wandb
        try:
            self._run = wandb.init(project=project, name=run_name, dir=str(folder), config=dict(settings))
        except Exception as problem:  # wandb raises its own types for a missing key, no network, ...
            raise TrainerError(f"Weights & Biases could not start a run: {type(problem).__name__}: {problem}",
                               hint="Set WANDB_API_KEY in the environment (or run `wandb login`), check the "
                                    "connection, or set WANDB_MODE=offline.", option="log_with") from problem

    def log_scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One wandb.log call per step."""
        self._run.log({tag: float(value) for tag, value in values.items()}, step=step)

    def log_images(self, step: int, images: Mapping[str, Path]) -> None:
        """The PNGs as wandb images."""
        self._run.log({tag: self._wandb.Image(str(path)) for tag, path in images.items()}, step=step)

    def close(self) -> None:
        """Finish the run (uploads what is left)."""
        self._run.finish()


def build_trackers(config: Any, output_dir: Path, output_name: str, settings: Mapping[str, Any]) -> list[Tracker]:
    """The trackers the config asks for, each started; an empty list when logging is off."""
    names = wanted_trackers(config.log_with, config.logging_dir)
    if not names:
        return []
    require_wandb(config.log_with)
    folder = run_log_dir(config.logging_dir, output_dir, config.log_prefix, output_name)
    trackers: list[Tracker] = []
    if "tensorboard" in names:
        trackers.append(TensorBoardTracker(folder, settings))
    if "wandb" in names:
        trackers.append(WandbTracker(folder, config.log_tracker_name or DEFAULT_PROJECT,
                                     config.wandb_run_name or folder.name, settings))
    return trackers


class TrackingCallback(Callback):
    """Sends the step loss, running average and learning rates to every tracker."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)
        self._epoch_losses: list[float] = []
        self._epoch = 0

    def log(self, step: int, values: Mapping[str, float]) -> None:
        """Send scalars to every tracker (also used by validation)."""
        for tracker in self.trackers:
            tracker.log_scalars(step, values)

    def log_samples(self, step: int, paths: Sequence[Path], prompts: Sequence[Any]) -> None:
        """Send sample images, tagged by prompt index."""
        images = {f"samples/{prompt.index:02d}": path for path, prompt in zip(paths, prompts)}
        for tracker in self.trackers:
            tracker.log_images(step, images)

    def log_validation(self, step: int, loss: float) -> None:
        """``loss/validation`` at ``step``."""
        self.log(step, {"loss/validation": loss})

    def on_step_end(self, session: Any, state: Any, loss: float) -> None:
        """``loss/current``, ``loss/average`` and ``lr/<group>``."""
        from trainer.optim import current_lrs

        if state.epoch != self._epoch:  # the average restarts with each epoch, as sd-scripts' does
            self._epoch, self._epoch_losses = state.epoch, []
        self._epoch_losses.append(float(loss))
        values = {"loss/current": float(loss),
                  "loss/average": sum(self._epoch_losses) / len(self._epoch_losses)}
        groups = session.optimizer.param_groups
        for index, (group, rate) in enumerate(zip(groups, current_lrs(session.optimizer))):
            values[f"lr/{group.get('name', index)}"] = rate
        self.log(state.step, values)

    def on_epoch_end(self, session: Any, state: Any) -> None:
        """``loss/epoch``: the mean loss of the epoch that just ended."""
        if self._epoch_losses and self._epoch == state.epoch:
            self.log(state.step, {"loss/epoch": sum(self._epoch_losses) / len(self._epoch_losses)})

    def on_train_end(self, session: Any, state: Any, final_path: Path | None) -> None:
        """Flush and close every tracker, even when the run failed."""
        for tracker in self.trackers:
            tracker.close()
