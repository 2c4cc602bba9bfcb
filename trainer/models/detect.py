"""Tell SD1, SD2 and SDXL apart from a checkpoint's key names and shapes, or from a diffusers folder's configs.

Nothing here loads a tensor's data: single files are read through ``safe_open`` (header only) or
``torch.load`` onto the meta device, and diffusers sources through their small JSON configs.

What the weights say, and what they do not:

- SDXL: ``conditioner.embedders.1.model.*`` (the OpenCLIP ViT-bigG encoder) is present.
- SD2: ``cond_stage_model.model.*`` (OpenCLIP ViT-H, context width 1024).
- SD1: ``cond_stage_model.transformer.*`` (OpenAI CLIP ViT-L, context width 768).
- Whether a model predicts epsilon or velocity (SD2 512 vs 768-v, NoobAI v-pred) is *not* in the
  weights. The ``v_parameterization`` option decides it; a diffusers folder's scheduler config
  may say ``v_prediction``, which is reported in :attr:`Architecture.prediction_type` so the
  loader can warn about a mismatch.
"""
from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError

Shape = tuple[int, ...]
FAMILIES = ("sd1", "sd2", "sdxl")

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TE_PREFIX = "cond_stage_model.transformer."
SD2_TE_PREFIX = "cond_stage_model.model."
SDXL_TE1_PREFIX = "conditioner.embedders.0."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."

# Key fragments only network files (LoRA, LyCORIS, DoRA...) carry.
_NETWORK_MARKERS = re.compile(
    r"^(lora_unet_|lora_te\d?_|lycoris_)|\.(lora_down|lora_up|lora_A|lora_B|hada_w1_a|lokr_w1|oft_blocks|dora_scale)\b"
)
_CROSS_ATTENTION_KEY = re.compile(r"^model\.diffusion_model\..*\.attn2\.to_k\.weight$")


@dataclass(frozen=True)
class Architecture:
    """What a base model is, and why we think so (the ``evidence`` goes into the start event).

    ``context_dim`` is the UNet's cross-attention width when known (768 SD1, 1024 SD2, 2048 SDXL
    for the real models). ``prediction_type`` is only known for diffusers sources that ship a
    scheduler config; single files never say it.
    """

    family: str
    evidence: str
    source_kind: str  # "single_file", "diffusers_folder" or "hub_repo"
    context_dim: int | None = None
    has_vae: bool = True
    prediction_type: str | None = None

    @property
    def is_sdxl(self) -> bool:
        """True for the two-encoder SDXL family."""
        return self.family == "sdxl"


def _not_a_checkpoint(source: str, why: str, hint: str) -> TrainerError:
    return TrainerError(
        f"{source} is not a Stable Diffusion checkpoint: {why}", hint=hint, option="pretrained_model_name_or_path"
    )


def read_keys_and_shapes(path: Path) -> dict[str, Shape]:
    """Every tensor name in a ``.safetensors`` or ``.ckpt``/``.pt``/``.bin`` file with its shape.

    Tensor data is not read: safetensors through its header, pickles onto the meta device.
    A nested ``state_dict`` (as old ``.ckpt`` files have) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainerError(f"Model file not found: {path}", hint="Check the path and the file name.",
                           option="pretrained_model_name_or_path")
    if path.suffix.lower() == ".safetensors":
        return _safetensors_shapes(path)
    return _pickle_shapes(path)


def _safetensors_shapes(path: Path) -> dict[str, Shape]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as problem:  # safetensors raises its own error types, and OSError for short files
        raise TrainerError(
            f"{path} is not a readable .safetensors file ({problem}).",
            hint="The file is corrupt or was not fully downloaded: download it again.",
        ) from problem


def _pickle_shapes(path: Path) -> dict[str, Shape]:
    import torch

    try:
        # weights_only keeps a hostile pickle from running code; the meta device skips the data.
        data = torch.load(str(path), map_location="meta", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as problem:
        raise TrainerError(
            f"{path} could not be read as a PyTorch checkpoint ({type(problem).__name__}: {problem}).",
            hint="The file may be corrupt or incomplete, or hold more than plain tensors; use a .safetensors version.",
        ) from problem
    while isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise _not_a_checkpoint(str(path), "it holds no state dict", "Pick the model's .safetensors or .ckpt file.")
    return {str(key): tuple(value.shape) for key, value in data.items() if hasattr(value, "shape")}


def _first_with(keys: Mapping[str, Shape], prefix: str) -> str | None:
    return next((key for key in keys if key.startswith(prefix)), None)


def detect_architecture(keys_and_shapes: Mapping[str, Shape], source: str = "the checkpoint") -> Architecture:
    """Decide the family of an original-layout (single-file) state dict from its keys and shapes.

    Raises :class:`TrainerError` naming ``source`` for network files (LoRA and friends), lone VAEs,
    diffusers-layout component files, refiners, inpainting models and anything else that is not
    an SD1/SD2/SDXL base model.
    """
    keys = keys_and_shapes
    if not keys:
        raise _not_a_checkpoint(source, "it holds no tensors", "Pick the model's .safetensors or .ckpt file.")
    network_key = next((key for key in keys if _NETWORK_MARKERS.search(key)), None)
    if network_key is not None:
        raise _not_a_checkpoint(
            source, f"it is a LoRA/LyCORIS network file (key {network_key!r})",
            "A LoRA cannot be a base model. Set pretrained_model_name_or_path to the full model it was trained "
            "on, and network_weights to this file to continue training it.",
        )
    if _first_with(keys, UNET_PREFIX) is None:
        raise _not_a_checkpoint(source, _describe_non_unet(keys), "Pick a full SD1.5, SD2 or SDXL model file.")

    conv_in = keys.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] != 4:
        raise TrainerError(
            f"{source} is a UNet with {conv_in[1]} input channels (an inpainting or other special model).",
            hint="LoRA training needs the normal (4-channel) base model of that family.",
            option="pretrained_model_name_or_path",
        )
    context_dim = _cross_attention_width(keys)
    width = f"UNet cross-attention width {context_dim}" if context_dim else "no cross-attention found"
    has_vae = _first_with(keys, VAE_PREFIX) is not None

    if _first_with(keys, SDXL_TE2_PREFIX) is not None:
        family, why = "sdxl", "conditioner.embedders.1.model.* (OpenCLIP ViT-bigG text encoder) present"
    elif _first_with(keys, "conditioner.embedders.0.model.") is not None:
        raise TrainerError(
            f"{source} looks like the SDXL refiner (one OpenCLIP encoder under conditioner.embedders.0).",
            hint="Train on the SDXL base model (or a fine-tune of it), not the refiner.",
            option="pretrained_model_name_or_path",
        )
    elif _first_with(keys, SD2_TE_PREFIX) is not None:
        family, why = "sd2", "cond_stage_model.model.* (OpenCLIP ViT-H text encoder) present"
    elif _first_with(keys, SD1_TE_PREFIX) is not None:
        family, why = "sd1", "cond_stage_model.transformer.* (OpenAI CLIP ViT-L text encoder) present"
    else:
        raise TrainerError(
            f"{source} has a UNet but no text encoder this trainer knows (unknown architecture).",
            hint="Supported: SD1.x, SD2.x and SDXL single files (with their text encoders), or a diffusers folder.",
            option="pretrained_model_name_or_path",
        )
    # Say it in the evidence too: the start event should show that v-pred was the user's call.
    evidence = f"single file: {why}; {width}; prediction type is not in the weights (v_parameterization decides)"
    return Architecture(family, evidence, "single_file", context_dim, has_vae)


def _cross_attention_width(keys: Mapping[str, Shape]) -> int | None:
    for key, shape in keys.items():
        if _CROSS_ATTENTION_KEY.match(key) and len(shape) == 2:
            return int(shape[1])
    return None


def _describe_non_unet(keys: Mapping[str, Shape]) -> str:
    """Say what a file without ``model.diffusion_model.*`` seems to be, for the error message."""
    if any(key.startswith(("encoder.down.", "decoder.up.", VAE_PREFIX)) for key in keys):
        return "it looks like a VAE on its own (set it as the vae option instead)"
    if any(".down_blocks." in key or key.startswith(("down_blocks.", "encoder.down_blocks.")) for key in keys):
        return "it is in the diffusers layout (one component file); use the whole diffusers folder instead"
    example = next(iter(keys))
    return f"it has no UNet weights (model.diffusion_model.*), e.g. key {example!r}"


# ---------------------------------------------------------------- diffusers folders and Hub repos

JsonReader = Callable[[str], "dict[str, Any] | None"]


def folder_json_reader(folder: Path) -> JsonReader:
    """Read ``relative/path.json`` under a local folder; None when the file is absent."""

    def read(relative: str) -> dict[str, Any] | None:
        path = Path(folder) / relative
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as problem:
            raise TrainerError(f"{path} is not valid JSON ({problem}).", hint="Re-download the model folder.") from problem

    return read


def detect_diffusers(read_json: JsonReader, source: str, source_kind: str = "diffusers_folder") -> Architecture:
    """Decide the family of a diffusers pipeline from ``model_index.json`` and the component configs."""
    index = read_json("model_index.json")
    if index is None:
        raise _not_a_checkpoint(
            source, "it has no model_index.json",
            "Point to the top folder of a diffusers model (the one holding model_index.json, unet/, vae/...), "
            "or to a single .safetensors/.ckpt file.",
        )
    class_name = str(index.get("_class_name", ""))
    unet = read_json("unet/config.json") or {}
    scheduler = read_json("scheduler/scheduler_config.json") or {}
    context_dim = unet.get("cross_attention_dim")
    context_dim = int(context_dim) if isinstance(context_dim, int) else None
    prediction = scheduler.get("prediction_type")
    base = f"{source_kind.replace('_', ' ')}: {class_name}"
    if class_name == "StableDiffusionXLPipeline" or (class_name.startswith("StableDiffusion") and "text_encoder_2" in index):
        family, why = "sdxl", f"{base} with text_encoder_2"
    elif class_name == "StableDiffusionPipeline":
        family, why = _sd1_or_sd2(context_dim, read_json("text_encoder/config.json") or {}, base)
    else:
        raise TrainerError(
            f"{source} is a {class_name or 'unknown'} pipeline, which this trainer cannot train (unknown architecture).",
            hint="Supported: StableDiffusionPipeline (SD1/SD2) and StableDiffusionXLPipeline models.",
            option="pretrained_model_name_or_path",
        )
    if context_dim:
        why += f"; UNet cross-attention width {context_dim}"
    if prediction:
        why += f"; scheduler prediction_type {prediction}"
    return Architecture(family, why, source_kind, context_dim, True, prediction)


def _sd1_or_sd2(context_dim: int | None, text_config: Mapping[str, Any], base: str) -> tuple[str, str]:
    # The real models differ in width (768 vs 1024); tiny test models do not, but their text
    # encoders keep the activation of the real ones (quick_gelu for OpenAI CLIP, gelu for OpenCLIP).
    if context_dim == 1024:
        return "sd2", base
    if context_dim == 768:
        return "sd1", base
    if text_config.get("hidden_act") == "gelu":
        return "sd2", f"{base}; OpenCLIP-style text encoder (gelu)"
    return "sd1", f"{base}; CLIP-style text encoder"
