"""The noise a training step adds to the latents, with sd-scripts' optional variations.

Each variation is a small pure function of its inputs and a ``torch.Generator`` (so a seeded run
is reproducible), tested against hand-computed values. :func:`training_noise` chains them in
sd-scripts' order:

1. plain Gaussian noise like the latents;
2. ``noise_offset``: a per-channel constant shift (``noise_offset_random_strength`` draws its
   size uniformly from [0, noise_offset] per step; ``adaptive_noise_scale`` adds that many times
   each latent channel's absolute mean to it);
3. ``multires_noise_iterations``: pyramid noise, low-resolution noise layers upsampled and added
   with weights ``discount ** level``, then rescaled to unit standard deviation;
4. ``ip_noise_gamma``: input perturbation, extra noise added to the noise that goes INTO the
   noisy latents only; the training target keeps the unperturbed noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseSettings:
    """The noise options of one run, as the training config gives them."""

    noise_offset: float | None = None
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float | None = None
    multires_noise_iterations: int | None = None
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float | None = None
    ip_noise_gamma_random_strength: bool = False

    @classmethod
    def from_config(cls, config) -> "NoiseSettings":
        """Pick the noise options out of a TrainingConfig."""
        return cls(
            noise_offset=config.noise_offset,
            noise_offset_random_strength=bool(config.noise_offset_random_strength),
            adaptive_noise_scale=config.adaptive_noise_scale,
            multires_noise_iterations=config.multires_noise_iterations,
            multires_noise_discount=float(config.multires_noise_discount),
            ip_noise_gamma=config.ip_noise_gamma,
            ip_noise_gamma_random_strength=bool(config.ip_noise_gamma_random_strength),
        )


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    # Drawn on the CPU in float32 whatever the latents are: the same seed gives the same noise on
    # every device and precision.
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(like.device, like.dtype)


def random_strength(value: float, enabled: bool, generator: torch.Generator | None) -> float:
    """``value``, or (when ``enabled``) a uniform draw from [0, value)."""
    if not enabled:
        return float(value)
    return float(torch.rand(1, generator=generator)) * float(value)


def offset_noise(latents: torch.Tensor, noise: torch.Tensor, offset: float, adaptive_scale: float | None,
                 generator: torch.Generator | None) -> torch.Tensor:
    """``noise`` plus ``strength * N(0, 1)`` per (sample, channel), constant over the pixels.

    ``strength`` is ``offset``; with ``adaptive_scale`` it becomes
    ``offset + adaptive_scale * |mean of the latent channel|``, floored at 0 (a negative scale
    must not flip the shift's sign).
    """
    strength: torch.Tensor | float = offset
    if adaptive_scale is not None:
        channel_mean = latents.float().mean(dim=(2, 3), keepdim=True).abs()
        strength = torch.clamp(offset + adaptive_scale * channel_mean, min=0.0).to(noise.dtype)
    shift = _randn((latents.shape[0], latents.shape[1], 1, 1), generator, noise)
    return noise + strength * shift


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Multi-resolution ("pyramid") noise built on ``noise`` [B, C, H, W].

    Level ``i`` (0 to iterations-1) is Gaussian noise at ``size / r**i`` (``r`` drawn from
    [2, 4) per level, sides at least 1), upsampled bilinearly to H x W and added with weight
    ``discount ** i``; level 0 is therefore a second full-size noise. The sum is divided by its
    standard deviation. Levels stop after the first one that reaches 1 pixel on a side.
    """
    batch, channels, height, width = noise.shape
    total = noise.float().clone()
    for level in range(iterations):
        ratio = 2.0 + 2.0 * float(torch.rand(1, generator=generator))
        low_h = max(1, int(height / ratio**level))
        low_w = max(1, int(width / ratio**level))
        layer = torch.randn((batch, channels, low_h, low_w), generator=generator, dtype=torch.float32)
        if (low_h, low_w) != (height, width):
            layer = F.interpolate(layer, size=(height, width), mode="bilinear", align_corners=False)
        total = total + layer.to(total.device) * discount**level
        if low_h == 1 or low_w == 1:
            break
    return (total / total.std()).to(noise.dtype)


def perturb_noise(noise: torch.Tensor, gamma: float, generator: torch.Generator | None) -> torch.Tensor:
    """Input perturbation: ``noise + gamma * N(0, 1)`` (used for the noisy latents only)."""
    return noise + gamma * _randn(tuple(noise.shape), generator, noise)


def training_noise(latents: torch.Tensor, settings: NoiseSettings,
                   generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noise, input_noise)``: the target's noise, and the noise to add to the latents.

    They are the same tensor unless ``ip_noise_gamma`` is set. With no option set this draws
    exactly what :func:`trainer.maths.make_noise` draws, so default runs keep their results.
    """
    noise = _randn(tuple(latents.shape), generator, latents)
    if settings.noise_offset:
        offset = random_strength(settings.noise_offset, settings.noise_offset_random_strength, generator)
        noise = offset_noise(latents, noise, offset, settings.adaptive_noise_scale, generator)
    if settings.multires_noise_iterations:
        noise = pyramid_noise(noise, settings.multires_noise_iterations, settings.multires_noise_discount, generator)
    if not settings.ip_noise_gamma:
        return noise, noise
    gamma = random_strength(settings.ip_noise_gamma, settings.ip_noise_gamma_random_strength, generator)
    return noise, perturb_noise(noise, gamma, generator)
