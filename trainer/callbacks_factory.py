"""The callbacks a run's options ask for: validation, preview samples and tracker logging.

``prepare_session`` calls :func:`build_callbacks` last, when the model, the optimizer and the
events file exist. Order matters only at the end of a run: the tracker comes last, so it is
still open when the final validation score and samples are reported to it.
Only the main process validates, draws and logs; other processes get no callbacks.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainer.callbacks import Callback
from trainer.data.scan import ImageRecord
from trainer.sampling.callback import SampleCallback, SampleSchedule
from trainer.sampling.generate import SAMPLE_FOLDER
from trainer.sampling.prompts import load_prompts
from trainer.tracking import TrackingCallback, build_trackers
from trainer.validation import ValidationCallback


def sample_schedule(config: Any) -> SampleSchedule:
    """The sampling options as a :class:`SampleSchedule`."""
    return SampleSchedule(bool(config.sample_at_first), config.sample_every_n_steps, config.sample_every_n_epochs)


def default_sample_size(session: Any) -> tuple[int, int]:
    """The first dataset's training resolution (w, h), rounded down to a multiple of 8."""
    width, height = session.datasets[0].resolution
    return max(8, width - width % 8), max(8, height - height % 8)


def validation_seed(config: Any) -> int:
    """``validation_seed``, else ``seed``, else 0."""
    if config.validation_seed is not None:
        return int(config.validation_seed)
    return int(config.seed) if config.seed is not None else 0


def build_callbacks(config: Any, session: Any, held_out: Sequence[ImageRecord] = ()) -> list[Callback]:
    """Create the callbacks ``config`` asks for; ``held_out`` are the validation images (see validation.py)."""
    if not session.accelerator.is_main_process:
        return []
    settings = {name: config[name] for name in sorted(config.explicit)}
    trackers = build_trackers(config, session.paths.output_dir, session.paths.output_name, settings)
    tracking = TrackingCallback(trackers) if trackers else None
    callbacks: list[Callback] = []

    if config.validation_split and not held_out:
        session.events.emit("warning", message=(
            f"validation_split {config.validation_split:g} holds out no image: a folder of n images gives "
            f"floor(n x {config.validation_split:g}) to validation and keeps at least one. No validation loss "
            "is computed."))
    if held_out:
        every_steps, every_epochs = config.validate_every_n_steps, config.validate_every_n_epochs
        if not every_steps and not every_epochs:
            every_epochs = 1  # a split without a schedule still gets a curve: one point per epoch
        callbacks.append(ValidationCallback(
            held_out, validation_seed(config), int(config.train_batch_size), every_steps, every_epochs,
            report=tracking.log_validation if tracking else None,
        ))

    schedule = sample_schedule(config)
    if config.sample_prompts and schedule.active:
        prompt_file = load_prompts(config.sample_prompts)
        for warning in prompt_file.warnings:
            session.events.emit("warning", message=warning)
        base_seed = int(config.seed) if config.seed is not None else 0
        size = default_sample_size(session)
        prompts = [prompt.resolved(size, base_seed, config.sample_sampler) for prompt in prompt_file.prompts]
        callbacks.append(SampleCallback(prompts, schedule, session.paths.output_dir / SAMPLE_FOLDER,
                                        report=tracking.log_samples if tracking else None))

    if tracking is not None:
        callbacks.append(tracking)
    return callbacks
