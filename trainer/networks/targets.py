"""Which modules of a model a Kohya-style LoRA wraps, and the key stem each one is saved under.

The targets are read from the model's own modules, the way sd-scripts chooses them, so a LoRA
we write has exactly the stems ComfyUI, A1111/Forge, diffusers and Civitai expect:

- UNet, always: every ``nn.Linear`` and 1x1 ``nn.Conv2d`` inside a ``Transformer2DModel``
  (``proj_in``, ``proj_out``, ``attn1``/``attn2`` ``to_q to_k to_v to_out.0``, ``ff.net.0.proj``,
  ``ff.net.2``). These take ``network_dim`` / ``network_alpha``.
- UNet, with ``conv_dim`` (LoCon): also every ``nn.Linear`` and ``nn.Conv2d`` inside a
  ``ResnetBlock2D``, ``Downsample2D`` or ``Upsample2D``. Their 3x3 convs (ResNet ``conv1``,
  ``conv2`` and the resamplers' ``conv``) take ``conv_dim`` / ``conv_alpha``; their Linear
  (``time_emb_proj``) and 1x1 conv (``conv_shortcut``) take ``network_dim`` / ``network_alpha``,
  as sd-scripts does. ``conv_in``, ``conv_out`` and the time/label embeddings are never targeted.
- Each CLIP text encoder: the Linear layers of every encoder layer's self-attention
  (``q_proj k_proj v_proj out_proj``) and MLP (``fc1 fc2``); ``text_projection`` is not targeted.

Blocks are recognised by class name, as sd-scripts does: the names are stable across diffusers
releases while their import paths are not.

Stems are ``PREFIX_`` + the module path with ``.`` turned into ``_``. The UNet path first goes
through a caller-supplied ``key_for_path`` (identity for SD1/SD2, ``unet_module_to_ldm`` for SDXL,
whose files use the SGM layout). Text-encoder stems always carry ``text_model_`` even when the
installed transformers flattened ``CLIPTextModel`` and its paths lack ``text_model.``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from torch import nn

UNET_PREFIX = "lora_unet"

# Class names, as in sd-scripts: the attention blocks always, the convolution blocks for LoCon.
TRANSFORMER_BLOCKS = frozenset({"Transformer2DModel"})
CONV_BLOCKS = frozenset({"ResnetBlock2D", "Downsample2D", "Upsample2D"})

# One encoder layer's attention and MLP Linear layers, with or without the ``text_model.`` level.
_CLIP_TARGET = re.compile(
    r"(?:text_model\.)?encoder\.layers\.\d+\.(?:self_attn\.(?:[qkv]|out)_proj|mlp\.fc[12])"
)

KeyForPath = Callable[[str], str]


def identity_key(path: str) -> str:
    """The UNet key mapping for SD1/SD2: their LoRA files use diffusers' own module paths."""
    return path


@dataclass(frozen=True)
class Target:
    """One module to wrap: where it is in its model, the stem it is saved under, and its kind.

    ``uses_conv_rank`` is true for convolutions with a kernel bigger than 1x1: they take
    ``conv_dim`` / ``conv_alpha`` instead of ``network_dim`` / ``network_alpha``.
    """

    stem: str
    module_path: str
    module: nn.Linear | nn.Conv2d
    part: str
    uses_conv_rank: bool


def _stem(prefix: str, dotted: str) -> str:
    return f"{prefix}_{dotted.replace('.', '_')}"


def _is_wrappable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d))


def _is_big_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


def unet_targets(unet: nn.Module, key_for_path: KeyForPath = identity_key, include_conv: bool = False) -> list[Target]:
    """The UNet modules a Kohya LoRA (``include_conv=False``) or LoCon (``True``) wraps, in model order.

    Without ``include_conv``, a 3x3 conv found inside a transformer block (none exist in SD1/SD2/
    SDXL) is skipped, as sd-scripts skips it. Raises ``ValueError`` from ``key_for_path`` when a
    module has no name in the file's layout.
    """
    block_classes = TRANSFORMER_BLOCKS | CONV_BLOCKS if include_conv else TRANSFORMER_BLOCKS
    found: dict[str, Target] = {}
    for block_path, block in unet.named_modules():
        if type(block).__name__ not in block_classes:
            continue
        for child_path, child in block.named_modules():
            if not child_path or not _is_wrappable(child):
                continue
            big_conv = _is_big_conv(child)
            if big_conv and not include_conv:
                continue
            path = f"{block_path}.{child_path}"
            stem = _stem(UNET_PREFIX, key_for_path(path))
            found.setdefault(path, Target(stem, path, child, "unet", big_conv))
    _check_unique(found.values())
    return list(found.values())


def unet_target_stems(
    unet: nn.Module, key_for_path: KeyForPath = identity_key, include_conv: bool = False
) -> dict[str, str]:
    """``{stem: diffusers module path}`` of :func:`unet_targets`, for comparing with a saved file."""
    return {target.stem: target.module_path for target in unet_targets(unet, key_for_path, include_conv)}


def part_name(prefix: str) -> str:
    """The short part name of a key prefix: ``lora_te1`` -> ``te1``, ``lora_unet`` -> ``unet``."""
    return prefix[len("lora_") :] if prefix.startswith("lora_") else prefix


def text_encoder_targets(text_encoder: nn.Module, prefix: str) -> list[Target]:
    """The Linear layers of a CLIP text encoder's attention and MLP, stemmed under ``prefix``.

    ``prefix`` is ``lora_te`` (SD1/SD2) or ``lora_te1`` / ``lora_te2`` (SDXL), without a trailing
    underscore. Raises ``ValueError`` when the model has no CLIP encoder layers at all, which
    means it is not a CLIP text encoder and the file would silently lack its part.
    """
    targets = []
    for path, module in text_encoder.named_modules():
        if isinstance(module, nn.Linear) and _CLIP_TARGET.fullmatch(path):
            # The file always spells the ``text_model.`` level, whatever transformers calls it.
            file_path = path if path.startswith("text_model.") else f"text_model.{path}"
            targets.append(Target(_stem(prefix, file_path), path, module, part_name(prefix), False))
    if not targets:
        raise ValueError(f"no CLIP encoder layers found for {prefix!r}: is this a CLIP text model?")
    _check_unique(targets)
    return targets


def _check_unique(targets: Iterable[Target]) -> None:
    # Two modules on one stem would make one of them unloadable: a key-mapping bug, so fail loudly.
    seen: dict[str, str] = {}
    for target in targets:
        if target.stem in seen:
            raise ValueError(f"{target.module_path!r} and {seen[target.stem]!r} both map to {target.stem!r}")
        seen[target.stem] = target.module_path


def check_network_settings(text_encoders: "Sequence[nn.Module]", te_prefixes: "Sequence[str]", dim: int,
                           train_unet: bool, train_text_encoder: bool) -> None:
    """The checks every network type makes before it picks its modules."""
    from trainer.errors import TrainerError

    if len(text_encoders) != len(te_prefixes):
        raise ValueError(f"{len(text_encoders)} text encoders but {len(te_prefixes)} key prefixes")
    if not train_unet and not train_text_encoder:
        raise TrainerError(
            "Nothing to train: both the UNet and the text encoders are switched off.",
            hint="Set at most one of network_train_unet_only / network_train_text_encoder_only.",
            option="network_train_text_encoder_only",
        )
    if dim < 1:
        raise TrainerError(f"network_dim must be at least 1, got {dim}.", hint="Use 4-128.", option="network_dim")


def collect_targets(
    unet: nn.Module | None,
    text_encoders: "Sequence[nn.Module]",
    te_prefixes: "Sequence[str]",
    unet_key_for_path: KeyForPath,
    dim: int,
    conv_dim: int | None,
    train_unet: bool,
    train_text_encoder: bool,
) -> list[Target]:
    """Kohya's targets for the parts being trained, after checking the settings that pick them.

    Shared by the LoRA/LoCon and DyLoRA networks; ``conv_dim`` set (above 0) adds LoCon's layers.
    """
    from trainer.errors import TrainerError

    check_network_settings(text_encoders, te_prefixes, dim, train_unet, train_text_encoder)
    conv_rank = int(conv_dim or 0)  # 0 or None: no LoCon
    if conv_rank < 0:
        raise TrainerError(f"conv_dim must be positive, got {conv_dim}.", hint="Use 1-64, or leave it out.",
                           option="network_args")
    targets: list[Target] = []
    if train_unet:
        if unet is None:
            raise ValueError("train_unet is set but no UNet was given")
        targets += unet_targets(unet, unet_key_for_path, include_conv=conv_rank > 0)
    if train_text_encoder:
        for encoder, prefix in zip(text_encoders, te_prefixes):
            targets += text_encoder_targets(encoder, prefix.rstrip("_"))
    return targets

