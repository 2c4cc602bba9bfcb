"""One batch's loss: latents, conditioning, noise, the UNet's prediction and the weighted error."""
from __future__ import annotations

from typing import Any

import torch

from trainer.maths import (
    compute_snr, make_noise, min_snr_weights, per_sample_mse, sample_timesteps, training_target,
)
from trainer.models.family import Conditioning
from trainer.session import Session, encode_pixels


def batch_conditioning(session: Session, captions: list[str]) -> Conditioning:
    """Text conditioning: from the cache, or encoded now (with grad when the text encoder trains)."""
    config, adapter = session.config, session.model.adapter
    if session.text_cache is not None:
        parts = [session.text_cache[caption] for caption in captions]
        pooled = torch.cat([p.pooled for p in parts]) if parts[0].pooled is not None else None
        return Conditioning(torch.cat([p.encoder_hidden_states for p in parts]), pooled)
    if session.train_text_encoder:
        return adapter.encode_prompts(captions, config.clip_skip, config.max_token_length)
    with torch.no_grad():
        return adapter.encode_prompts(captions, config.clip_skip, config.max_token_length)


def batch_latents(session: Session, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """The batch's latents in float32 on the training device (cached, or encoded by the VAE now)."""
    device = session.accelerator.device
    if "latents" in batch:
        return batch["latents"].to(device, torch.float32)
    return encode_pixels(session.model, batch["pixels"], generator).to(device)


def compute_loss(session: Session, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """Noise the latents, predict, compare; Min-SNR and regularisation weights applied."""
    config, model = session.config, session.model
    device = session.accelerator.device
    latents = batch_latents(session, batch, generator)
    conditioning = batch_conditioning(session, batch["captions"])
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
    if bool(batch["is_reg"].any()):
        losses = losses * torch.where(batch["is_reg"].to(device), config.prior_loss_weight, 1.0)
    return losses.mean()
