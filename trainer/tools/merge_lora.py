"""Merge LoRA / LoCon files into a base model and save a single-file checkpoint (original layout).

The base is loaded with the trainer's own loader (a diffusers folder or a single file; pass
``--model_config`` for an offline single file). Each LoRA module is matched to its layer by
the same kohya stems training writes, and ``ratio * up @ down * alpha / r`` is added to the
layer's weight (computed in float64, then cast back). The result is written in the original
(LDM/SGM) layout that A1111, ComfyUI and diffusers' ``from_single_file`` read.

Without ``--sd_model`` the LoRAs are merged into one LoRA instead: ``--concat`` stacks the
factors (rank = sum of ranks, exact), otherwise each module's summed delta is reduced by SVD
to ``--new_rank`` (its best approximation of that rank). Both write ``alpha = rank``.

Command line::

    python -m trainer.tools.merge_lora --sd_model BASE --models A.safetensors [B ...] \
        [--ratios 0.8 0.5] --save_to OUT.safetensors [--model_config DIR] \
        [--save_precision fp16|bf16|float] [--overwrite] [--debug]
    python -m trainer.tools.merge_lora --models A B [--ratios ..] --save_to OUT (--concat | --new_rank R)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch
import torch

from trainer.errors import TrainerError
from trainer.tools import report_error
from trainer.saving.lora_file import SAVE_DTYPES, read_lora_file, save_lora_file
from trainer.tools.lora_info import family_of, group_modules


@dataclass
class MergeReport:
    """How many modules of each LoRA were merged, and the file written."""

    save_to: Path
    merged: dict[str, int] = field(default_factory=dict)


def _write_checkpoint(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    # Temp file in the same folder + rename: a crash never leaves a half-written checkpoint.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        safetensors.torch.save_file(tensors, temp, metadata={"format": "pt"})
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def merge_into_model(model, lora_path: Path, ratio: float) -> int:
    """Add one LoRA file's deltas (times ``ratio``) to a loaded model's layers; returns modules merged."""
    from trainer.networks.targets import collect_targets

    targets = collect_targets(model.unet, model.text_encoders, model.adapter.te_prefixes,
                              model.adapter.unet_lora_path, 1, 1, True, True)
    layers = {t.stem: t.module for t in targets}
    modules = _plain_lora_modules(lora_path)
    unknown = [stem for stem in modules if stem not in layers]
    if unknown:
        raise TrainerError(f"{lora_path}: {len(unknown)} modules match no layer of the base model, e.g. {unknown[0]}.",
                           hint="Use the base model (SD1/SDXL) the LoRA was trained on.", option="models")
    with torch.no_grad():
        for stem, members in modules.items():
            down, up = members["lora_down.weight"].double(), members["lora_up.weight"].double()
            rank = down.shape[0]
            alpha = float(members["alpha"]) if "alpha" in members else float(rank)  # missing alpha means alpha = r
            weight = layers[stem].weight
            delta = up.reshape(up.shape[0], rank) @ down.reshape(rank, -1) * (alpha / rank * ratio)
            weight.copy_((weight.double() + delta.reshape(weight.shape)).to(weight.dtype))
    return len(modules)


def merge_loras(models: Sequence[str | Path], save_to: str | Path, ratios: Sequence[float] | None = None,
                concat: bool = False, new_rank: int | None = None, save_precision: str | None = None,
                overwrite: bool = False) -> MergeReport:
    """Merge LoRA / LoCon files into one LoRA: exact ``concat`` or SVD to ``new_rank``."""
    from trainer.tools.resize_lora import _low_rank_svd

    save_to = Path(save_to)
    ratios = list(ratios) if ratios else [1.0] * len(models)
    _check_common(models, ratios, save_to, overwrite, save_precision)
    if not concat and (new_rank is None or new_rank < 1):
        raise TrainerError("Merging LoRAs into one needs --concat or --new_rank R (R >= 1).",
                           hint="Add --concat for an exact merge, or --new_rank 32 to reduce by SVD.", option="new_rank")
    stacked: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    report = MergeReport(save_to)
    for path, ratio in zip(models, ratios):
        modules = _plain_lora_modules(Path(path))
        for stem, members in modules.items():
            down, up = members["lora_down.weight"].double(), members["lora_up.weight"].double()
            rank = down.shape[0]
            alpha = float(members["alpha"]) if "alpha" in members else float(rank)
            ups, downs = stacked.setdefault(stem, ([], []))
            if downs and downs[0].shape[1:] != down.shape[1:]:
                raise TrainerError(f"{path}: module {stem} has another shape than in the earlier files.",
                                   hint="Merge LoRAs made for the same base model.", option="models")
            # The scale goes into up, so the stacked factors need alpha = total rank (scale 1).
            ups.append(up * (alpha / rank * float(ratio)))
            downs.append(down)
        report.merged[str(path)] = len(modules)
    tensors: dict[str, torch.Tensor] = {}
    for stem, (ups, downs) in stacked.items():
        up, down = torch.cat(ups, dim=1), torch.cat(downs, dim=0)
        if not concat:
            rank = min(int(new_rank or 1), down.shape[0])
            u, s, vh = _low_rank_svd(up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1), 1.0)
            root = s[:rank].sqrt()
            up = (u[:, :rank] * root).reshape(up.shape[0], rank, *up.shape[2:])
            down = (root[:, None] * vh[:rank]).reshape(rank, *down.shape[1:])
        tensors[f"{stem}.lora_up.weight"] = up
        tensors[f"{stem}.lora_down.weight"] = down
        tensors[f"{stem}.alpha"] = torch.tensor(float(down.shape[0]))
    ranks = {int(t.shape[0]) for k, t in tensors.items() if k.endswith("lora_down.weight")}
    dim = str(ranks.pop()) if len(ranks) == 1 else "Dynamic"
    how = "concat" if concat else f"svd to rank {new_rank}"
    save_lora_file(save_to, tensors, {"ss_network_module": "networks.lora", "ss_network_dim": dim,
                                      "ss_network_alpha": dim, "ss_training_comment": f"merged ({how}) from "
                                      + ", ".join(f"{Path(p).name}x{r:g}" for p, r in zip(models, ratios))},
                   save_precision)
    return report


def _plain_lora_modules(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    tensors, _ = read_lora_file(path)
    modules = group_modules(tensors)
    foreign = sorted({family_of(m) for members in modules.values() for m in members} - {"lora", "alpha"})
    if foreign:
        raise TrainerError(f"{path} holds {', '.join(foreign)} weights; only LoRA / LoCon merge here.",
                           hint="Merge LyCORIS files with ComfyUI or the lycoris package.", option="models")
    return modules


def _check_common(models: Sequence[str | Path], ratios: Sequence[float], save_to: Path, overwrite: bool,
                  save_precision: str | None, base: str | Path | None = None) -> None:
    if len(ratios) != len(models):
        raise TrainerError(f"{len(models)} LoRA files but {len(ratios)} ratios.",
                           hint="Give one --ratios value per file in --models.", option="ratios")
    inputs = [p for p in [base, *models] if p is not None]
    if save_to.exists() and save_to.resolve() in {Path(p).resolve() for p in inputs}:
        raise TrainerError(f"--save_to {save_to} is one of the inputs; inputs are never overwritten.",
                           hint="Choose another file name for --save_to.", option="save_to")
    if save_to.exists() and not overwrite:
        raise TrainerError(f"--save_to {save_to} already exists.",
                           hint="Choose another name, or pass --overwrite to replace it.", option="save_to")
    if save_precision not in SAVE_DTYPES:
        raise TrainerError(f"--save_precision {save_precision!r} is not known.", hint="Use fp16, bf16 or float.",
                           option="save_precision")
    for path in inputs:
        if not Path(path).exists():
            raise TrainerError(f"{path} does not exist.", hint="Check the path.", option="models")


def merge_lora(sd_model: str | Path, models: Sequence[str | Path], save_to: str | Path,
               ratios: Sequence[float] | None = None, model_config: str | None = None,
               save_precision: str | None = None, overwrite: bool = False) -> MergeReport:
    """Merge ``models`` (with ``ratios``, default 1.0 each) into ``sd_model``; write ``save_to``."""
    from trainer.checkpoint_layout import PipelineWeights, UNetLayout, to_single_file
    from trainer.models.loader import ModelSpec, load_model

    save_to = Path(save_to)
    ratios = list(ratios) if ratios else [1.0] * len(models)
    _check_common(models, ratios, save_to, overwrite, save_precision, sd_model)
    model = load_model(ModelSpec(pretrained_model_name_or_path=str(sd_model), model_config=model_config))
    report = MergeReport(save_to)
    for path, ratio in zip(models, ratios):
        report.merged[str(path)] = merge_into_model(model, Path(path), float(ratio))
    encoders = model.text_encoders
    weights = PipelineWeights(
        unet=model.unet.state_dict(), unet_layout=UNetLayout.from_config(model.unet.config),
        vae=model.vae.state_dict(), text_encoder=encoders[0].state_dict(),
        text_encoder_2=encoders[1].state_dict() if len(encoders) > 1 else None,
    )
    dtype = SAVE_DTYPES[save_precision]
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in to_single_file(weights).items()}
    _write_checkpoint(save_to, tensors)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; errors print without a traceback unless ``--debug``."""
    parser = argparse.ArgumentParser(prog="python -m trainer.tools.merge_lora", description=__doc__.split("\n")[0])
    parser.add_argument("--sd_model", default=None, help="base model: diffusers folder or single file; "
                        "without it the LoRAs are merged into one LoRA")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--ratios", nargs="+", type=float, default=None)
    parser.add_argument("--save_to", required=True)
    parser.add_argument("--model_config", default=None, help="local config folder for a single-file base")
    parser.add_argument("--save_precision", choices=("fp16", "bf16", "float"), default=None)
    parser.add_argument("--concat", action="store_true", help="LoRA merge: stack ranks (exact)")
    parser.add_argument("--new_rank", type=int, default=None, help="LoRA merge: SVD to this rank")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.sd_model:
            report = merge_lora(args.sd_model, args.models, args.save_to, args.ratios, args.model_config,
                                args.save_precision, args.overwrite)
        else:
            report = merge_loras(args.models, args.save_to, args.ratios, args.concat, args.new_rank,
                                 args.save_precision, args.overwrite)
    except TrainerError as error:
        return report_error(error, args.debug)
    for path, count in report.merged.items():
        print(f"merged {count} modules from {path}")
    print(f"saved {report.save_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
