"""Optimizers and learning-rate schedules, chosen by the names sd-scripts uses.

``optimizer_args`` arrive as "key=value" strings and are parsed to numbers, booleans and tuples
here, once. Optimizers that need CUDA (the bitsandbytes 8-bit family) fail on the CPU with a
message, not a stack trace.
"""
from __future__ import annotations

import ast
import importlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from trainer.errors import TrainerError
from trainer.maths import warmup_steps

# Learning-rate-free optimizers: they estimate the step size themselves and expect lr about 1.
LR_FREE = {"Prodigy", "DAdaptAdam", "DAdaptLion", "DAdaptAdaGrad", "DAdaptAdan", "DAdaptSGD"}

# name -> (module, class, pip package that provides it, needs CUDA)
_OPTIMIZER_CLASSES: dict[str, tuple[str, str, str, bool]] = {
    "AdamW": ("torch.optim", "AdamW", "torch", False),
    "SGDNesterov": ("torch.optim", "SGD", "torch", False),
    "AdamW8bit": ("bitsandbytes.optim", "AdamW8bit", "bitsandbytes", True),
    "PagedAdamW8bit": ("bitsandbytes.optim", "PagedAdamW8bit", "bitsandbytes", True),
    "Lion8bit": ("bitsandbytes.optim", "Lion8bit", "bitsandbytes", True),
    "Adafactor": ("transformers.optimization", "Adafactor", "transformers", False),
    "Prodigy": ("prodigyopt", "Prodigy", "prodigyopt", False),
    "Lion": ("lion_pytorch", "Lion", "lion-pytorch", False),
}


def parse_optimizer_args(items: Sequence[str], option: str = "optimizer_args") -> dict[str, Any]:
    """["weight_decay=0.01", "betas=0.9,0.99", "decouple=True"] -> typed keyword arguments."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise TrainerError(
                f"{option} item {item!r} is not of the form key=value.",
                hint=f'Write items like "weight_decay=0.01" in {option}.', option=option,
            )
        parsed[key] = _parse_value(text.strip())
    return parsed


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if "," in text and not text.startswith(("(", "[")):
        return tuple(_parse_value(part.strip()) for part in text.split(",") if part.strip())
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _import_class(module_name: str, class_name: str, package: str, label: str) -> type:
    try:
        module = importlib.import_module(module_name)
    except ImportError as problem:
        raise TrainerError(
            f"optimizer_type {label} needs the '{package}' package, which is not installed.",
            hint=f"pip install {package}   (or choose AdamW)", option="optimizer_type",
        ) from problem
    found = getattr(module, class_name, None)
    if found is None:
        raise TrainerError(f"{module_name} has no class {class_name}.", hint="Check optimizer_type.", option="optimizer_type")
    return found


def resolve_optimizer_class(name: str, device_type: str) -> tuple[type, dict[str, Any]]:
    """The optimizer class for ``name`` (a table name or module.Class) and arguments it implies."""
    if name in _OPTIMIZER_CLASSES:
        module_name, class_name, package, needs_cuda = _OPTIMIZER_CLASSES[name]
        if needs_cuda and device_type != "cuda":
            raise TrainerError(
                f"optimizer_type {name} runs only on an NVIDIA GPU (bitsandbytes 8-bit kernels), and this run is on the {device_type}.",
                hint="Use AdamW (or Adafactor to save memory) on this machine.", option="optimizer_type",
            )
        implied = {"nesterov": True, "momentum": 0.9} if name == "SGDNesterov" else {}
        return _import_class(module_name, class_name, package, name), implied
    if "." in name:
        module_name, _, class_name = name.rpartition(".")
        return _import_class(module_name, class_name, module_name.split(".")[0], name), {}
    raise TrainerError(
        f"optimizer_type {name} is not available in this version.",
        hint="Choose AdamW, Adafactor, Prodigy, Lion or give a module.Class path.", option="optimizer_type",
    )


def build_optimizer(name: str, param_groups: list[dict[str, Any]], learning_rate: float,
                    optimizer_args: Sequence[str], device_type: str) -> torch.optim.Optimizer:
    """Create the optimizer over ``param_groups`` (each with its own "lr")."""
    cls, implied = resolve_optimizer_class(name, device_type)
    kwargs = {**implied, **parse_optimizer_args(optimizer_args)}
    if name == "Adafactor":
        # With an explicit lr, Adafactor must not pick its own relative step size.
        kwargs.setdefault("relative_step", False)
        kwargs.setdefault("scale_parameter", False)
        kwargs.setdefault("warmup_init", False)
    try:
        return cls(param_groups, lr=learning_rate, **kwargs)
    except TypeError as problem:
        raise TrainerError(
            f"optimizer_args do not fit {name}: {problem}",
            hint="Check the names in optimizer_args against the optimizer's documentation.", option="optimizer_args",
        ) from problem


def lr_free_warning(name: str, rates: Iterable[float]) -> str | None:
    """A warning when a learning-rate-free optimizer gets a learning rate far from 1."""
    if name not in LR_FREE:
        return None
    off = [rate for rate in rates if rate and not 0.1 <= rate <= 10]
    if not off:
        return None
    return (f"{name} finds its own step size and expects learning rates of about 1; got {off}. "
            "Set learning_rate (and unet_lr/text_encoder_lr) to 1.")


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup: float | int,
                    num_cycles: int, power: float) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule (diffusers' implementations of the standard curves)."""
    from diffusers.optimization import get_scheduler

    steps = warmup_steps(warmup, total_steps)
    if name in ("adafactor", "rex"):
        raise TrainerError(f"lr_scheduler {name} is not implemented yet.", hint="Use constant or cosine.", option="lr_scheduler")
    if name == "constant" and steps:
        name = "constant_with_warmup"  # sd-scripts warms up whenever lr_warmup_steps is set
    return get_scheduler(
        name, optimizer, num_warmup_steps=steps, num_training_steps=total_steps,
        num_cycles=num_cycles, power=power,
    )


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each parameter group's learning rate right now (with D-Adaptation/Prodigy's d folded in)."""
    rates = []
    for group in optimizer.param_groups:
        rate = float(group["lr"])
        if "d" in group and isinstance(group["d"], (int, float)) and math.isfinite(group["d"]):
            rate *= float(group["d"])
        rates.append(rate)
    return rates
