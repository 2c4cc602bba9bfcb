"""DyLoRA (``network_module = "networks.dylora"``): one LoRA that works at every rank up to network_dim.

Each training forward of a module draws a rank ``r`` from ``unit, 2*unit, ..., dim`` and uses only
the first ``r`` rows of ``lora_down`` and columns of ``lora_up``, scaled by ``alpha / r``. Only the
newest block (the last ``unit`` rows and columns) receives gradients; the earlier ones are
trained when smaller ranks are drawn. So every prefix is a usable LoRA of its own: cutting a
saved file to its first ``r`` ranks (keeping alpha, so the scale is again ``alpha / r``) gives
the LoRA that was trained at rank ``r``.

Outside training the full rank is used, and the file is a plain Kohya LoRA / LoCon of rank
network_dim (``lora_down``, ``lora_up``, ``alpha``), which every tool loads.

The rank is drawn from torch's global generator, which gradient checkpointing saves and replays,
so the recomputed forward uses the same rank as the first one.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.errors import TrainerError
from trainer.networks.lora import LoRAModule, LoRANetwork
from trainer.networks.targets import KeyForPath, collect_targets, identity_key

_KEYS = ("unit", "conv_dim", "conv_alpha")


@dataclass(frozen=True)
class DyLoRASettings:
    """networks.dylora's network_args: the rank step and the optional LoCon convolutions."""

    unit: int = 1
    conv_dim: int | None = None
    conv_alpha: float | None = None


def parse_dylora_args(items: Sequence[str]) -> DyLoRASettings:
    """Read ``["unit=4", "conv_dim=8", "conv_alpha=1"]``; raises :class:`TrainerError` on anything else."""
    values: dict[str, float] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or key not in _KEYS:
            raise TrainerError(f"network_args item {item!r} is not understood by networks.dylora.",
                               hint="networks.dylora takes unit=N, conv_dim=N and conv_alpha=N.",
                               option="network_args")
        try:
            values[key] = float(text)
        except ValueError as problem:
            raise TrainerError(f"network_args {key} must be a number, got {text!r}.", hint=f"For example {key}=4.",
                               option="network_args") from problem
    for key in ("unit", "conv_dim"):
        if key in values and (values[key] < 1 or not values[key].is_integer()):
            raise TrainerError(f"network_args {key} must be a whole number of at least 1, got {values[key]:g}.",
                               hint=f"For example {key}=4.", option="network_args")
    return DyLoRASettings(
        unit=int(values.get("unit", 1)),
        conv_dim=int(values["conv_dim"]) if "conv_dim" in values else None,
        conv_alpha=values.get("conv_alpha"),
    )


class DyLoRAModule(LoRAModule):
    """A :class:`LoRAModule` that trains random rank prefixes (see the module docstring)."""

    def __init__(self, stem: str, org: nn.Linear | nn.Conv2d, rank: int, alpha: float | None, unit: int,
                 dropout: float | None = None, part: str = "unet") -> None:
        super().__init__(stem, org, rank, alpha, dropout, part)
        if unit < 1 or rank % unit:
            option = "conv_dim" if isinstance(org, nn.Conv2d) and tuple(org.kernel_size) != (1, 1) else "network_dim"
            raise TrainerError(f"networks.dylora needs {option} ({rank}) to be a multiple of unit ({unit}).",
                               hint=f"Pick a unit that divides {rank}, e.g. unit=1, 2 or 4.", option="network_args")
        self.unit = unit

    def draw_rank(self) -> int:
        """A random rank from ``unit, 2*unit, ..., rank``."""
        return self.unit * int(torch.randint(1, self.rank // self.unit + 1, (1,)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full rank outside training; a random rank prefix, newest block trainable, in training."""
        if not self.training:
            return super().forward(x)
        if self._org_forward is None:
            raise RuntimeError(f"{self.stem} is not applied to its layer")
        out = self._org_forward(x)
        rank = self.draw_rank()
        old = rank - self.unit
        down_weight, up_weight = self.lora_down.weight, self.lora_up.weight
        # Earlier blocks take part in the result but not in this step's update.
        down = torch.cat([down_weight[:old].detach(), down_weight[old:rank]])
        up = torch.cat([up_weight[:, :old].detach(), up_weight[:, old:rank]], dim=1)
        x = x.to(down.dtype)
        if isinstance(self.lora_down, nn.Conv2d):
            conv = self.lora_down
            hidden = F.conv2d(x, down, None, conv.stride, conv.padding, conv.dilation)
        else:
            hidden = F.linear(x, down)
        if self.dropout:
            hidden = F.dropout(hidden, p=self.dropout)
        update = F.conv2d(hidden, up) if isinstance(self.lora_up, nn.Conv2d) else F.linear(hidden, up)
        return out + (update * (self.alpha_value / rank * self.multiplier)).to(out.dtype)


def create_dylora_network(
    unet: nn.Module | None,
    text_encoders: Sequence[nn.Module],
    te_prefixes: Sequence[str],
    settings: DyLoRASettings,
    unet_key_for_path: KeyForPath = identity_key,
    dim: int = 16,
    alpha: float | None = 1.0,
    dropout: float | None = None,
    train_unet: bool = True,
    train_text_encoder: bool = True,
) -> LoRANetwork:
    """A LoRA network of :class:`DyLoRAModule` over kohya's LoRA (or, with conv_dim, LoCon) targets."""
    conv_rank = settings.conv_dim or 0
    targets = collect_targets(unet, text_encoders, te_prefixes, unet_key_for_path, dim, conv_rank,
                              train_unet, train_text_encoder)
    # conv_alpha defaults to 1, as networks.lora (and sd-scripts) do.
    conv_alpha = 1.0 if settings.conv_alpha is None else settings.conv_alpha
    modules = [
        DyLoRAModule(
            target.stem, target.module,
            conv_rank if target.uses_conv_rank else dim,
            conv_alpha if target.uses_conv_rank else alpha,
            settings.unit, dropout, target.part,
        )
        for target in targets
    ]
    return LoRANetwork(modules)
