"""Model loading and the model-family adapters.

- :mod:`trainer.models.detect`: SD1 / SD2 / SDXL from keys and shapes or diffusers configs.
- :mod:`trainer.models.loader`: :class:`ModelSpec` -> :func:`load_model` -> :class:`LoadedModel`.
- :mod:`trainer.models.bundled`: the real architectures' configs shipped in ``configs/``.
- :mod:`trainer.models.vae`: the ``vae`` option.
- :mod:`trainer.models.family` (protocol, shared CLIP helpers), :mod:`~trainer.models.family_sd`,
  :mod:`~trainer.models.family_sdxl`: one adapter per family.

diffusers and transformers are imported inside functions, so importing
this package costs little more than torch.
"""
from __future__ import annotations

# Names resolve on first use (PEP 562), so ``import trainer.models.detect`` alone, as the notebook
# panels do to read a model's type from its header, does not pay for torch.
_WHERE = {
    "BundledConfigs": "bundled",
    "Architecture": "detect", "detect_architecture": "detect", "detect_diffusers": "detect",
    "read_keys_and_shapes": "detect",
    "Conditioning": "family", "FamilyAdapter": "family", "text_encoder_lora_path": "family",
    "LoadedModel": "loader", "ModelSpec": "loader", "detect_source": "loader", "load_model": "loader",
    "make_adapter": "loader", "resolve_source": "loader",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'trainer.models' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"trainer.models.{_WHERE[name]}"), name)


__all__ = [
    "Architecture",
    "BundledConfigs",
    "Conditioning",
    "FamilyAdapter",
    "LoadedModel",
    "ModelSpec",
    "detect_architecture",
    "detect_diffusers",
    "detect_source",
    "load_model",
    "make_adapter",
    "read_keys_and_shapes",
    "resolve_source",
    "text_encoder_lora_path",
]
