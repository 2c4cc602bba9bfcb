"""A ``lycoris.kohya`` network: the ``lycoris`` package's layer classes over the layers a preset selects.

The maths of every algorithm (LoCon, LoHa, LoKr, IA3, GLoRA, Diag-OFT, BOFT, full, the norm
layers of ``train_norm``, DoRA) is the library's: :func:`create_lycoris_network` builds one
library module per target layer, named with our Kohya stems. :class:`LycorisNetwork` gives them
the interface of :class:`~trainer.networks.lora.LoRANetwork` (apply, remove, param_groups,
kohya_state_dict, load_kohya_state_dict, load_weights_file, set_multiplier, parts), so the loop,
the saver and the resume code treat both alike.

Each library module's own ``state_dict`` already uses the LyCORIS tensor names
(``hada_w1_a``, ``lokr_w1``, ``lora_mid.weight``, ``dora_scale``, ``diff``, ``oft_blocks``, ...),
so a file is ``{stem}.{name}`` for each of them: what ComfyUI, A1111/Forge and the ``lycoris``
package read.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import torch
from torch import nn

from trainer.errors import TrainerError
from trainer.networks.lora import LoadReport, LoRANetwork
from trainer.networks.lycoris_args import LycorisSettings
from trainer.networks.lycoris_presets import LycorisPreset
from trainer.networks.lycoris_targets import CONV, NORM, LycorisTarget, select_targets
from trainer.networks.targets import KeyForPath, check_network_settings, identity_key

# Algorithms whose bypass path (x -> adapter -> added to the base output) gives the same result as
# rebuilding the weight; used automatically on half-precision bases (see _bypass_for).
_BYPASS_SAFE = frozenset({"lora", "locon", "loha", "lokr"})
_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class _Placed:
    """Where a layer's own weight lived before a full-weight module took it over."""

    device: torch.device
    dtype: torch.dtype
    requires_grad: bool


def _module_class(algo: str) -> type[nn.Module]:
    from lycoris.wrapper import network_module_dict

    return network_module_dict[algo]


@cache
def _norm_module_class() -> type[nn.Module]:
    """lycoris' NormModule, with a guard against a torch CPU crash.

    torch's CPU GroupNorm backward for a channels-last input that needs no gradient, with a weight
    that does, segfaults (torch 2.13). That is exactly a trained norm right after the frozen conv_in,
    so on the CPU such inputs are made contiguous first; the result is the same.
    """
    from lycoris.modules.norms import NormModule

    class CpuSafeNormModule(NormModule):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if x.device.type == "cpu" and x.dim() == 4 and not x.is_contiguous():
                x = x.contiguous()
            return super().forward(x, *args, **kwargs)

    return CpuSafeNormModule


def _full_module_class() -> type[nn.Module]:
    from lycoris.modules.full import FullModule

    return FullModule


def _bypass_for(settings: LycorisSettings, layer: nn.Module) -> bool | None:
    """The bypass_mode a layer gets.

    Without bypass the library rebuilds ``W + dW`` in the base weight's dtype and subtracts ``W``
    again; in fp16/bf16 that rounds a young adapter's small update away. The bypass path adds
    the adapter's output instead, which is exact, so half-precision bases get it unless the user
    chose. DoRA needs the rebuilt weight, so it keeps the library's default.
    """
    if settings.bypass_mode is not None:
        return settings.bypass_mode
    weight = getattr(layer, "weight", None)
    if settings.algo in _BYPASS_SAFE and not settings.dora_wd and weight is not None and weight.dtype in _HALF:
        return True
    return None


def _build_module(target: LycorisTarget, settings: LycorisSettings, dim: int, alpha: float | None,
                  conv_dim: int, conv_alpha: float | None, dropout: float) -> nn.Module:
    layer = target.module
    if target.kind == NORM:
        module: nn.Module = _norm_module_class()(
            target.stem, layer, 1.0, rank_dropout=settings.rank_dropout, module_dropout=settings.module_dropout,
            rank_dropout_scale=settings.rank_dropout_scale,
        )
    else:
        rank, scale_alpha = (conv_dim, conv_alpha) if target.kind == CONV else (dim, alpha)
        try:
            module = _module_class(settings.algo)(
                target.stem, layer, 1.0, lora_dim=rank, alpha=scale_alpha, dropout=dropout,
                bypass_mode=_bypass_for(settings, layer), **settings.module_kwargs(),
            )
        except (ValueError, AssertionError, RuntimeError) as problem:
            raise TrainerError(
                f"algo={settings.algo} cannot wrap {target.module_path} ({tuple(layer.weight.shape)}): {problem}",
                hint="Change network_dim / conv_dim (OFT and BOFT need a block size that divides the layer), "
                     "or leave this layer out with a preset.", option="network_args",
            ) from problem
    # Trainable tensors stay float32 on the layer's device, like our LoRA: the optimizer wants
    # full precision, and a full-weight module must sit where its layer's weight is.
    return module.to(device=layer.weight.device, dtype=torch.float32)


class LycorisNetwork(LoRANetwork):
    """Library modules keyed by Kohya stem, grouped by part (``unet``, ``te``, ``te1``, ``te2``)."""

    def __init__(self, modules: Sequence[tuple[LycorisTarget, nn.Module]], settings: LycorisSettings,
                 preset: LycorisPreset) -> None:
        nn.Module.__init__(self)
        self.loras = nn.ModuleDict({target.stem: module for target, module in modules})
        self.part_of: dict[str, str] = {target.stem: target.part for target, _ in modules}
        self.parts: tuple[str, ...] = tuple(dict.fromkeys(self.part_of.values()))
        self.settings = settings
        self.preset = preset
        self._layers: dict[str, nn.Module] = {target.stem: target.module for target, _ in modules}
        self._placed: dict[str, _Placed] = {}
        self._applied = False

    def _modules_of(self, part: str | None = None) -> list[Any]:
        return [module for stem, module in self.loras.items() if part is None or self.part_of[stem] == part]

    def apply(self) -> None:
        """Hook every module into its layer (idempotent). Base weights stay untouched, except that
        ``algo=full`` moves each layer's weight into its module until :meth:`remove`."""
        if self._applied:
            return
        for stem, module in self.loras.items():
            weight = self._layers[stem].weight
            self._placed[stem] = _Placed(weight.device, weight.dtype, weight.requires_grad)
            module.apply_to()
        self._applied = True

    def remove(self) -> None:
        """Give every layer its own forward (and, for ``algo=full``, its own frozen weight) back."""
        if not self._applied:
            return
        for stem, module in reversed(list(self.loras.items())):
            module.restore()
            layer = self._layers[stem]
            bound = layer.__dict__.get("forward")
            if getattr(bound, "__func__", None) is type(layer).forward:
                del layer.forward  # the class's forward shows through again, as before apply()
            if isinstance(module, _full_module_class()):
                # The library restores a CPU copy that requires grad; put back what was there.
                placed = self._placed[stem]
                for name in ("weight", "bias"):
                    tensor = getattr(layer, name, None)
                    if tensor is not None:
                        setattr(layer, name, nn.Parameter(tensor.data.to(placed.device, placed.dtype),
                                                          requires_grad=placed.requires_grad))
        self._applied = False

    def set_multiplier(self, multiplier: float) -> None:
        """Scale every module's effect (1 = as trained, 0 = off)."""
        for module in self._modules_of():
            module.multiplier = float(multiplier)

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The LyCORIS tensors under Kohya stems, copied to the CPU (floats cast to ``dtype`` when given)."""
        out: dict[str, torch.Tensor] = {}
        for stem, module in self.loras.items():
            for name, tensor in module.state_dict().items():
                copied = tensor.detach().to("cpu", copy=True)
                if dtype is not None and copied.is_floating_point():
                    copied = copied.to(dtype)
                out[f"{stem}.{name}"] = copied.contiguous()
        return out

    def load_kohya_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], source: str = "network_weights"
    ) -> LoadReport:
        """Load a file this network could have written (continue training). All or nothing.

        Raises :class:`TrainerError` naming the setting to change when the file holds layers this
        network lacks, another algorithm's tensors, other shapes or another alpha.
        """
        by_stem: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state_dict.items():
            stem, _, member = key.partition(".")
            by_stem.setdefault(stem, {})[member] = tensor
        unknown = [stem for stem in by_stem if stem not in self.loras]
        if unknown:
            raise TrainerError(
                f"{source} has weights for {len(unknown)} layer(s) this network does not train, such as "
                f"{', '.join(unknown[:3])}.",
                hint="Use the preset, train_norm and network_train_* settings the file was trained with, or "
                     "start without network_weights.", option="network_weights")
        for stem, members in by_stem.items():
            self._check_fits(stem, members, source)
        with torch.no_grad():
            for stem, members in by_stem.items():
                cast(nn.Module, self.loras[stem]).load_state_dict(dict(members), strict=True)
        missing = tuple(stem for stem in self.loras if stem not in by_stem)
        return LoadReport(loaded=len(by_stem), missing=missing)

    def _check_fits(self, stem: str, members: Mapping[str, torch.Tensor], source: str) -> None:
        expected = {name: tensor for name, tensor in self.loras[stem].state_dict().items()}
        algo = self.settings.algo
        if set(members) != set(expected):
            raise TrainerError(
                f"{source} stores {stem} as {sorted(members)}, but algo={algo} with these settings stores "
                f"{sorted(expected)}.",
                hint="Set algo, dora_wd, use_tucker, factor / full_matrix (LoKr) and rescaled (OFT) as the file "
                     "was trained, or start without network_weights.", option="network_weights")
        for name, tensor in members.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise TrainerError(
                    f"{source} has {stem}.{name} of shape {tuple(tensor.shape)}, this network "
                    f"{tuple(expected[name].shape)}.",
                    hint="Use the network_dim / conv_dim (and factor for LoKr) the file was trained with, and a "
                         "base model of the same architecture.", option="network_weights")
        if "alpha" in members and algo not in ("diag-oft", "boft"):
            file_alpha, own_alpha = float(members["alpha"].float()), float(expected["alpha"].float())
            if abs(file_alpha - own_alpha) > 1e-6 * max(1.0, abs(own_alpha)):
                raise TrainerError(
                    f"{source} has alpha {file_alpha:g} for {stem}, this network {own_alpha:g}.",
                    hint="Set network_alpha (or conv_alpha for 3x3 convolutions) to the file's alpha.",
                    option="network_weights")


def create_lycoris_network(
    unet: nn.Module | None,
    text_encoders: Sequence[nn.Module],
    te_prefixes: Sequence[str],
    settings: LycorisSettings,
    preset: LycorisPreset,
    unet_key_for_path: KeyForPath = identity_key,
    dim: int = 16,
    alpha: float | None = 1.0,
    dropout: float | None = None,
    train_unet: bool = True,
    train_text_encoder: bool = True,
) -> LycorisNetwork:
    """Build the network (not applied yet: call :meth:`LycorisNetwork.apply`).

    ``dim`` / ``alpha`` are network_dim / network_alpha; ``conv_dim`` / ``conv_alpha`` default to
    them, as in LyCORIS. ``dropout`` (network_dropout) is used unless network_args has ``dropout``.
    """
    check_network_settings(text_encoders, te_prefixes, dim, train_unet, train_text_encoder)
    targets = select_targets(unet, text_encoders, te_prefixes, preset, unet_key_for_path,
                             train_unet, train_text_encoder, settings.train_norm)
    conv_dim = settings.conv_dim or dim
    conv_alpha = settings.conv_alpha if settings.conv_alpha is not None else alpha
    drop = settings.dropout if settings.dropout is not None else float(dropout or 0.0)
    modules = [(target, _build_module(target, settings, dim, alpha, conv_dim, conv_alpha, drop))
               for target in targets]
    return LycorisNetwork(modules, settings, preset)
