"""What the loop writes to disk: LoRA files (final and numbered) and saved training states.

Only the main process writes. Numbered files and state folders of THIS run are pruned as the
``save_last_n_*`` options ask; nothing an earlier run wrote is ever removed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.optim_steps import weights_for_use
from trainer.run_metadata import metadata_input
from trainer.saving.lora_file import prune_old_saves, save_lora_file
from trainer.saving.metadata import build_metadata
from trainer.state import Counters, prune_states, save_state, state_folder


@dataclass
class SaveRecord:
    """What this run has written so far, for pruning and for the NaN message."""

    epochs: dict[int, Path] = field(default_factory=dict)
    steps: dict[int, Path] = field(default_factory=dict)
    epoch_states: dict[int, Path] = field(default_factory=dict)
    last_saved: Path | None = None


def save_network(session, path: Path, step: int, epoch: int, record: SaveRecord) -> Path:
    """Write the LoRA with its metadata (main process only); returns the path."""
    if session.accelerator.is_main_process:
        config = session.config
        info = metadata_input(session, step, epoch, time.time())
        metadata = build_metadata(info, minimal=bool(config.no_metadata))
        with weights_for_use(session.optimizer):  # schedule-free: save the averaged weights
            tensors = session.network.kohya_state_dict()
        save_lora_file(path, tensors, metadata, config.save_precision)
        session.events.emit("checkpoint", path=path, step=step, epoch=epoch)
        for callback in session.callbacks:
            callback.on_save(session, None, path)
    record.last_saved = path
    session.accelerator.wait_for_everyone()
    return path


def save_numbered(session, kind: str, number: int, step: int, epoch: int, record: SaveRecord) -> None:
    """An epoch or step save, then pruning of this run's older ones."""
    config = session.config
    saved = record.epochs if kind == "epoch" else record.steps
    path = session.paths.epoch(number) if kind == "epoch" else session.paths.step(number)
    saved[number] = save_network(session, path, step, epoch, record)
    keep = config.save_last_n_epochs if kind == "epoch" else config.save_last_n_steps
    if session.accelerator.is_main_process:
        for gone in prune_old_saves(kind, keep, saved):  # type: ignore[arg-type]
            saved.pop(next(k for k, v in saved.items() if v == gone))


def counters(session, step: int, epoch: int, batches_in_epoch: int) -> Counters:
    """The counters a state folder records for this run."""
    config = session.config
    return Counters(step=step, epoch=epoch, batches_in_epoch=batches_in_epoch, total_steps=session.plan.total_steps,
                    seed=config.seed if config.seed is not None else 0, network_module=config.network_module,
                    network_dim=config.network_dim)


def write_state(session, folder: Path, generator: torch.Generator, step: int, epoch: int,
                batches_in_epoch: int) -> Path:
    """Save the full training state to ``folder`` (main process) and report it."""
    if session.accelerator.is_main_process:
        save_state(folder, session.network, session.optimizer, session.scheduler, generator,
                   counters(session, step, epoch, batches_in_epoch))
        session.events.emit("state", path=folder, step=step, epoch=epoch)
    session.accelerator.wait_for_everyone()
    return folder


def save_epoch_state(session, generator: torch.Generator, step: int, epoch: int, batches: int,
                     record: SaveRecord) -> None:
    """An epoch's state folder, pruned to ``save_last_n_epochs_state``."""
    paths = session.paths
    folder = write_state(session, state_folder(paths.output_dir, paths.output_name, epoch=epoch), generator,
                         step, epoch, batches)
    record.epoch_states[epoch] = folder
    if session.accelerator.is_main_process:
        prune_states(record.epoch_states, session.config.save_last_n_epochs_state)


def step_state_folder(session, step: int) -> Path:
    """Where a state saved at ``step`` goes."""
    return state_folder(session.paths.output_dir, session.paths.output_name, step=step)


def end_state_folder(session) -> Path:
    """Where the state saved at the end of training goes."""
    return state_folder(session.paths.output_dir, session.paths.output_name)
