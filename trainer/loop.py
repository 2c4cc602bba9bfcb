"""The training loop: one optimizer update per step, events as it goes, saves on schedule.

The loop knows nothing about TOML or widgets; it gets a prepared :class:`Session`. A stop
request (SIGINT/SIGTERM, the notebook's Stop button) ends the run after the current step with
the LoRA saved and a ``stopped`` event.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.data.epochs import epoch_batches
from trainer.errors import TrainerError
from trainer.loss import compute_loss
from trainer.optim import current_lrs
from trainer.saving.lora_file import prune_old_saves, save_lora_file
from trainer.saving.metadata import build_metadata
from trainer.session import Session
from trainer.run_metadata import metadata_input

NAN_HINT = ("Usual causes: a learning rate too high for this optimizer, fp16 with the SDXL VAE (use bf16 or the "
            "fp16-fix VAE, or no_half_vae), or full_fp16. The last good save is kept.")


@dataclass
class LoopState:
    """Counters the loop advances; also what a save records."""

    step: int = 0
    epoch: int = 0
    last_saved: Path | None = None
    stop_requested: bool = False


@dataclass
class RunResult:
    """How a run ended."""

    path: Path | None
    steps: int
    epochs: int
    seconds: float
    stopped: bool
    final_loss: float | None


def save_network(session: Session, path: Path, state: LoopState) -> Path:
    """Write the LoRA with its metadata; returns the path."""
    config = session.config
    tensors = session.network.kohya_state_dict()
    info = metadata_input(session, state.step, state.epoch, time.time())
    metadata = build_metadata(info, minimal=bool(config.no_metadata))
    save_lora_file(path, tensors, metadata, config.save_precision)
    session.events.emit("checkpoint", path=path, step=state.step, epoch=state.epoch)
    state.last_saved = path
    for callback in session.callbacks:
        callback.on_save(session, state, path)
    return path


def _nan_stop(session: Session, state: LoopState, loss: float) -> None:
    last = f" The last good save is {state.last_saved}." if state.last_saved else " Nothing was saved yet."
    raise TrainerError(f"The loss became {loss} at step {state.step + 1}, so training stopped.{last}", hint=NAN_HINT)


def _save_numbered(session: Session, state: LoopState, kind: str, number: int, saved: dict[int, Path],
                   keep_last: int | None) -> None:
    path = session.paths.epoch(number) if kind == "epoch" else session.paths.step(number)
    saved[number] = save_network(session, path, state)
    for gone in prune_old_saves(kind, keep_last, saved):  # type: ignore[arg-type]
        saved.pop(next(k for k, v in saved.items() if v == gone))


def _step_event(session: Session, state: LoopState, loss: float, recent: deque, started: float,
                names: list[str]) -> None:
    plan = session.plan
    elapsed = time.perf_counter() - started
    rate = state.step / elapsed if elapsed > 0 else 0.0
    session.events.emit(
        "step", step=state.step, total_steps=plan.total_steps, epoch=state.epoch, loss=loss,
        avg_loss=sum(recent) / len(recent), lr=dict(zip(names, current_lrs(session.optimizer))),
        it_per_s=round(rate, 4), eta_s=round((plan.total_steps - state.step) / rate, 1) if rate else None,
    )


def _run_epoch(session: Session, state: LoopState, generator: torch.Generator, seed: int, recent: deque,
               started: float, bar: Any, saved_steps: dict[int, Path]) -> list[float]:
    """Train one epoch (or until the schedule ends or a stop is requested); returns its losses."""
    config, plan, accelerator = session.config, session.plan, session.accelerator
    network, optimizer, scheduler = session.network, session.optimizer, session.scheduler
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names = [group.get("name", str(i)) for i, group in enumerate(optimizer.param_groups)]
    losses: list[float] = []
    for batch in epoch_batches(session.scan.records, session.datasets, state.epoch, seed, session.latent_cache):
        with accelerator.accumulate(network):
            loss = compute_loss(session, batch, generator)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            _nan_stop(session, state, value)
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        recent.append(value)
        losses.append(value)
        _step_event(session, state, value, recent, started, names)
        bar.update(1)
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", epoch=state.epoch)
        for callback in session.callbacks:
            callback.on_step_end(session, state, value)
        if config.save_every_n_steps and state.step % config.save_every_n_steps == 0 and state.step < plan.total_steps:
            _save_numbered(session, state, "step", state.step, saved_steps, config.save_last_n_steps)
        if state.step >= plan.total_steps or state.stop_requested:
            break
    return losses


def train(session: Session, state: LoopState | None = None) -> RunResult:
    """Run the whole schedule; returns the final file's path and counters."""
    from tqdm import tqdm

    config, plan = session.config, session.plan
    state = state or LoopState()
    seed = config.seed if config.seed is not None else 0
    generator = torch.Generator().manual_seed(seed + 1)
    recent: deque[float] = deque(maxlen=50)
    saved_epochs: dict[int, Path] = {}
    saved_steps: dict[int, Path] = {}
    started = time.perf_counter()
    session.network.train()
    session.model.unet.train(config.gradient_checkpointing)  # diffusers only checkpoints in train mode
    bar = tqdm(total=plan.total_steps, desc="steps", disable=not session.accelerator.is_main_process,
               dynamic_ncols=True)
    final: Path | None = None
    try:
        for callback in session.callbacks:
            callback.on_train_start(session, state)
        while state.step < plan.total_steps and not state.stop_requested:
            state.epoch += 1
            losses = _run_epoch(session, state, generator, seed, recent, started, bar, saved_steps)
            complete = not state.stop_requested or state.step >= plan.total_steps
            session.events.emit("epoch", epoch=state.epoch, step=state.step, complete=complete,
                                avg_loss=sum(losses) / len(losses) if losses else None)
            if complete:
                for callback in session.callbacks:
                    callback.on_epoch_end(session, state)
            if complete and config.save_every_n_epochs and state.epoch % config.save_every_n_epochs == 0 \
                    and state.step < plan.total_steps:
                _save_numbered(session, state, "epoch", state.epoch, saved_epochs, config.save_last_n_epochs)
        final = save_network(session, session.paths.final, state)
        if state.stop_requested:
            session.events.emit("stopped", path=final, step=state.step, epoch=state.epoch)
    finally:
        bar.close()
        for callback in session.callbacks:
            callback.on_train_end(session, state, final)
    return RunResult(final, state.step, state.epoch, time.perf_counter() - started, state.stop_requested,
                     recent[-1] if recent else None)
