"""Convert LoRA files between kohya keys and diffusers/PEFT keys.

kohya: ``lora_unet_<path_with_underscores>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``.
diffusers/PEFT: ``unet.<dotted.module.path>.lora_A.weight`` / ``.lora_B.weight`` (text encoders
``text_encoder.`` / ``text_encoder_2.``), with no alpha: PEFT's scale is lora_alpha / r, so the
kohya scale ``alpha / r`` is folded into ``lora_B`` and the way back writes ``alpha = r``. The
applied delta is the same in both directions.

Underscored kohya stems cannot be turned back into dotted paths by string rules (module names
hold underscores, and SDXL stems use the original layout), so the base model is loaded to list
its layers (``--sd_model``, plus ``--model_config`` for an offline single file).

Command line::

    python -m trainer.tools.convert_lora --model IN --save_to OUT --to diffusers|kohya \
        --sd_model BASE [--model_config DIR] [--save_precision fp16|bf16|float] [--overwrite] [--debug]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.errors import TrainerError
from trainer.tools import report_error
from trainer.saving.lora_file import read_lora_file, save_lora_file
from trainer.tools.lora_info import family_of, group_modules

TARGET_FORMATS = ("diffusers", "kohya")
_PART_PREFIX = {"lora_unet": "unet", "lora_te": "text_encoder", "lora_te1": "text_encoder",
                "lora_te2": "text_encoder_2"}


@dataclass(frozen=True)
class ConvertReport:
    """The file written, its format and how many modules it holds."""

    save_to: Path
    to: str
    modules: int


def layer_names(model) -> dict[str, str]:
    """``{kohya stem: diffusers/PEFT module name}`` for every layer a LoRA/LoCon can target."""
    from trainer.networks.targets import collect_targets

    targets = collect_targets(model.unet, model.text_encoders, model.adapter.te_prefixes,
                              model.adapter.unet_lora_path, 1, 1, True, True)
    names = {}
    for target in targets:
        prefix = next(p for p in sorted(_PART_PREFIX, key=len, reverse=True) if target.stem.startswith(p + "_"))
        names[target.stem] = f"{_PART_PREFIX[prefix]}.{target.module_path}"
    return names


def kohya_to_diffusers(tensors: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    """PEFT-style tensors with each module's ``alpha / r`` folded into ``lora_B``."""
    out = {}
    for stem, members in group_modules(tensors).items():
        if stem not in names:
            raise TrainerError(f"Module {stem} matches no layer of the base model.",
                               hint="Use the base model (SD1/SDXL) the LoRA was trained on.", option="sd_model")
        down, up = members["lora_down.weight"], members["lora_up.weight"]
        rank = down.shape[0]
        alpha = float(members["alpha"]) if "alpha" in members else float(rank)
        out[f"{names[stem]}.lora_A.weight"] = down
        out[f"{names[stem]}.lora_B.weight"] = (up.double() * (alpha / rank)).to(up.dtype)
    return out


def diffusers_to_kohya(tensors: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    """kohya tensors with ``alpha = r`` (the scale already lives in ``lora_B``)."""
    stems = {name: stem for stem, name in names.items()}
    out = {}
    for key, tensor in tensors.items():
        for suffix, member in ((".lora_A.weight", "lora_down.weight"), (".lora_B.weight", "lora_up.weight")):
            if key.endswith(suffix):
                name = key[: -len(suffix)]
                if name not in stems:
                    raise TrainerError(f"Key {key} matches no layer of the base model.",
                                       hint="Use the base model the LoRA was made for.", option="sd_model")
                out[f"{stems[name]}.{member}"] = tensor
                if member == "lora_down.weight":
                    out[f"{stems[name]}.alpha"] = torch.tensor(float(tensor.shape[0]))
                break
        else:
            raise TrainerError(f"Key {key} is not a diffusers/PEFT LoRA key (lora_A / lora_B).",
                               hint="Only plain LoRA files convert; check --to.", option="model")
    return out


def convert_lora(model: str | Path, save_to: str | Path, to: str, sd_model: str | Path,
                 model_config: str | None = None, save_precision: str | None = None,
                 overwrite: bool = False) -> ConvertReport:
    """Convert ``model`` to the ``to`` format (``diffusers`` or ``kohya``) and write ``save_to``."""
    from trainer.models.loader import ModelSpec, load_model

    model, save_to = Path(model), Path(save_to)
    if to not in TARGET_FORMATS:
        raise TrainerError(f"--to {to!r} is not known.", hint="Use --to diffusers or --to kohya.", option="to")
    if not model.is_file():
        raise TrainerError(f"--model {model} does not exist.", hint="Give a .safetensors LoRA.", option="model")
    if save_to.exists() and (save_to.resolve() == model.resolve() or not overwrite):
        raise TrainerError(f"--save_to {save_to} already exists (the input is never overwritten).",
                           hint="Choose another name, or pass --overwrite to replace another file.", option="save_to")
    tensors, metadata = read_lora_file(model)
    if to == "diffusers":
        foreign = sorted({family_of(m) for ms in group_modules(tensors).values() for m in ms} - {"lora", "alpha"})
        if foreign:
            raise TrainerError(f"{model} holds {', '.join(foreign)} weights; only LoRA / LoCon convert.",
                               hint="diffusers cannot load LyCORIS families other than LoRA.", option="model")
    base = load_model(ModelSpec(pretrained_model_name_or_path=str(sd_model), model_config=model_config))
    names = layer_names(base)
    out = kohya_to_diffusers(tensors, names) if to == "diffusers" else diffusers_to_kohya(tensors, names)
    meta = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}
    if to == "kohya" and "ss_network_dim" not in meta:
        dims = {int(v.shape[0]) for k, v in out.items() if k.endswith("lora_down.weight")}
        if len(dims) == 1:
            meta["ss_network_dim"] = meta["ss_network_alpha"] = str(dims.pop())
    save_lora_file(save_to, out, meta, save_precision)
    return ConvertReport(save_to, to, len(out) // (2 if to == "diffusers" else 3))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; errors print without a traceback unless ``--debug``."""
    parser = argparse.ArgumentParser(prog="python -m trainer.tools.convert_lora", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--save_to", required=True)
    parser.add_argument("--to", required=True, choices=TARGET_FORMATS)
    parser.add_argument("--sd_model", required=True, help="the base model, to name its layers")
    parser.add_argument("--model_config", default=None)
    parser.add_argument("--save_precision", choices=("fp16", "bf16", "float"), default=None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = convert_lora(args.model, args.save_to, args.to, args.sd_model, args.model_config,
                              args.save_precision, args.overwrite)
    except TrainerError as error:
        return report_error(error, args.debug)
    print(f"converted {report.modules} modules to {report.to}: {report.save_to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
