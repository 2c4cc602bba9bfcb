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
from trainer.maths import (
    compute_snr, make_noise, min_snr_weights, per_sample_mse, sample_timesteps, training_target,
)
from trainer.models.family import Conditioning
from trainer.optim import current_lrs
from trainer.saving.lora_file import prune_old_saves, save_lora_file
from trainer.saving.metadata import build_metadata
from trainer.session import Session, encode_pixels
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


def _conditioning(session: Session, captions: list[str]) -> Conditioning:
    config, adapter = session.config, session.model.adapter
    if session.text_cache is not None:
        parts = [session.text_cache[caption] for caption in captions]
        pooled = torch.cat([p.pooled for p in parts]) if parts[0].pooled is not None else None
        return Conditioning(torch.cat([p.encoder_hidden_states for p in parts]), pooled)
    if session.train_text_encoder:
        return adapter.encode_prompts(captions, config.clip_skip, config.max_token_length)
    with torch.no_grad():
        return adapter.encode_prompts(captions, config.clip_skip, config.max_token_length)


def _loss(session: Session, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """One batch's loss: noise the latents, predict, compare (with Min-SNR weighting if set)."""
    config, model = session.config, session.model
    device = session.accelerator.device
    if "latents" in batch:
        latents = batch["latents"].to(device, torch.float32)
    else:
        latents = encode_pixels(model, batch["pixels"], generator)
    latents = latents.to(device)
    conditioning = _conditioning(session, batch["captions"])
    noise = make_noise(latents, config.noise_offset, generator)
    timesteps = sample_timesteps(latents.shape[0], config.min_timestep, config.max_timestep, generator, device)
    scheduler = model.noise_scheduler
    noisy = scheduler.add_noise(latents, noise, timesteps)
    added = model.adapter.unet_added_conditioning(
        batch["original_sizes"].tolist(), batch["crop_top_lefts"].tolist(), batch["target_sizes"].tolist(),
        conditioning.pooled, session.weight_dtype, device,
    )
    with session.accelerator.autocast():
        prediction = model.unet(
            noisy.to(session.weight_dtype), timesteps, conditioning.encoder_hidden_states.to(session.weight_dtype),
            added_cond_kwargs=added,
        ).sample
    target = training_target(scheduler, latents, noise, timesteps)
    losses = per_sample_mse(prediction, target)
    if config.min_snr_gamma:
        snr = compute_snr(scheduler.alphas_cumprod, timesteps)
        losses = losses * min_snr_weights(snr, config.min_snr_gamma, model.v_parameterization)
    return losses.mean()


def save_network(session: Session, path: Path, state: LoopState) -> Path:
    """Write the LoRA with its metadata; returns the path."""
    config = session.config
    tensors = session.network.kohya_state_dict()
    info = metadata_input(session, state.step, state.epoch, time.time())
    metadata = build_metadata(info, minimal=bool(config.no_metadata))
    save_lora_file(path, tensors, metadata, config.save_precision)
    session.events.emit("checkpoint", path=path, step=state.step, epoch=state.epoch)
    state.last_saved = path
    return path


def _nan_stop(session: Session, state: LoopState, loss: float) -> None:
    last = f" The last good save is {state.last_saved}." if state.last_saved else " Nothing was saved yet."
    raise TrainerError(f"The loss became {loss} at step {state.step + 1}, so training stopped.{last}", hint=NAN_HINT)


def train(session: Session, state: LoopState | None = None) -> RunResult:
    """Run the whole schedule; returns the final file's path and counters."""
    from tqdm import tqdm

    config, plan, events = session.config, session.plan, session.events
    state = state or LoopState()
    network, optimizer, scheduler = session.network, session.optimizer, session.scheduler
    accelerator = session.accelerator
    seed = config.seed if config.seed is not None else 0
    generator = torch.Generator().manual_seed(seed + 1)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names = [group.get("name", str(i)) for i, group in enumerate(optimizer.param_groups)]
    recent: deque[float] = deque(maxlen=50)
    saved_epochs: dict[int, Path] = {}
    saved_steps: dict[int, Path] = {}
    started = time.perf_counter()
    loss_value: float | None = None
    network.train()
    session.model.unet.train(config.gradient_checkpointing)  # diffusers only checkpoints in train mode
    bar = tqdm(total=plan.total_steps, desc="steps", disable=not accelerator.is_main_process, dynamic_ncols=True)
    while state.step < plan.total_steps and not state.stop_requested:
        state.epoch += 1
        epoch_losses: list[float] = []
        batches = epoch_batches(session.scan.records, session.datasets, state.epoch, seed, session.latent_cache)
        for batch in batches:
            with accelerator.accumulate(network):
                loss = _loss(session, batch, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                _nan_stop(session, state, loss_value)
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            recent.append(loss_value)
            epoch_losses.append(loss_value)
            elapsed = time.perf_counter() - started
            rate = state.step / elapsed if elapsed > 0 else 0.0
            lrs = dict(zip(names, current_lrs(optimizer)))
            events.emit("step", step=state.step, total_steps=plan.total_steps, epoch=state.epoch, loss=loss_value,
                        avg_loss=sum(recent) / len(recent), lr=lrs, it_per_s=round(rate, 4),
                        eta_s=round((plan.total_steps - state.step) / rate, 1) if rate else None)
            bar.update(1)
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", epoch=state.epoch)
            if config.save_every_n_steps and state.step % config.save_every_n_steps == 0 \
                    and state.step < plan.total_steps:
                saved_steps[state.step] = save_network(session, session.paths.step(state.step), state)
                for gone in prune_old_saves("step", config.save_last_n_steps, saved_steps):
                    saved_steps = {k: v for k, v in saved_steps.items() if v != gone}
            if state.step >= plan.total_steps or state.stop_requested:
                break
        epoch_done = state.step >= plan.total_steps or not state.stop_requested
        events.emit("epoch", epoch=state.epoch, step=state.step,
                    avg_loss=sum(epoch_losses) / len(epoch_losses) if epoch_losses else None,
                    complete=epoch_done)
        if epoch_done and config.save_every_n_epochs and state.epoch % config.save_every_n_epochs == 0 \
                and state.step < plan.total_steps:
            saved_epochs[state.epoch] = save_network(session, session.paths.epoch(state.epoch), state)
            for gone in prune_old_saves("epoch", config.save_last_n_epochs, saved_epochs):
                saved_epochs = {k: v for k, v in saved_epochs.items() if v != gone}
    bar.close()
    final = save_network(session, session.paths.final, state)
    seconds = time.perf_counter() - started
    if state.stop_requested:
        events.emit("stopped", path=final, step=state.step, epoch=state.epoch)
    return RunResult(final, state.step, state.epoch, seconds, state.stop_requested, loss_value)
