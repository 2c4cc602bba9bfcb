"""Resize a kohya LoRA / LoCon file to a lower rank by SVD.

For each module the applied delta is ``W = up @ down * (alpha / r)`` (a conv's ``down`` is
flattened to ``[r, in * kh * kw]``). Its best rank-R approximation (Eckart-Young) is the
truncated SVD ``U_R S_R Vh_R``; we store ``up = U_R sqrt(S_R)``, ``down = sqrt(S_R) Vh_R`` and
``alpha = R``, so ``alpha / R = 1`` and the factors carry the whole scale. Splitting ``sqrt(S)``
over both factors keeps their magnitudes alike, which matters when saving in fp16.

The SVD is taken of the small ``r x r`` core after QR of both factors, which is exact and
avoids decomposing the full ``out x in`` matrix.

Command line::

    python -m trainer.tools.resize_lora --model IN --save_to OUT --new_rank R \
        [--new_conv_rank R] [--dynamic_method sv_ratio|sv_fro|sv_cumulative --dynamic_param X] \
        [--save_precision fp16|bf16|float] [--device cpu|cuda] [--overwrite] [--debug]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.errors import TrainerError
from trainer.tools import report_error
from trainer.saving.lora_file import read_lora_file, save_lora_file
from trainer.tools.lora_info import family_of, group_modules

DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")
DOWN, UP, ALPHA = "lora_down.weight", "lora_up.weight", "alpha"


@dataclass(frozen=True)
class ModuleResize:
    """What happened to one module: ranks before/after and the share of the norm kept."""

    stem: str
    old_rank: int
    new_rank: int
    retained_fro: float  # percent of the Frobenius norm of the delta kept


@dataclass
class ResizeReport:
    """Per-module results and the file written."""

    save_to: Path
    modules: list[ModuleResize] = field(default_factory=list)

    def summary(self) -> str:
        """One line: module count, rank range and retained norm (mean / min)."""
        if not self.modules:
            return "no modules resized"
        kept = [m.retained_fro for m in self.modules]
        ranks = [m.new_rank for m in self.modules]
        return (f"{len(self.modules)} modules resized to rank {min(ranks)}..{max(ranks)}; "
                f"retained Frobenius norm mean {sum(kept) / len(kept):.2f}%, min {min(kept):.2f}%")


def choose_rank(singular: torch.Tensor, max_rank: int, method: str | None, param: float | None) -> int:
    """How many singular values to keep (at least 1, at most ``max_rank``).

    ``sv_ratio``: keep values at least ``largest / param``; ``sv_fro``: the fewest whose
    Frobenius norm reaches the fraction ``param`` of the total; ``sv_cumulative``: the fewest
    whose sum reaches the fraction ``param`` of the total sum.
    """
    s = singular.double()
    if method is None:
        rank = max_rank
    elif method == "sv_ratio":
        rank = int((s >= s[0] / float(param)).sum().item()) if s[0] > 0 else 1
    elif method in ("sv_fro", "sv_cumulative"):
        values = s.square() if method == "sv_fro" else s
        total = float(values.sum())
        if total <= 0:
            rank = 1
        else:
            share = torch.cumsum(values, 0) / total
            if method == "sv_fro":
                share = share.sqrt()  # a norm, not a squared norm, is compared with param
            rank = int((share < float(param) - 1e-12).sum().item()) + 1
    else:
        raise ValueError(f"unknown dynamic method {method!r}")
    return max(1, min(rank, max_rank, len(s)))


def _low_rank_svd(up: torch.Tensor, down: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of ``up @ down * scale`` (``up`` [out, r], ``down`` [r, in]) without forming the product."""
    q_up, r_up = torch.linalg.qr(up)
    q_down, r_down = torch.linalg.qr(down.T)
    u_core, s, vh_core = torch.linalg.svd(r_up @ r_down.T * scale)
    return q_up @ u_core, s, vh_core @ q_down.T


def resize_module(members: dict[str, torch.Tensor], new_rank: int, method: str | None, param: float | None,
                  device: str) -> tuple[dict[str, torch.Tensor], int, int, float]:
    """New ``lora_down``/``lora_up``/``alpha`` for one module, with old rank, new rank, retained %."""
    down, up = members[DOWN], members[UP]
    old_rank = down.shape[0]
    alpha = float(members[ALPHA]) if ALPHA in members else float(old_rank)  # missing alpha means alpha = r
    down_flat = down.to(device, torch.float64).reshape(old_rank, -1)
    up_flat = up.to(device, torch.float64).reshape(up.shape[0], old_rank)
    u, s, vh = _low_rank_svd(up_flat, down_flat, alpha / old_rank)
    rank = choose_rank(s, min(new_rank, old_rank), method, param)
    total = float(s.square().sum())
    retained = 100.0 * math.sqrt(float(s[:rank].square().sum()) / total) if total > 0 else 100.0
    root = s[:rank].sqrt()
    new_up = (u[:, :rank] * root).reshape(up.shape[0], rank, *up.shape[2:])
    new_down = (root[:, None] * vh[:rank]).reshape(rank, *down.shape[1:])
    out = {DOWN: new_down.cpu(), UP: new_up.cpu(), ALPHA: torch.tensor(float(rank))}
    return out, old_rank, rank, retained


def _check_paths(model: Path, save_to: Path, overwrite: bool) -> None:
    if not model.is_file():
        raise TrainerError(f"--model {model} does not exist.", hint="Give the path of a .safetensors LoRA.",
                           option="model")
    if save_to.exists() and save_to.resolve() == model.resolve():
        raise TrainerError(f"--save_to {save_to} is the input file; the input is never overwritten.",
                           hint="Choose another file name for --save_to.", option="save_to")
    if save_to.exists() and not overwrite:
        raise TrainerError(f"--save_to {save_to} already exists.",
                           hint="Choose another name, or pass --overwrite to replace it.", option="save_to")


def _updated_metadata(metadata: dict[str, str], dims: list[int], conv_dims: list[int], method: str | None,
                      param: float | None) -> dict[str, str]:
    meta = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}  # hashes are recomputed
    old_dim = metadata.get("ss_network_dim", "?")
    if dims:
        value = str(dims[0]) if len(set(dims)) == 1 else "Dynamic"
        meta["ss_network_dim"] = value
        meta["ss_network_alpha"] = value  # alpha == rank for every resized module
    if conv_dims and "ss_network_args" in meta:
        try:
            args = json.loads(meta["ss_network_args"])
        except json.JSONDecodeError:
            args = None
        if isinstance(args, dict) and "conv_dim" in args:
            value = str(conv_dims[0]) if len(set(conv_dims)) == 1 else "Dynamic"
            args["conv_dim"] = args["conv_alpha"] = value
            meta["ss_network_args"] = json.dumps(args)
    how = f"dynamic resize with {method}={param}" if method else "resize"
    note = f"{how}: rank {old_dim} -> {meta.get('ss_network_dim', '?')}"
    previous = meta.get("ss_training_comment")
    meta["ss_training_comment"] = f"{previous}; {note}" if previous else note
    return meta


def resize_lora(model: str | Path, save_to: str | Path, new_rank: int, new_conv_rank: int | None = None,
                dynamic_method: str | None = None, dynamic_param: float | None = None,
                save_precision: str | None = None, device: str = "cpu", overwrite: bool = False) -> ResizeReport:
    """Resize every LoRA/LoCon module of ``model`` and write the result to ``save_to``.

    3x3 conv modules (LoCon) use ``new_conv_rank`` (default ``new_rank``). Ranks never grow:
    a module already at or below the target keeps its rank (its weights are re-factored).
    ``save_precision`` None keeps float32. Raises :class:`TrainerError` for bad options,
    a missing input, an existing output, or LyCORIS families other than plain LoRA.
    """
    model, save_to = Path(model), Path(save_to)
    _check_paths(model, save_to, overwrite)
    if new_rank < 1 or (new_conv_rank is not None and new_conv_rank < 1):
        raise TrainerError(f"--new_rank must be at least 1, got {new_rank}.", hint="Use e.g. --new_rank 8.",
                           option="new_rank")
    if dynamic_method is not None:
        if dynamic_method not in DYNAMIC_METHODS:
            raise TrainerError(f"--dynamic_method {dynamic_method!r} is not known.",
                               hint=f"Use one of {', '.join(DYNAMIC_METHODS)}.", option="dynamic_method")
        if dynamic_param is None or dynamic_param <= 0 or (dynamic_method != "sv_ratio" and dynamic_param > 1):
            raise TrainerError(f"--dynamic_param {dynamic_param} does not suit {dynamic_method}.",
                               hint="sv_ratio takes a ratio > 0 (e.g. 8); sv_fro and sv_cumulative a fraction "
                                    "in (0, 1] (e.g. 0.9).", option="dynamic_param")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainerError("--device cuda was asked for but no CUDA GPU is visible.", hint="Use --device cpu.",
                           option="device")
    tensors, metadata = read_lora_file(model)
    modules = group_modules(tensors)
    foreign = sorted({family_of(m) for members in modules.values() for m in members} - {"lora", "alpha"})
    if foreign:
        raise TrainerError(f"{model} holds {', '.join(foreign)} weights; only plain LoRA / LoCon can be resized.",
                           hint="Resize LoRA or LoCon files; LoHa, LoKr, DoRA and others have no SVD resize here.",
                           option="model")
    report = ResizeReport(save_to)
    out: dict[str, torch.Tensor] = {}
    dims: list[int] = []
    conv_dims: list[int] = []
    for stem, members in modules.items():
        if DOWN not in members or UP not in members:
            raise TrainerError(f"{model}: module {stem} lacks lora_down or lora_up.",
                               hint="The file is incomplete; re-save it from the trainer.", option="model")
        is_big_conv = members[DOWN].dim() == 4 and members[DOWN].shape[2:] != (1, 1)
        target = (new_conv_rank or new_rank) if is_big_conv else new_rank
        new, old_rank, rank, retained = resize_module(members, target, dynamic_method, dynamic_param, device)
        (conv_dims if is_big_conv else dims).append(rank)
        for member, tensor in new.items():
            out[f"{stem}.{member}"] = tensor
        report.modules.append(ModuleResize(stem, old_rank, rank, retained))
    save_lora_file(save_to, out, _updated_metadata(metadata, dims, conv_dims, dynamic_method, dynamic_param),
                   save_precision)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; errors print without a traceback unless ``--debug``."""
    parser = argparse.ArgumentParser(prog="python -m trainer.tools.resize_lora", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="input LoRA (.safetensors); never modified")
    parser.add_argument("--save_to", required=True, help="output file")
    parser.add_argument("--new_rank", type=int, required=True, help="target (or, when dynamic, maximum) rank")
    parser.add_argument("--new_conv_rank", type=int, default=None, help="rank for 3x3 conv (LoCon) modules")
    parser.add_argument("--dynamic_method", choices=DYNAMIC_METHODS, default=None)
    parser.add_argument("--dynamic_param", type=float, default=None)
    parser.add_argument("--save_precision", choices=("fp16", "bf16", "float"), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --save_to (never the input)")
    parser.add_argument("--verbose", action="store_true", help="print every module, not only the summary")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        report = resize_lora(args.model, args.save_to, args.new_rank, args.new_conv_rank, args.dynamic_method,
                             args.dynamic_param, args.save_precision, args.device, args.overwrite)
    except TrainerError as error:
        return report_error(error, args.debug)
    for module in report.modules:
        if args.verbose or len(report.modules) <= 40:
            print(f"{module.stem}: rank {module.old_rank} -> {module.new_rank}, "
                  f"retained {module.retained_fro:.2f}%")
    print(report.summary())
    print(f"saved {report.save_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
