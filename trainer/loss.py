"""One batch's loss: latents, conditioning, noise, the UNet's prediction and the weighted error."""
from __future__ import annotations

from typing import Any

import torch

from trainer.maths import (
    compute_snr, debiased_weights, elementwise_loss, huber_c_per_sample, masked, min_snr_weights, sample_timesteps,
    training_target, v_pred_like_noise_pred_scale,
)
from trainer.noise import NoiseSettings, training_noise
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


def _share(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {key: value[start:stop] if value is not None else None for key, value in batch.items()}


def compute_loss(session: Session, batch: dict[str, Any], generator: torch.Generator,
                 share: tuple[int, int] | None = None) -> torch.Tensor:
    """Noise the latents, predict, compare; loss type, mask and timestep weightings applied.

    The order follows sd-scripts: element-wise loss (l2, huber or smooth_l1), the alpha mask,
    the mean per sample, the regularisation-image weight, then the SNR-based weightings
    (Min-SNR, v-pred-like-epsilon scaling, debiased estimation), then the batch mean.

    ``share`` = (start, stop) trains only those samples of a global batch (one process of
    several): noise and timesteps are still drawn for the whole batch, so every sample gets the
    same noise as in a single-process run.
    """
    config, model = session.config, session.model
    device = session.accelerator.device
    latents = batch_latents(session, batch, generator)
    conditioning = batch_conditioning(session, batch["captions"])
    noise, input_noise = training_noise(latents, NoiseSettings.from_config(config), generator)
    timesteps = sample_timesteps(latents.shape[0], config.min_timestep, config.max_timestep, generator, device)
    if share is not None:
        start, stop = share
        latents, noise, input_noise, timesteps = (t[start:stop] for t in (latents, noise, input_noise, timesteps))
        pooled = conditioning.pooled[start:stop] if conditioning.pooled is not None else None
        conditioning = Conditioning(conditioning.encoder_hidden_states[start:stop], pooled)
        batch = _share(batch, start, stop)
    scheduler = model.noise_scheduler
    noisy = scheduler.add_noise(latents, input_noise, timesteps)  # ip_noise_gamma perturbs the input only
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
    huber_c = None
    if config.loss_type != "l2":
        huber_c = huber_c_per_sample(config.huber_schedule, config.huber_c, timesteps, scheduler.alphas_cumprod,
                                     scheduler.config.num_train_timesteps)
    elements = elementwise_loss(prediction, target, config.loss_type, huber_c)
    if batch.get("masks") is not None:
        elements = masked(elements, batch["masks"])
    losses = elements.reshape(elements.shape[0], -1).mean(dim=1)
    if bool(batch["is_reg"].any()):
        losses = losses * torch.where(batch["is_reg"].to(device), config.prior_loss_weight, 1.0)
    return losses_weighted_by_snr(session, losses, timesteps).mean()


def losses_weighted_by_snr(session: Session, losses: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Per-sample losses times the SNR-based weights the options ask for (none by default)."""
    config, model = session.config, session.model
    wanted = config.min_snr_gamma or config.scale_v_pred_loss_like_noise_pred or config.debiased_estimation_loss
    if not wanted:
        return losses
    snr = compute_snr(model.noise_scheduler.alphas_cumprod, timesteps)
    if config.min_snr_gamma:
        losses = losses * min_snr_weights(snr, config.min_snr_gamma, model.v_parameterization)
    if config.scale_v_pred_loss_like_noise_pred:
        losses = losses * v_pred_like_noise_pred_scale(snr)
    if config.debiased_estimation_loss:
        losses = losses * debiased_weights(snr, model.v_parameterization)
    return losses
