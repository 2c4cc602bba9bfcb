"""The diffusion-training maths as small pure functions: timesteps, noise, targets, loss weighting.

Each has a test against a hand-computed value. Nothing here knows about models or files.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The noise schedule every Stable Diffusion 1/2/XL model was trained with.
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
}


def make_noise_scheduler(v_parameterization: bool, zero_terminal_snr: bool):
    """The DDPM scheduler used to add noise during training (diffusers' implementation)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        **SD_SCHEDULE,
        prediction_type="v_prediction" if v_parameterization else "epsilon",
        rescale_betas_zero_snr=zero_terminal_snr,
    )


def sample_timesteps(batch: int, min_timestep: int, max_timestep: int, generator: torch.Generator | None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform integer timesteps in [min_timestep, max_timestep)."""
    return torch.randint(min_timestep, max_timestep, (batch,), generator=generator, device="cpu").to(device)


def make_noise(latents: torch.Tensor, noise_offset: float | None, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise like ``latents``; with ``noise_offset`` a per-channel constant shift is added.

    The offset lets the model learn to move an image's overall brightness, which plain noise
    almost never asks of it (so plain-trained models struggle with very dark or bright images).
    """
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
    if noise_offset:
        shift = torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=generator, dtype=torch.float32)
        noise = noise + noise_offset * shift.to(latents.device, latents.dtype)
    return noise


def compute_snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep."""
    alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alpha_bar / (1.0 - alpha_bar)


def min_snr_weights(snr: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """Min-SNR-gamma loss weights: min(snr, gamma)/snr for epsilon, min(snr, gamma)/(snr + 1) for v."""
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1.0) if v_prediction else clipped / snr


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity (v-prediction)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each sample (mean over every axis but the first), in float32."""
    squared = (prediction.float() - target.float()) ** 2
    return squared.reshape(squared.shape[0], -1).mean(dim=1)


# SNR is infinite at timestep 0 of some schedules; sd-scripts caps it here for its loss weightings.
SNR_CAP = 1000.0
LOSS_TYPES = ("l2", "huber", "smooth_l1")
HUBER_SCHEDULES = ("snr", "exponential", "constant")


def huber_c_per_sample(schedule: str, huber_c: float, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
                       num_train_timesteps: int = 1000) -> torch.Tensor:
    """The Huber threshold of each sample, by ``huber_schedule`` (sd-scripts' definitions).

    * ``constant``: ``huber_c`` everywhere.
    * ``exponential``: ``exp(-a * t)`` with ``a = -ln(huber_c) / num_train_timesteps``, so 1 at
      t = 0 falling to ``huber_c`` at the last timestep.
    * ``snr``: ``(1 - huber_c) / (1 + sigma)**2 + huber_c`` with ``sigma = sqrt((1 - a_bar) / a_bar)``:
      about 1 where the image is barely noised, ``huber_c`` where it is mostly noise.
    """
    steps = timesteps.detach().to("cpu")
    if schedule == "constant":
        values = torch.full(steps.shape, float(huber_c))
    elif schedule == "exponential":
        rate = -math.log(huber_c) / num_train_timesteps
        values = torch.exp(-rate * steps.double()).float()
    elif schedule == "snr":
        alpha_bar = alphas_cumprod.detach().to("cpu")[steps].double()
        sigmas = ((1.0 - alpha_bar) / alpha_bar).sqrt()
        values = ((1.0 - huber_c) / (1.0 + sigmas) ** 2 + huber_c).float()
    else:
        raise ValueError(f"unknown huber_schedule {schedule!r}; expected one of {HUBER_SCHEDULES}")
    return values.to(timesteps.device)


def elementwise_loss(prediction: torch.Tensor, target: torch.Tensor, loss_type: str,
                     huber_c: torch.Tensor | None = None) -> torch.Tensor:
    """The loss at every element, in float32, before any averaging.

    ``l2``: ``(p - t)**2``. With ``c`` the per-sample threshold: ``huber``:
    ``2c (sqrt((p - t)**2 + c**2) - c)`` (pseudo-Huber, scaled to match l2 for small errors);
    ``smooth_l1``: ``2 (sqrt((p - t)**2 + c**2) - c)``.
    """
    difference = prediction.float() - target.float()
    if loss_type == "l2":
        return difference**2
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    if huber_c is None:
        raise ValueError(f"loss_type {loss_type} needs huber_c per sample")
    c = huber_c.float().reshape(-1, *([1] * (difference.dim() - 1)))
    smooth = torch.sqrt(difference**2 + c**2) - c
    return 2.0 * c * smooth if loss_type == "huber" else 2.0 * smooth


def masked(loss: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``loss`` [B, C, h, w] weighted by ``masks`` [B, H, W] in 0..1, area-resized to h x w.

    Not renormalised by the mask's area (sd-scripts does not either), so a half-masked image
    contributes half the loss and the learning rate means the same with and without masks.
    """
    weights = masks.to(loss.device, torch.float32).unsqueeze(1)
    if weights.shape[-2:] != loss.shape[-2:]:
        weights = F.interpolate(weights, size=loss.shape[-2:], mode="area")
    return loss * weights


def debiased_weights(snr: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """Debiased estimation loss weights: ``1 / sqrt(snr)`` (epsilon) or ``1 / (snr + 1)`` (v).

    SNR is capped at 1000 first; for epsilon it is also floored at 1e-8 so a zero-terminal-SNR
    timestep gives a large weight rather than infinity.
    """
    capped = torch.clamp(snr.float(), max=SNR_CAP)
    if v_prediction:
        return 1.0 / (capped + 1.0)
    return 1.0 / torch.sqrt(torch.clamp(capped, min=1e-8))


def v_pred_like_noise_pred_scale(snr: torch.Tensor) -> torch.Tensor:
    """``scale_v_pred_loss_like_noise_pred`` weights: ``snr / (snr + 1)``, SNR capped at 1000.

    A v-prediction loss times this equals the epsilon-prediction loss of the same error, so a
    v-pred model is trained with epsilon's emphasis on timesteps.
    """
    capped = torch.clamp(snr.float(), max=SNR_CAP)
    return capped / (capped + 1.0)


def warmup_steps(value: float | int, total_steps: int) -> int:
    """lr_warmup_steps as a count: values below 1 are a fraction of all steps."""
    if value < 1:
        return int(round(value * total_steps))
    return int(value)
