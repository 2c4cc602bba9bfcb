"""Trainable adapter networks (LoRA / LoCon) and the layers they wrap."""
from __future__ import annotations

from trainer.networks.lora import LoadReport, LoRAModule, LoRANetwork
from trainer.networks.targets import (
    Target,
    identity_key,
    text_encoder_targets,
    unet_target_stems,
    unet_targets,
)

__all__ = [
    "LoadReport",
    "LoRAModule",
    "LoRANetwork",
    "Target",
    "identity_key",
    "text_encoder_targets",
    "unet_target_stems",
    "unet_targets",
]
