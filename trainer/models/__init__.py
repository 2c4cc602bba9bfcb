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

from trainer.models.bundled import BundledConfigs
from trainer.models.detect import Architecture, detect_architecture, detect_diffusers, read_keys_and_shapes
from trainer.models.family import Conditioning, FamilyAdapter, text_encoder_lora_path
from trainer.models.loader import LoadedModel, ModelSpec, detect_source, load_model, make_adapter, resolve_source

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
