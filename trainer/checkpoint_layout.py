"""Convert diffusers state dicts to the original single-file layout that A1111, Forge and ComfyUI read.

The original ("LDM" for SD1/SD2, "SGM" for SDXL) layout names the UNet after its flat list of
``input_blocks`` / ``middle_block`` / ``output_blocks``, the VAE after ``down`` / ``mid`` / ``up``
levels, and stores the text encoders under ``cond_stage_model`` (SD1) or ``conditioner.embedders``
(SDXL, where the second encoder uses OpenCLIP's own names). Everything here is a pure function on
``str -> Tensor`` mappings: no model is built and no tensor is copied unless the layout needs it.

:func:`unet_module_to_ldm` is public on purpose: SDXL LoRA files name their UNet modules in the
SGM layout, so the LoRA writer reuses it to name keys.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

StateDict = Mapping[str, torch.Tensor]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."

# UNet modules that live outside the block lists; each maps to one fixed original path.
_UNET_FIXED: dict[str, str] = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    # SDXL's size/crop conditioning MLP is the first entry of ``label_emb``.
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

# Inside a UNet ResNet the original keeps its Sequential indices (norm, SiLU, conv / SiLU, Linear /
# norm, SiLU, Dropout, conv), which is why the conv after the dropout sits at index 3.
_UNET_RESNET_NAMES: dict[str, str] = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

# The VAE ResNet keeps diffusers' names except the 1x1 shortcut.
_VAE_RESNET_NAMES: dict[str, str] = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}

# The VAE's single mid-block attention; the original uses 1x1 convs where diffusers uses Linear.
_VAE_ATTENTION_NAMES: dict[str, str] = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}

_OPEN_CLIP_LAYER_NAMES: dict[str, str] = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}

_CLIP_LAYER_KEY = re.compile(r"encoder\.layers\.(\d+)\.(.+)")


@dataclass(frozen=True)
class UNetLayout:
    """The few facts about a UNet's block structure that decide its original-layout indices.

    ``layers_per_block`` counts ResNets per down level; each up level has one more. The two
    tuples say, per level, whether it holds transformer blocks (down levels in order, up levels
    in diffusers' order, deepest first).
    """

    layers_per_block: int
    down_has_attention: tuple[bool, ...]
    up_has_attention: tuple[bool, ...]

    def __post_init__(self) -> None:
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block must be at least 1, got {self.layers_per_block}")
        if len(self.down_has_attention) != len(self.up_has_attention):
            raise ValueError("a UNet needs as many up levels as down levels")

    @property
    def num_levels(self) -> int:
        """How many resolution levels the UNet has."""
        return len(self.down_has_attention)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UNetLayout:
        """Read the layout from a diffusers ``UNet2DConditionModel`` config (a dict or a FrozenDict)."""
        layers = config.get("layers_per_block", 2)
        if isinstance(layers, (list, tuple)):
            # The original layout has one stride for every level; per-level counts do not exist there.
            if len(set(layers)) != 1:
                raise ValueError(f"per-level layers_per_block {layers} has no original-layout equivalent")
            layers = layers[0]
        return cls(
            layers_per_block=int(layers),
            down_has_attention=tuple("Attn" in name for name in config["down_block_types"]),
            up_has_attention=tuple("Attn" in name for name in config["up_block_types"]),
        )


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def _resnet_rest(rest: list[str], names: Mapping[str, str], path: str) -> str:
    """Rename the first component below a ResNet; deeper components (``weight``...) pass through."""
    if not rest:
        return ""
    if rest[0] not in names:
        raise ValueError(f"unknown ResNet member {rest[0]!r} in {path!r}")
    return _join(names[rest[0]], *rest[1:])


def _parse_index(text: str, path: str) -> int:
    if not text.isdigit():
        raise ValueError(f"expected a block index, got {text!r} in {path!r}")
    return int(text)


def _check(condition: bool, path: str, why: str) -> None:
    if not condition:
        raise ValueError(f"{path!r} does not fit this UNet layout: {why}")


def unet_module_to_ldm(path: str, layout: UNetLayout) -> str:
    """Map a diffusers UNet module path (or parameter key) to its original LDM/SGM path.

    Works on any prefix that names a whole module, and carries trailing components through,
    so both ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`` and its
    ``...to_q.weight`` parameter map. With two layers per block the former becomes
    ``input_blocks.4.1.transformer_blocks.0.attn1.to_q``. Raises ``ValueError`` for a path that
    has no original equivalent or does not fit ``layout``.
    """
    for diffusers_name, ldm_name in _UNET_FIXED.items():
        if path == diffusers_name or path.startswith(diffusers_name + "."):
            return _join(ldm_name, path[len(diffusers_name) + 1 :])

    parts = path.split(".")
    stride = layout.layers_per_block + 1  # ResNets per level, plus the resampler slot
    if parts[0] == "mid_block" and len(parts) >= 3:
        kind, index, rest = parts[1], _parse_index(parts[2], path), parts[3:]
        if kind == "resnets" and index in (0, 1):
            return _join(f"middle_block.{2 * index}", _resnet_rest(rest, _UNET_RESNET_NAMES, path))
        if kind == "attentions" and index == 0:
            return _join("middle_block.1", *rest)
        raise ValueError(f"unknown mid-block module {path!r}")

    if parts[0] not in ("down_blocks", "up_blocks") or len(parts) < 4:
        raise ValueError(f"no original-layout equivalent for UNet path {path!r}")
    level, kind, index, rest = _parse_index(parts[1], path), parts[2], _parse_index(parts[3], path), parts[4:]
    _check(level < layout.num_levels, path, f"only {layout.num_levels} levels")
    last_level = level == layout.num_levels - 1

    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            # The deepest level keeps its resolution, so it has no downsampler.
            _check(not last_level and index == 0, path, "no such downsampler")
            if rest and rest[0] == "conv":
                rest = ["op", *rest[1:]]
            return _join(f"input_blocks.{(level + 1) * stride}.0", *rest)
        _check(index < layout.layers_per_block, path, f"{layout.layers_per_block} layers per down level")
        block = 1 + level * stride + index  # input_blocks.0 is conv_in
        if kind == "resnets":
            return _join(f"input_blocks.{block}.0", _resnet_rest(rest, _UNET_RESNET_NAMES, path))
        if kind == "attentions":
            _check(layout.down_has_attention[level], path, "this down level has no attention")
            return _join(f"input_blocks.{block}.1", *rest)
        raise ValueError(f"unknown down-block member {kind!r} in {path!r}")

    has_attention = layout.up_has_attention[level]
    if kind == "upsamplers":
        _check(not last_level and index == 0, path, "no such upsampler")
        # The upsampler shares the level's last output block, after the ResNet and any attention.
        slot = 2 if has_attention else 1
        return _join(f"output_blocks.{level * stride + layout.layers_per_block}.{slot}", *rest)
    _check(index < stride, path, f"{stride} layers per up level")
    block = level * stride + index
    if kind == "resnets":
        return _join(f"output_blocks.{block}.0", _resnet_rest(rest, _UNET_RESNET_NAMES, path))
    if kind == "attentions":
        _check(has_attention, path, "this up level has no attention")
        return _join(f"output_blocks.{block}.1", *rest)
    raise ValueError(f"unknown up-block member {kind!r} in {path!r}")


def _put(out: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    # Two source keys landing on one target would silently drop weights: make it loud.
    if key in out:
        raise ValueError(f"two tensors map to {key!r}")
    out[key] = value


def unet_to_ldm(state_dict: StateDict, layout: UNetLayout, prefix: str = UNET_PREFIX) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet state dict to the original layout under ``prefix``.

    Tensors are not copied: the result shares storage with ``state_dict``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        _put(out, prefix + unet_module_to_ldm(key, layout), value)
    return out


def _vae_key(key: str, num_up_levels: int) -> str:
    """The original name of one diffusers AutoencoderKL parameter key."""
    parts = key.split(".")
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return key
    if parts[0] not in ("encoder", "decoder") or len(parts) < 2:
        raise ValueError(f"unknown VAE key {key!r}")
    side, member, rest = parts[0], parts[1], parts[2:]
    if member in ("conv_in", "conv_out"):
        return key
    if member == "conv_norm_out":
        return _join(side, "norm_out", *rest)
    if member == "mid_block":
        kind, index, inner = rest[0], int(rest[1]), rest[2:]
        if kind == "resnets" and index in (0, 1):
            return _join(side, f"mid.block_{index + 1}", _resnet_rest(inner, _VAE_RESNET_NAMES, key))
        inner_path = ".".join(inner)
        for diffusers_name, ldm_name in _VAE_ATTENTION_NAMES.items():
            if kind == "attentions" and index == 0 and inner_path.startswith(diffusers_name + "."):
                return _join(side, "mid.attn_1", ldm_name, inner_path[len(diffusers_name) + 1 :])
        raise ValueError(f"unknown VAE mid-block key {key!r}")
    if member in ("down_blocks", "up_blocks"):
        level, kind, index, inner = int(rest[0]), rest[1], int(rest[2]), rest[3:]
        # diffusers lists decoder levels from the deepest up; the original counts from full resolution.
        ldm_level = level if member == "down_blocks" else num_up_levels - 1 - level
        group = "down" if member == "down_blocks" else "up"
        if kind == "resnets":
            return _join(side, f"{group}.{ldm_level}.block.{index}", _resnet_rest(inner, _VAE_RESNET_NAMES, key))
        if kind in ("downsamplers", "upsamplers") and index == 0:
            resampler = "downsample" if kind == "downsamplers" else "upsample"
            return _join(side, f"{group}.{ldm_level}.{resampler}", *inner)
    raise ValueError(f"unknown VAE key {key!r}")


def vae_to_ldm(
    state_dict: StateDict, prefix: str = VAE_PREFIX, num_levels: int | None = None
) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``AutoencoderKL`` state dict to the original layout under ``prefix``.

    The mid-block attention's q/k/v/proj_out weights become ``[C, C, 1, 1]`` conv kernels, as
    the original model stores them; everything else keeps its shape. ``num_levels`` (the length
    of the VAE's ``block_out_channels``) is read from the decoder keys when not given.
    """
    if num_levels is None:
        up_indices = [int(key.split(".")[2]) for key in state_dict if key.startswith("decoder.up_blocks.")]
        num_levels = 1 + max(up_indices, default=-1)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = _vae_key(key, num_levels)
        if ".mid.attn_1." in new_key and new_key.endswith(".weight") and value.ndim == 2:
            value = value.reshape(*value.shape, 1, 1)
        _put(out, prefix + new_key, value)
    return out


def _strip_text_model(key: str) -> str:
    # transformers 5.x flattened CLIPTextModel (no ``text_model.``); older versions and
    # CLIPTextModelWithProjection still carry it. Accept both spellings.
    return key[len("text_model.") :] if key.startswith("text_model.") else key


def clip_l_to_ldm(state_dict: StateDict, prefix: str = SD1_CLIP_PREFIX) -> dict[str, torch.Tensor]:
    """Put a HF ``CLIPTextModel`` state dict under ``prefix + "text_model."``.

    Use :data:`SD1_CLIP_PREFIX` for SD1/SD2-style files and :data:`SDXL_CLIP_L_PREFIX` for SDXL.
    The original files always spell ``text_model.``, whatever the installed transformers does.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        inner = _strip_text_model(key)
        if not inner.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
            raise ValueError(f"{key!r} is not part of a CLIP text model")
        _put(out, f"{prefix}text_model.{inner}", value)
    return out


def clip_g_to_open_clip(state_dict: StateDict, prefix: str = SDXL_CLIP_G_PREFIX) -> dict[str, torch.Tensor]:
    """Convert a HF ``CLIPTextModelWithProjection`` state dict to OpenCLIP's names under ``prefix``.

    q, k and v projections are concatenated (in that order) into ``attn.in_proj_weight/bias``.
    ``text_projection`` is stored transposed, ``[hidden, projection_dim]``: OpenCLIP multiplies
    ``x @ text_projection`` where HF applies a Linear whose weight is ``[projection_dim, hidden]``.
    """
    out: dict[str, torch.Tensor] = {}
    pending_qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        inner = _strip_text_model(key)
        if inner == "text_projection.weight":
            _put(out, prefix + "text_projection", value.t().contiguous())
            continue
        if inner == "embeddings.token_embedding.weight":
            _put(out, prefix + "token_embedding.weight", value)
            continue
        if inner == "embeddings.position_embedding.weight":
            _put(out, prefix + "positional_embedding", value)
            continue
        if inner.startswith("final_layer_norm."):
            _put(out, prefix + "ln_final." + inner[len("final_layer_norm.") :], value)
            continue
        match = _CLIP_LAYER_KEY.fullmatch(inner)
        if match is None:
            raise ValueError(f"{key!r} is not part of a CLIP text model")
        layer, member = int(match.group(1)), match.group(2)
        qkv = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", member)
        if qkv:
            pending_qkv.setdefault((layer, qkv.group(2)), {})[qkv.group(1)] = value
            continue
        for hf_name, open_clip_name in _OPEN_CLIP_LAYER_NAMES.items():
            if member.startswith(hf_name + "."):
                tail = member[len(hf_name) + 1 :]
                _put(out, f"{prefix}transformer.resblocks.{layer}.{open_clip_name}.{tail}", value)
                break
        else:
            raise ValueError(f"unknown CLIP layer member {key!r}")
    for (layer, kind), parts in sorted(pending_qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"layer {layer} is missing some of q/k/v {kind}")
        fused = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        _put(out, f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}", fused)
    return out


@dataclass(frozen=True)
class PipelineWeights:
    """The diffusers state dicts of one SD1 or SDXL pipeline; SDXL when ``text_encoder_2`` is set."""

    unet: StateDict
    unet_layout: UNetLayout
    vae: StateDict
    text_encoder: StateDict
    text_encoder_2: StateDict | None = None

    @property
    def family(self) -> str:
        """``"sdxl"`` for a two-encoder pipeline, else ``"sd1"``."""
        return "sdxl" if self.text_encoder_2 is not None else "sd1"

    @classmethod
    def from_pipeline(cls, pipe: Any) -> PipelineWeights:
        """Collect the state dicts of a loaded ``StableDiffusion(XL)Pipeline`` (or anything shaped like one)."""
        second = getattr(pipe, "text_encoder_2", None)
        return cls(
            unet=pipe.unet.state_dict(),
            unet_layout=UNetLayout.from_config(pipe.unet.config),
            vae=pipe.vae.state_dict(),
            text_encoder=pipe.text_encoder.state_dict(),
            text_encoder_2=second.state_dict() if second is not None else None,
        )


def to_single_file(weights: PipelineWeights) -> dict[str, torch.Tensor]:
    """Assemble the full original-layout state dict (UNet, VAE, text encoders) for one pipeline.

    The result can be written with ``safetensors.torch.save_file`` after making tensors
    contiguous; it shares storage with the inputs wherever no reshaping was needed.
    """
    out: dict[str, torch.Tensor] = {}
    parts = [unet_to_ldm(weights.unet, weights.unet_layout), vae_to_ldm(weights.vae)]
    if weights.text_encoder_2 is None:
        parts.append(clip_l_to_ldm(weights.text_encoder, SD1_CLIP_PREFIX))
    else:
        parts.append(clip_l_to_ldm(weights.text_encoder, SDXL_CLIP_L_PREFIX))
        parts.append(clip_g_to_open_clip(weights.text_encoder_2, SDXL_CLIP_G_PREFIX))
    for part in parts:
        for key, value in part.items():
            _put(out, key, value)
    return out
