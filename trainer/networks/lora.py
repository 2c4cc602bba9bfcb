"""Our LoRA / LoCon network: small trainable matrices added next to the base model's layers.

A :class:`LoRAModule` takes over one ``nn.Linear`` or ``nn.Conv2d``'s ``forward``::

    out = org(x) + up(dropout(down(x))) * (alpha / rank) * multiplier

``down`` has the original layer's input side (for a conv: its kernel, stride and padding), ``up``
is a Linear / 1x1 conv to the output size. ``up`` starts at zero so an untrained network changes
nothing. The base model's weights are never touched: :meth:`LoRANetwork.remove` puts the
original ``forward`` back.

:meth:`LoRANetwork.kohya_state_dict` writes the tensors under the Kohya key names that every
tool reads (see ``targets.py`` for which layers are wrapped and how stems are named), and
:meth:`LoRANetwork.load_kohya_state_dict` reads them back to continue training.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from trainer.errors import TrainerError
from trainer.networks.targets import KeyForPath, collect_targets, identity_key

DOWN, UP, ALPHA = "lora_down.weight", "lora_up.weight", "alpha"


class LoRAModule(nn.Module):
    """A low-rank update wrapped around one Linear or Conv2d layer.

    ``alpha`` is kept as a buffer (it is part of the file) and mirrored in ``scale`` as a plain
    float, so the forward pass never reads a tensor back from the device.
    """

    def __init__(
        self,
        stem: str,
        org: nn.Linear | nn.Conv2d,
        rank: int,
        alpha: float | None,
        dropout: float | None = None,
        part: str = "unet",
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.stem = stem
        self.part = part
        self.rank = rank
        self.dropout = float(dropout or 0.0)
        self.multiplier = 1.0
        device = org.weight.device
        if isinstance(org, nn.Conv2d):
            if org.groups != 1:
                raise ValueError(f"{stem}: grouped convolutions cannot hold a Kohya LoRA")
            self.lora_down: nn.Module = nn.Conv2d(
                org.in_channels, rank, org.kernel_size, org.stride, org.padding, org.dilation,
                bias=False, device=device,
            )
            self.lora_up: nn.Module = nn.Conv2d(rank, org.out_channels, 1, bias=False, device=device)
        else:
            self.lora_down = nn.Linear(org.in_features, rank, bias=False, device=device)
            self.lora_up = nn.Linear(rank, org.out_features, bias=False, device=device)
        # Kaiming-uniform down (nn.Linear's own default) and zero up: training starts from the base model.
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.register_buffer("alpha", torch.tensor(0.0, device=device))
        self.scale = 1.0
        self.set_alpha(alpha)
        # A plain list keeps the base layer out of this module's parameters and state dict.
        self._org: list[nn.Module] = [org]
        self._org_forward: Callable[..., torch.Tensor] | None = None
        self._had_instance_forward = False

    @property
    def org_module(self) -> nn.Module:
        """The wrapped base-model layer."""
        return self._org[0]

    def set_alpha(self, alpha: float | None) -> None:
        """Set alpha; ``None`` or 0 means alpha = rank (scale 1), as a file without alpha means."""
        value = float(alpha) if alpha else float(self.rank)
        self.alpha.fill_(value)
        self.alpha_value = value
        self.scale = value / self.rank

    def apply_to(self) -> None:
        """Route the base layer's forward through this module (idempotent)."""
        if self._org_forward is not None:
            return
        org = self.org_module
        self._had_instance_forward = "forward" in org.__dict__
        self._org_forward = org.forward
        org.forward = self.forward

    def restore(self) -> None:
        """Give the base layer its own forward back (idempotent)."""
        if self._org_forward is None:
            return
        org = self.org_module
        if self._had_instance_forward:
            org.forward = self._org_forward
        else:
            del org.forward  # the class's forward shows through again
        self._org_forward = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base output plus the scaled low-rank update."""
        if self._org_forward is None:
            raise RuntimeError(f"{self.stem} is not applied to its layer")
        out = self._org_forward(x)
        # Casting lets a float32 LoRA run on a half-precision base model without autocast;
        # under autocast the layers pick their own compute dtype anyway.
        hidden = self.lora_down(x.to(self.lora_down.weight.dtype))
        if self.dropout and self.training:
            hidden = F.dropout(hidden, p=self.dropout)
        update = self.lora_up(hidden) * (self.scale * self.multiplier)
        return out + update.to(out.dtype)


@dataclass(frozen=True)
class LoadReport:
    """What :meth:`LoRANetwork.load_kohya_state_dict` did: modules loaded, and modules the file lacked."""

    loaded: int
    missing: tuple[str, ...]


class LoRANetwork(nn.Module):
    """All LoRA modules of one model, grouped by part.

    Parts are named after their key prefix: ``unet``, ``te`` (SD1/SD2's one text encoder) or
    ``te1`` / ``te2`` (SDXL's CLIP-L / CLIP-G).
    """

    def __init__(self, modules: Sequence[LoRAModule]) -> None:
        super().__init__()
        # Stems never contain dots, so they are valid ModuleDict keys.
        self.loras = nn.ModuleDict({module.stem: module for module in modules})
        self.parts: tuple[str, ...] = tuple(dict.fromkeys(module.part for module in modules))

    @classmethod
    def create(
        cls,
        unet: nn.Module | None,
        text_encoders: Sequence[nn.Module],
        te_prefixes: Sequence[str],
        unet_key_for_path: KeyForPath = identity_key,
        dim: int = 16,
        alpha: float | None = 1.0,
        conv_dim: int | None = None,
        conv_alpha: float | None = None,
        dropout: float | None = None,
        train_unet: bool = True,
        train_text_encoder: bool = True,
    ) -> LoRANetwork:
        """Build the network for a UNet and its text encoders (not applied yet: call :meth:`apply`).

        ``te_prefixes`` names each encoder's keys (``["lora_te"]`` or ``["lora_te1", "lora_te2"]``).
        ``conv_dim`` (LoCon) adds the ResNet and resampler layers; ``conv_alpha`` defaults to 1
        as in sd-scripts. Parts not trained get no modules, so the saved file has no keys for them.
        """
        targets = collect_targets(unet, text_encoders, te_prefixes, unet_key_for_path, dim, conv_dim,
                                  train_unet, train_text_encoder)
        conv_rank = int(conv_dim or 0)
        conv_alpha_value = 1.0 if conv_alpha is None else conv_alpha
        modules = [
            LoRAModule(
                target.stem,
                target.module,
                conv_rank if target.uses_conv_rank else dim,
                conv_alpha_value if target.uses_conv_rank else alpha,
                dropout,
                target.part,
            )
            for target in targets
        ]
        return cls(modules)

    def _modules_of(self, part: str | None = None) -> list[LoRAModule]:
        modules = cast("list[LoRAModule]", list(self.loras.values()))
        return [m for m in modules if part is None or m.part == part]

    def apply(self) -> None:
        """Hook every module into its base layer. The base weights stay untouched."""
        for module in self._modules_of():
            module.apply_to()

    def remove(self) -> None:
        """Restore every base layer's original forward."""
        for module in self._modules_of():
            module.restore()

    def set_multiplier(self, multiplier: float) -> None:
        """Scale every module's update (1 = as trained, 0 = off)."""
        for module in self._modules_of():
            module.multiplier = float(multiplier)

    def param_groups(
        self,
        unet_lr: float | None,
        te_lrs: float | Sequence[float | None] | None,
        default_lr: float,
    ) -> list[dict]:
        """Optimizer parameter groups, one per part, each with its own ``lr`` and a ``name``.

        ``None`` falls back to ``default_lr`` (learning_rate). ``te_lrs`` is one value for every
        encoder or one per encoder. An lr of 0 freezes that part: its group is left out and its
        parameters stop requiring gradients (it is still saved, unchanged), as sd-scripts skips it.
        """
        te_parts = [p for p in self.parts if p != "unet"]
        te_list: list[float | None]
        if te_lrs is None or isinstance(te_lrs, (int, float)):
            te_list = [te_lrs] * len(te_parts)
        else:
            te_list = list(te_lrs)
            if len(te_list) == 1:
                te_list = te_list * len(te_parts)
            elif len(te_list) != len(te_parts):
                raise TrainerError(
                    f"text_encoder_lr has {len(te_list)} values, but this network trains "
                    f"{len(te_parts)} text encoder(s).",
                    hint="Give one value for all text encoders, or one per encoder.",
                    option="text_encoder_lr",
                )
        wanted = {"unet": unet_lr, **dict(zip(te_parts, te_list))}
        groups = []
        for part in self.parts:
            lr = wanted[part] if wanted[part] is not None else default_lr
            params = [p for module in self._modules_of(part) for p in module.parameters()]
            for param in params:
                param.requires_grad_(bool(lr))
            if lr:
                groups.append({"params": params, "lr": float(lr), "name": part})
        if not groups:
            raise TrainerError(
                "Every learning rate is 0, so nothing would be trained.",
                hint="Set learning_rate, unet_lr or text_encoder_lr above 0.",
                option="learning_rate",
            )
        return groups

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The Kohya-format tensors, copied to the CPU (and cast to ``dtype`` when given)."""
        out: dict[str, torch.Tensor] = {}
        for module in self._modules_of():
            for key, tensor in (
                (DOWN, module.lora_down.weight),
                (UP, module.lora_up.weight),
                (ALPHA, torch.tensor(module.alpha_value)),
            ):
                copied = tensor.detach().to("cpu", dtype or tensor.dtype, copy=True)
                out[f"{module.stem}.{key}"] = copied.contiguous()
        return out

    def load_kohya_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], source: str = "network_weights"
    ) -> LoadReport:
        """Load Kohya-format tensors (continue training). Nothing is changed unless all of it fits.

        ``source`` names the file in error messages. Raises :class:`TrainerError` for keys that are
        not plain LoRA/LoCon, for stems this network has no module for, and for shape or rank
        mismatches. Modules the file has no keys for keep their fresh weights; they are reported.
        """
        by_stem: dict[str, dict[str, torch.Tensor]] = {}
        foreign = []
        for key, tensor in state_dict.items():
            stem, _, member = key.partition(".")
            if member not in (DOWN, UP, ALPHA):
                foreign.append(key)
            by_stem.setdefault(stem, {})[member] = tensor
        if foreign:
            raise TrainerError(
                f"{source} is not a plain LoRA/LoCon file: it has keys such as {_few(foreign)}.",
                hint="Use a LoRA or LoCon file here, or train with network_module = lycoris.kohya for LyCORIS files.",
                option="network_weights",
            )
        unknown = [stem for stem in by_stem if stem not in self.loras]
        if unknown:
            raise TrainerError(
                f"{source} has weights for {len(unknown)} layer(s) this network does not train, such as "
                f"{_few(unknown)}.",
                hint="Pick a file trained on the same architecture with the same parts (UNet / text encoder) "
                "and the same conv_dim setting, or start without network_weights.",
                option="network_weights",
            )
        for stem, members in by_stem.items():
            self._check_shapes(cast(LoRAModule, self.loras[stem]), members, source)
        with torch.no_grad():
            for stem, members in by_stem.items():
                module = cast(LoRAModule, self.loras[stem])
                module.lora_down.weight.copy_(members[DOWN])
                module.lora_up.weight.copy_(members[UP])
                module.set_alpha(float(members[ALPHA].float()) if ALPHA in members else None)
        missing = tuple(stem for stem in self.loras if stem not in by_stem)
        return LoadReport(loaded=len(by_stem), missing=missing)

    def load_weights_file(self, path: str | Path) -> LoadReport:
        """Read a ``.safetensors`` LoRA file and load it with :meth:`load_kohya_state_dict`."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise TrainerError(f"network_weights file {path} does not exist.",
                               hint="Check the path, or leave network_weights empty.", option="network_weights")
        return self.load_kohya_state_dict(load_file(str(path)), source=str(path))

    @staticmethod
    def _check_shapes(module: LoRAModule, members: Mapping[str, torch.Tensor], source: str) -> None:
        stem = module.stem
        if DOWN not in members or UP not in members:
            raise TrainerError(f"{source} is incomplete: {stem} lacks lora_down or lora_up.",
                               hint="Re-save or re-download the file.", option="network_weights")
        down, up = members[DOWN], members[UP]
        file_rank = down.shape[0] if down.ndim else -1
        if file_rank != module.rank or up.ndim < 2 or up.shape[1] != module.rank:
            # 3x3 convs take conv_dim; Linear layers and 1x1 convs take network_dim.
            option = "conv_dim" if tuple(module.lora_down.weight.shape[2:]) not in ((), (1, 1)) else "network_dim"
            raise TrainerError(
                f"{source} has rank {file_rank} for {stem}, but this network uses {option} = {module.rank}.",
                hint=f"Set {option} to {file_rank} to continue training this file, or start without network_weights.",
                option="network_weights",
            )
        if down.shape != module.lora_down.weight.shape or up.shape != module.lora_up.weight.shape:
            raise TrainerError(
                f"{source} does not fit this model at {stem}: shapes {tuple(down.shape)} / {tuple(up.shape)}, "
                f"expected {tuple(module.lora_down.weight.shape)} / {tuple(module.lora_up.weight.shape)}.",
                hint="The file was trained on another architecture; pick one trained on this base model's family.",
                option="network_weights",
            )


def _few(names: Sequence[str], count: int = 3) -> str:
    shown = ", ".join(names[:count])
    return shown + (f" (+{len(names) - count} more)" if len(names) > count else "")
