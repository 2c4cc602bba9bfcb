"""Find the layers a LyCORIS preset selects in a loaded model, and the Kohya stem each is saved under.

The walk follows LyCORIS' rule: a module whose class is listed contributes every wrappable layer
inside it (itself included); a module whose path matches a listed name contributes itself when
it is wrappable; excluded paths are skipped everywhere. Wrappable means ``nn.Linear`` and
``nn.Conv2d`` (convolutions bigger than 1x1 only with ``enable_conv``), plus ``nn.LayerNorm`` and
``nn.GroupNorm`` with ``train_norm``.

Stems are those of ``targets.py``: ``lora_unet_`` + the UNet path through the family's key
mapping (SGM layout for SDXL), ``lora_te*_text_model_...`` for text encoders.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from trainer.errors import TrainerError
from trainer.models.family import text_encoder_lora_path
from trainer.networks.lycoris_presets import LycorisPreset
from trainer.networks.targets import UNET_PREFIX, KeyForPath, identity_key, part_name

LINEAR, CONV_1X1, CONV, NORM = "linear", "conv1x1", "conv", "norm"


@dataclass(frozen=True)
class LycorisTarget:
    """One layer to wrap. ``kind`` is linear / conv1x1 (take network_dim), conv (conv_dim) or norm."""

    stem: str
    module_path: str
    module: nn.Module
    part: str
    kind: str


@dataclass(frozen=True)
class _Rules:
    classes: frozenset[str]
    names: tuple[str, ...]
    exclude: tuple[str, ...]
    use_fnmatch: bool
    enable_conv: bool
    train_norm: bool

    def matches(self, patterns: Iterable[str], path: str) -> bool:
        if not path:
            return False
        for pattern in patterns:
            if path == pattern:
                return True
            # lycoris anchors expressions at the start only, so "mid_block" covers everything below it.
            if fnmatch.fnmatchcase(path, pattern) if self.use_fnmatch else re.match(pattern, path):
                return True
        return False

    def kind_of(self, module: nn.Module) -> str | None:
        if isinstance(module, nn.Linear):
            return LINEAR
        if isinstance(module, nn.Conv2d):
            if tuple(module.kernel_size) == (1, 1):
                return CONV_1X1
            return CONV if self.enable_conv else None
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and self.train_norm:
            return NORM if getattr(module, "weight", None) is not None else None
        return None


def _walk(root: nn.Module, rules: _Rules, path_for_match) -> dict[str, tuple[nn.Module, str]]:
    """``{model path: (module, kind)}`` in model order."""
    found: dict[str, tuple[nn.Module, str]] = {}
    for path, module in root.named_modules():
        shown = path_for_match(path)
        if rules.matches(rules.exclude, shown):
            continue
        if type(module).__name__ in rules.classes and not rules.matches(rules.names, shown):
            for child_path, child in module.named_modules():
                full = f"{path}.{child_path}" if path and child_path else path or child_path
                kind = rules.kind_of(child)
                if kind and not rules.matches(rules.exclude, path_for_match(full)):
                    found.setdefault(full, (child, kind))
        elif rules.matches(rules.names, shown):
            kind = rules.kind_of(module)
            if kind:
                found.setdefault(path, (module, kind))
    return found


def unet_lycoris_targets(unet: nn.Module, preset: LycorisPreset, key_for_path: KeyForPath = identity_key,
                         train_norm: bool = False) -> list[LycorisTarget]:
    """The UNet layers ``preset`` selects; names and classes match diffusers' paths and classes."""
    rules = _Rules(frozenset(preset.unet_target_module), preset.unet_target_name, preset.exclude_name,
                   preset.use_fnmatch, preset.enable_conv, train_norm)
    found = _walk(unet, rules, lambda path: path)
    targets = [LycorisTarget(_stem(UNET_PREFIX, key_for_path(path)), path, module, "unet", kind)
               for path, (module, kind) in found.items()]
    _check_unique(targets)
    return targets


def text_encoder_lycoris_targets(text_encoder: nn.Module, prefix: str, preset: LycorisPreset,
                                 train_norm: bool = False) -> list[LycorisTarget]:
    """The text-encoder layers ``preset`` selects, stemmed under ``prefix`` (``lora_te``, ``lora_te1``...).

    Names are matched against the ``text_model.encoder.layers.N...`` form whatever transformers
    calls the module, so one preset works with every transformers release.
    """
    rules = _Rules(frozenset(preset.text_encoder_target_module), preset.text_encoder_target_name,
                   preset.exclude_name, preset.use_fnmatch, preset.enable_conv, train_norm)
    found = _walk(text_encoder, rules, lambda path: text_encoder_lora_path(path) if path else "")
    part = part_name(prefix)
    targets = [LycorisTarget(_stem(prefix, text_encoder_lora_path(path)), path, module, part, kind)
               for path, (module, kind) in found.items()]
    _check_unique(targets)
    return targets


def select_targets(
    unet: nn.Module | None,
    text_encoders: Sequence[nn.Module],
    te_prefixes: Sequence[str],
    preset: LycorisPreset,
    key_for_path: KeyForPath = identity_key,
    train_unet: bool = True,
    train_text_encoder: bool = True,
    train_norm: bool = False,
) -> list[LycorisTarget]:
    """Every layer the network wraps: UNet first, then each text encoder.

    Raises :class:`TrainerError` when the parts being trained end up with no layer at all, which
    means the preset does not fit this model (for example class names of another code base).
    """
    targets: list[LycorisTarget] = []
    if train_unet and unet is not None:
        targets += unet_lycoris_targets(unet, preset, key_for_path, train_norm)
    if train_text_encoder:
        for encoder, prefix in zip(text_encoders, te_prefixes):
            targets += text_encoder_lycoris_targets(encoder, prefix.rstrip("_"), preset, train_norm)
    if not targets:
        trained = " and ".join(part for part, on in (("the UNet", train_unet), ("the text encoder(s)",
                                                                               train_text_encoder)) if on)
        raise TrainerError(
            f"LyCORIS preset {preset.name} selects no layer of {trained} in this model.",
            hint="Use a built-in preset (full, attn-mlp, attn-only, unet-only), or name diffusers classes such as "
                 "Transformer2DModel / ResnetBlock2D / Attention and CLIPAttention / CLIPMLP in your preset file; "
                 "check network_train_unet_only / network_train_text_encoder_only too.",
            option="network_args",
        )
    return targets


def _stem(prefix: str, dotted: str) -> str:
    return f"{prefix}_{dotted.replace('.', '_')}"


def _check_unique(targets: Iterable[LycorisTarget]) -> None:
    # Two layers on one stem would make one of them unloadable: a key-mapping bug, so fail loudly.
    seen: dict[str, str] = {}
    for target in targets:
        if target.stem in seen:
            raise ValueError(f"{target.module_path!r} and {seen[target.stem]!r} both map to {target.stem!r}")
        seen[target.stem] = target.module_path
