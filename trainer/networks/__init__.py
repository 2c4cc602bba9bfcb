"""Trainable adapter networks (LoRA / LoCon) and the layers they wrap."""
from __future__ import annotations

# Names resolve on first use (PEP 562): the cross-option rules import ``trainer.networks.targets``
# helpers only when they run, and the notebook must not pay for torch when it merely opens.
_WHERE = {
    "LoadReport": "lora", "LoRAModule": "lora", "LoRANetwork": "lora",
    "Target": "targets", "identity_key": "targets", "text_encoder_targets": "targets",
    "unet_target_stems": "targets", "unet_targets": "targets",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'trainer.networks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"trainer.networks.{_WHERE[name]}"), name)


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
