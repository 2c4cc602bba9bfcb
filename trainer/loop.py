"""The training loop: one optimizer update per step, events as it goes, saves on schedule.

The loop knows nothing about TOML or widgets; it gets a prepared :class:`Session`. A stop
request (SIGINT/SIGTERM, the notebook's Stop button) ends the run after the current step: the
LoRA is saved as a numbered step file, the training state beside it, and a ``stopped`` event
names both, so ``resume`` can continue exactly where the run stopped.

With several processes (``accelerate launch --num_processes N``) every process walks the same
global batches and trains on its own slice of each; gradients are averaged across processes
before each update, so N processes give the weights one process gets with the same global batch.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.checkpoints import (
    SaveRecord, end_state_folder, save_epoch_state, save_network, save_numbered, step_state_folder, write_state,
)
from trainer.data.epochs import epoch_batches
from trainer.errors import TrainerError
from trainer.loss import compute_loss
from trainer.optim import current_lrs
from trainer.optim_steps import apply_max_norm, optimizer_train_mode
from trainer.session import Session
from trainer.state import Counters, load_state, read_counters

NAN_HINT = ("Usual causes: a learning rate too high for this optimizer, fp16 with the SDXL VAE (use bf16 or the "
            "fp16-fix VAE, or no_half_vae), or full_fp16. The last good save is kept.")


@dataclass
class LoopState:
    """Counters the loop advances. ``stop_requested`` is set by the signal handler."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    stop_requested: bool = False
    record: SaveRecord = field(default_factory=SaveRecord)
    recent: deque = field(default_factory=lambda: deque(maxlen=50))

    @property
    def last_saved(self) -> Path | None:
        """The newest LoRA file this run wrote."""
        return self.record.last_saved


@dataclass
class RunResult:
    """How a run ended."""

    path: Path | None
    steps: int
    epochs: int
    seconds: float
    stopped: bool
    final_loss: float | None
    state_path: Path | None = None


def _nan_stop(state: LoopState, loss: float) -> None:
    last = f" The last good save is {state.last_saved}." if state.last_saved else " Nothing was saved yet."
    raise TrainerError(f"The loss became {loss} at step {state.step + 1}, so training stopped.{last}", hint=NAN_HINT)


def _share(batch: dict[str, Any], rank: int, world: int) -> tuple[int, int] | None:
    """This process's contiguous share of a global batch (equal sizes where possible)."""
    if world == 1:
        return None
    size = len(batch["captions"])
    return rank * size // world, (rank + 1) * size // world


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Mean of every process's gradients, one flat all-reduce (the network is not DDP-wrapped)."""
    if world == 1:
        return
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for param, grad in zip(params, grads):
        count = grad.numel()
        param.grad = flat[offset:offset + count].view_as(grad).clone()
        offset += count


def _step_event(session: Session, state: LoopState, loss: float, started: float, done_before: int,
                names: list[str]) -> None:
    plan = session.plan
    elapsed = time.perf_counter() - started
    rate = (state.step - done_before) / elapsed if elapsed > 0 else 0.0
    extra = {}
    if session.last_max_norm is not None:
        scaled, mean_norm, max_norm = session.last_max_norm
        extra = {"keys_scaled": scaled, "mean_norm": mean_norm, "max_norm": max_norm}
    session.events.emit(
        "step", step=state.step, total_steps=plan.total_steps, epoch=state.epoch, loss=loss,
        avg_loss=sum(state.recent) / len(state.recent), lr=dict(zip(names, current_lrs(session.optimizer))),
        it_per_s=round(rate, 4), eta_s=round((plan.total_steps - state.step) / rate, 1) if rate else None, **extra,
    )


def _update(session: Session, batch: dict[str, Any], generator: torch.Generator, params: list) -> float:
    """Forward, backward and (when the accumulation window closes) one optimizer update."""
    config, accelerator = session.config, session.accelerator
    share = _share(batch, accelerator.process_index, accelerator.num_processes)
    with accelerator.accumulate(session.network):
        loss = compute_loss(session, batch, generator, share)
        accelerator.backward(loss)
        if session.fused_backward is None:  # fused: Adafactor already stepped inside backward
            if accelerator.sync_gradients:
                _average_gradients(params, accelerator.num_processes)
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
            session.optimizer.step()
            session.optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            session.scheduler.step()  # counted in updates, whatever the number of processes
            if config.scale_weight_norms:
                session.last_max_norm = apply_max_norm(session.network, config.scale_weight_norms)
    return float(loss.detach())


def _run_epoch(session: Session, state: LoopState, generator: torch.Generator, seed: int, skip: int,
               started: float, done_before: int, bar: Any) -> list[float]:
    """Train one epoch from batch ``skip`` on (or until the end of the schedule or a stop)."""
    config, plan, accelerator = session.config, session.plan, session.accelerator
    params = [p for group in session.optimizer.param_groups for p in group["params"]]
    names = [group.get("name", str(i)) for i, group in enumerate(session.optimizer.param_groups)]
    batches = epoch_batches(session.scan.records, session.datasets, state.epoch, seed, session.latent_cache)
    losses: list[float] = []
    state.batches_in_epoch = skip
    for index in range(skip, len(batches)):
        value = _update(session, batches[index], generator, params)
        state.batches_in_epoch = index + 1
        if not math.isfinite(value):
            _nan_stop(state, value)
        if not accelerator.sync_gradients:
            continue
        state.step += 1
        state.recent.append(value)
        losses.append(value)
        _step_event(session, state, value, started, done_before, names)
        bar.update(1)
        bar.set_postfix(loss=f"{sum(state.recent) / len(state.recent):.4f}", epoch=state.epoch)
        for callback in session.callbacks:
            callback.on_step_end(session, state, value)
        if config.save_every_n_steps and state.step % config.save_every_n_steps == 0 and state.step < plan.total_steps:
            save_numbered(session, "step", state.step, state.step, state.epoch, state.record)
            if config.save_state:
                write_state(session, step_state_folder(session, state.step), generator, state.step, state.epoch,
                            state.batches_in_epoch)
        if state.step >= plan.total_steps or state.stop_requested:
            break
    return losses


def _resume(session: Session, state: LoopState, generator: torch.Generator) -> int:
    """Restore ``resume``'s state into this run; returns how many batches of the current epoch to skip."""
    from trainer.checkpoints import counters

    folder = Path(session.config.resume)
    saved: Counters = load_state(folder, session.network, session.optimizer, session.scheduler, generator,
                                 counters(session, 0, 0, 0))
    if saved.total_steps != session.plan.total_steps:
        session.events.emit("warning", message=(
            f"The resumed run planned {saved.total_steps} steps, this one plans {session.plan.total_steps}; "
            "the learning-rate schedule follows this run's plan."))
    state.step = saved.step
    mid_epoch = 0 < saved.batches_in_epoch < session.plan.batches_per_epoch
    state.epoch = saved.epoch - 1 if mid_epoch else saved.epoch
    session.events.emit("resumed", path=folder, step=saved.step, epoch=saved.epoch)
    return saved.batches_in_epoch if mid_epoch else 0


def _finish(session: Session, state: LoopState, generator: torch.Generator) -> tuple[Path, Path | None]:
    """The closing saves: a stopped run keeps a numbered LoRA and its state; a finished one the final file."""
    config = session.config
    if state.stop_requested and state.step < session.plan.total_steps:
        path = save_network(session, session.paths.step(state.step), state.step, state.epoch, state.record)
        folder = write_state(session, step_state_folder(session, state.step), generator, state.step, state.epoch,
                             state.batches_in_epoch)
        session.events.emit("stopped", path=path, state=folder, step=state.step, epoch=state.epoch)
        return path, folder
    path = save_network(session, session.paths.final, state.step, state.epoch, state.record)
    folder = None
    if config.save_state or config.save_state_on_train_end:
        folder = write_state(session, end_state_folder(session), generator, state.step, state.epoch,
                             state.batches_in_epoch)
    return path, folder


def train(session: Session, state: LoopState | None = None) -> RunResult:
    """Run the whole schedule (continuing a saved state when ``resume`` is set)."""
    from tqdm import tqdm

    config, plan = session.config, session.plan
    state = state or LoopState()
    seed = config.seed if config.seed is not None else 0
    generator = torch.Generator().manual_seed(seed + 1)
    skip = _resume(session, state, generator) if config.resume else 0
    done_before = state.step
    started = time.perf_counter()
    session.network.train()
    optimizer_train_mode(session.optimizer)  # schedule-free optimizers train on their own point
    session.model.unet.train(config.gradient_checkpointing)  # diffusers only checkpoints in train mode
    bar = tqdm(total=plan.total_steps, initial=state.step, desc="steps", dynamic_ncols=True,
               disable=not session.accelerator.is_main_process)
    final: Path | None = None
    folder: Path | None = None
    try:
        for callback in session.callbacks:
            callback.on_train_start(session, state)
        while state.step < plan.total_steps and not state.stop_requested:
            state.epoch += 1
            losses = _run_epoch(session, state, generator, seed, skip, started, done_before, bar)
            skip = 0
            complete = state.batches_in_epoch >= plan.batches_per_epoch
            session.events.emit("epoch", epoch=state.epoch, step=state.step, complete=complete,
                                avg_loss=sum(losses) / len(losses) if losses else None)
            if not complete:
                continue
            for callback in session.callbacks:
                callback.on_epoch_end(session, state)
            if config.save_every_n_epochs and state.epoch % config.save_every_n_epochs == 0 \
                    and state.step < plan.total_steps:
                save_numbered(session, "epoch", state.epoch, state.step, state.epoch, state.record)
                if config.save_state:
                    save_epoch_state(session, generator, state.step, state.epoch, state.batches_in_epoch,
                                     state.record)
        final, folder = _finish(session, state, generator)
    finally:
        bar.close()
        for callback in session.callbacks:
            callback.on_train_end(session, state, final)
    return RunResult(final, state.step, state.epoch, time.perf_counter() - started, state.stop_requested,
                     state.recent[-1] if state.recent else None, folder)


__all__ = ["LoopState", "RunResult", "read_counters", "train"]
