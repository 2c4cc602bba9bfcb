"""The diffusion-training maths as small pure functions: timesteps, noise, targets, loss weighting.

Each has a test against a hand-computed value. Nothing here knows about models or files.
"""
from __future__ import annotations

import torch

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


def warmup_steps(value: float | int, total_steps: int) -> int:
    """lr_warmup_steps as a count: values below 1 are a fraction of all steps."""
    if value < 1:
        return int(round(value * total_steps))
    return int(value)
