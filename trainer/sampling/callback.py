"""When to draw preview images during a run, and the ``sample`` event that lists them.

``sample_at_first`` draws before the first step (step 0), ``sample_every_n_steps`` after every
N-th update, ``sample_every_n_epochs`` after every N-th complete epoch. Both schedules may be
set; a step that both hit is drawn once. Nothing is drawn once a stop was requested. The prompts
file is read once, when the run starts.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.callbacks import Callback
from trainer.sampling.generate import generate_samples
from trainer.sampling.prompts import SamplePrompt

# (step, image paths, prompts) -> None; e.g. a tracker that shows the images.
SampleReport = Callable[[int, Sequence[Path], Sequence[SamplePrompt]], None]


@dataclass(frozen=True)
class SampleSchedule:
    """The sampling options, typed."""

    at_first: bool = False
    every_n_steps: int | None = None
    every_n_epochs: int | None = None

    @property
    def active(self) -> bool:
        """True when anything would ever be drawn."""
        return bool(self.at_first or self.every_n_steps or self.every_n_epochs)


class SampleCallback(Callback):
    """Draws ``prompts`` (already resolved) on ``schedule`` into ``folder``; emits ``sample`` events."""

    def __init__(self, prompts: Sequence[SamplePrompt], schedule: SampleSchedule, folder: Path,
                 report: SampleReport | None = None) -> None:
        self.prompts = tuple(prompts)
        self.schedule = schedule
        self.folder = Path(folder)
        self.report = report
        self.last_step: int | None = None

    def on_train_start(self, session: Any, state: Any) -> None:
        """Step 0 samples: the base model (or the loaded weights) before any training."""
        if self.schedule.at_first:
            self.draw(session, state)

    def on_step_end(self, session: Any, state: Any, loss: float) -> None:
        """Samples every ``every_n_steps`` updates."""
        every = self.schedule.every_n_steps
        if every and state.step % every == 0 and not state.stop_requested:
            self.draw(session, state)

    def on_epoch_end(self, session: Any, state: Any) -> None:
        """Samples every ``every_n_epochs`` complete epochs."""
        every = self.schedule.every_n_epochs
        if every and state.epoch % every == 0 and not state.stop_requested:
            self.draw(session, state)

    def draw(self, session: Any, state: Any) -> list[Path]:
        """Draw every prompt now (once per step) and emit the ``sample`` event."""
        if self.last_step == state.step:
            return []
        self.last_step = state.step
        try:
            paths = generate_samples(session, self.prompts, state.step, self.folder)
        except (torch.cuda.OutOfMemoryError, OSError) as problem:
            # Previews are a convenience: running out of memory or disk for one must not end the training.
            session.events.emit("warning", message=f"Sample images at step {state.step} failed ({problem}); "
                                "training continues. Use smaller sample sizes or fewer steps.")
            return []
        session.events.emit("sample", step=state.step, epoch=state.epoch, paths=paths,
                            prompts=[prompt.prompt for prompt in self.prompts])
        if self.report is not None:
            self.report(state.step, paths, self.prompts)
        return paths
