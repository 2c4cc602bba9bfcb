"""Extract a LoRA that approximates the difference between two checkpoints (tuned - original).

Both models are loaded with the trainer's own loader (diffusers folders or single files; pass
``--model_config`` for offline single files), the same kohya targets as training are taken
(LoCon's 3x3 convs only with ``--conv_dim``), and each module's weight difference is replaced by
its best rank-``dim`` approximation (truncated SVD): ``up = U sqrt(S)``, ``down = sqrt(S) Vh``,
``alpha = rank``. A part (UNet, each text encoder) whose largest absolute difference is at most
``--min_diff`` is left out, as sd-scripts does, so an untouched text encoder adds no keys.

Command line::

    python -m trainer.tools.extract_lora --model_org BASE --model_tuned TUNED --dim R \
        [--conv_dim R] --save_to OUT [--model_config DIR] [--min_diff X] \
        [--save_precision fp16|bf16|float] [--device cpu|cuda] [--overwrite] [--debug]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.errors import TrainerError
from trainer.tools import report_error
from trainer.saving.lora_file import save_lora_file


@dataclass
class ExtractReport:
    """Which parts were extracted, module count and the file written."""

    save_to: Path
    parts: list[str] = field(default_factory=list)
    skipped_parts: list[str] = field(default_factory=list)
    modules: int = 0


def low_rank_factors(diff: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(up, down)`` in the layer's LoRA shapes with ``up @ down`` the best rank-``rank`` approximation."""
    out_dim = diff.shape[0]
    flat = diff.reshape(out_dim, -1).double()
    u, s, vh = torch.linalg.svd(flat, full_matrices=False)
    rank = min(rank, s.shape[0])
    root = s[:rank].sqrt()
    up, down = u[:, :rank] * root, root[:, None] * vh[:rank]
    if diff.dim() == 4:
        return up.reshape(out_dim, rank, 1, 1), down.reshape(rank, *diff.shape[1:])
    return up, down


def _load(path: str, model_config: str | None, option: str):
    from trainer.models.loader import ModelSpec, load_model

    if not Path(path).exists():
        raise TrainerError(f"--{option} {path} does not exist.", hint="Give a diffusers folder or a checkpoint file.",
                           option=option)
    return load_model(ModelSpec(pretrained_model_name_or_path=path, model_config=model_config))


def extract_lora(model_org: str | Path, model_tuned: str | Path, save_to: str | Path, dim: int,
                 conv_dim: int | None = None, model_config: str | None = None, min_diff: float = 0.01,
                 save_precision: str | None = None, device: str = "cpu", overwrite: bool = False) -> ExtractReport:
    """Write a kohya LoRA (LoCon with ``conv_dim``) approximating ``model_tuned - model_org``."""
    from trainer.networks.targets import collect_targets

    save_to = Path(save_to)
    if save_to.exists() and not overwrite:
        raise TrainerError(f"--save_to {save_to} already exists.",
                           hint="Choose another name, or pass --overwrite to replace it.", option="save_to")
    if dim < 1 or (conv_dim is not None and conv_dim < 1):
        raise TrainerError(f"--dim / --conv_dim must be at least 1 (got {dim}, {conv_dim}).",
                           hint="Use e.g. --dim 32.", option="dim")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainerError("--device cuda was asked for but no CUDA GPU is visible.", hint="Use --device cpu.",
                           option="device")
    org = _load(str(model_org), model_config, "model_org")
    tuned = _load(str(model_tuned), model_config, "model_tuned")
    if org.family != tuned.family:
        raise TrainerError(f"--model_org is {org.family} but --model_tuned is {tuned.family}.",
                           hint="Extract between two models of the same family.", option="model_tuned")

    def targets(model):
        return collect_targets(model.unet, model.text_encoders, model.adapter.te_prefixes,
                               model.adapter.unet_lora_path, dim, conv_dim, True, True)

    org_by_stem = {t.stem: t for t in targets(org)}
    by_part: dict[str, list[tuple[str, torch.Tensor, bool]]] = {}
    for target in targets(tuned):
        base = org_by_stem.get(target.stem)
        if base is None or base.module.weight.shape != target.module.weight.shape:
            raise TrainerError(f"Layer {target.module_path} differs in shape between the two models.",
                               hint="The models must share one architecture and size.", option="model_tuned")
        diff = target.module.weight.detach().to(device, torch.float64) - base.module.weight.detach().to(device, torch.float64)
        by_part.setdefault(target.part, []).append((target.stem, diff, target.uses_conv_rank))
    report = ExtractReport(save_to)
    tensors: dict[str, torch.Tensor] = {}
    for part, diffs in by_part.items():
        largest = max(float(d.abs().max()) for _, d, _ in diffs)
        if largest <= min_diff:
            report.skipped_parts.append(part)  # no real change: keys here would only add noise
            continue
        report.parts.append(part)
        for stem, diff, is_conv in diffs:
            up, down = low_rank_factors(diff, int(conv_dim) if is_conv else dim)
            tensors[f"{stem}.lora_up.weight"] = up.cpu()
            tensors[f"{stem}.lora_down.weight"] = down.cpu()
            tensors[f"{stem}.alpha"] = torch.tensor(float(down.shape[0]))
            report.modules += 1
    if not tensors:
        raise TrainerError(f"The models differ by at most {min_diff} everywhere: nothing to extract.",
                           hint="Check that --model_tuned is the fine-tuned model, or lower --min_diff.",
                           option="min_diff")
    metadata = {
        "ss_network_module": "networks.lora", "ss_network_dim": str(dim), "ss_network_alpha": str(dim),
        "ss_training_comment": f"extracted from {Path(model_tuned).name} - {Path(model_org).name}",
        "ss_base_model_version": org.adapter.base_model_version,
    }
    if conv_dim:
        metadata["ss_network_args"] = json.dumps({"conv_dim": str(conv_dim), "conv_alpha": str(conv_dim)})
    save_lora_file(save_to, tensors, metadata, save_precision)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; errors print without a traceback unless ``--debug``."""
    parser = argparse.ArgumentParser(prog="python -m trainer.tools.extract_lora", description=__doc__.split("\n")[0])
    parser.add_argument("--model_org", required=True)
    parser.add_argument("--model_tuned", required=True)
    parser.add_argument("--save_to", required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--conv_dim", type=int, default=None)
    parser.add_argument("--model_config", default=None, help="local config folder for single-file models")
    parser.add_argument("--min_diff", type=float, default=0.01)
    parser.add_argument("--save_precision", choices=("fp16", "bf16", "float"), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = extract_lora(args.model_org, args.model_tuned, args.save_to, args.dim, args.conv_dim,
                              args.model_config, args.min_diff, args.save_precision, args.device, args.overwrite)
    except TrainerError as error:
        return report_error(error, args.debug)
    print(f"extracted {report.modules} modules from {', '.join(report.parts)}"
          + (f" (unchanged, left out: {', '.join(report.skipped_parts)})" if report.skipped_parts else ""))
    print(f"saved {report.save_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
