"""Optimizers, chosen by the names sd-scripts uses, and what some of them need from the loop.

``optimizer_args`` arrive as "key=value" strings and are parsed to numbers, booleans and tuples
here, once. Optimizers that need CUDA (the bitsandbytes 8-bit family) fail on the CPU with a
message, not a stack trace. The learning-rate schedules live in :mod:`trainer.schedules`; the
per-step extras (fused backward pass, schedule-free modes, max-norm) in :mod:`trainer.optim_steps`.
"""
from __future__ import annotations

import ast
import importlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from trainer.errors import TrainerError

# Learning-rate-free optimizers: they estimate the step size themselves and expect lr about 1.
LR_FREE = {"Prodigy", "DAdaptAdam", "DAdaptLion", "DAdaptAdaGrad", "DAdaptAdan", "DAdaptSGD"}
# Of those, the ones whose step() raises when parameter groups have different non-zero rates.
_SAME_LR_ONLY = {"Prodigy", "DAdaptAdam", "DAdaptLion", "DAdaptSGD"}
SCHEDULE_FREE = {"AdamWScheduleFree", "RAdamScheduleFree"}

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
    "DAdaptAdam": ("dadaptation", "DAdaptAdam", "dadaptation", False),
    "DAdaptLion": ("dadaptation", "DAdaptLion", "dadaptation", False),
    "DAdaptAdaGrad": ("dadaptation", "DAdaptAdaGrad", "dadaptation", False),
    "DAdaptAdan": ("dadaptation", "DAdaptAdan", "dadaptation", False),
    "DAdaptSGD": ("dadaptation", "DAdaptSGD", "dadaptation", False),
    "CAME": ("came_pytorch", "CAME", "came-pytorch", False),
    "AdamWScheduleFree": ("schedulefree", "AdamWScheduleFree", "schedulefree", False),
    "RAdamScheduleFree": ("schedulefree", "RAdamScheduleFree", "schedulefree", False),
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


def import_class(module_name: str, class_name: str, package: str, label: str, option: str = "optimizer_type") -> type:
    """``module_name.class_name``, with errors that name ``option`` and the pip package to install."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as problem:
        raise TrainerError(
            f"{option} {label} needs the '{package}' package, which is not installed.",
            hint=f"pip install {package}   (or choose another {option})", option=option,
        ) from problem
    found = getattr(module, class_name, None)
    if found is None:
        raise TrainerError(f"{module_name} has no class {class_name}.", hint=f"Check {option}.", option=option)
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
        return import_class(module_name, class_name, package, name), implied
    if "." in name:
        module_name, _, class_name = name.rpartition(".")
        return import_class(module_name, class_name, module_name.split(".")[0], name), {}
    raise TrainerError(
        f"optimizer_type {name} is not available in this version.",
        hint="Choose AdamW, Adafactor, Prodigy, Lion or give a module.Class path.", option="optimizer_type",
    )


def _check_same_rates(name: str, param_groups: list[dict[str, Any]]) -> None:
    rates = sorted({float(group["lr"]) for group in param_groups if group.get("lr")})
    if name in _SAME_LR_ONLY and len(rates) > 1:
        raise TrainerError(
            f"{name} needs one learning rate for every part it trains, but got {rates} "
            "(unet_lr and text_encoder_lr differ).",
            hint="Give unet_lr and text_encoder_lr the same value (usually 1), or set text_encoder_lr = 0 "
                 "to leave the text encoder out.", option="text_encoder_lr",
        )


def build_optimizer(name: str, param_groups: list[dict[str, Any]], learning_rate: float,
                    optimizer_args: Sequence[str], device_type: str,
                    lr_scheduler: str = "constant") -> torch.optim.Optimizer:
    """Create the optimizer over ``param_groups`` (each with its own "lr").

    ``lr_scheduler`` matters for Adafactor only: with the ``adafactor`` schedule it finds its own
    relative step size (transformers' defaults, learning_rate ignored), as sd-scripts does. A
    schedule-free optimizer is returned in train mode.
    """
    cls, implied = resolve_optimizer_class(name, device_type)
    kwargs = {**implied, **parse_optimizer_args(optimizer_args)}
    lr: float | None = learning_rate
    if name == "Adafactor" and lr_scheduler == "adafactor":
        if kwargs.get("relative_step") is False:
            raise TrainerError(
                "lr_scheduler adafactor needs Adafactor's relative_step, but optimizer_args turn it off.",
                hint="Remove relative_step=False from optimizer_args, or choose another lr_scheduler.",
                option="lr_scheduler",
            )
        kwargs["relative_step"] = True
        lr = None  # transformers refuses an explicit lr together with relative_step
        param_groups = [{key: value for key, value in group.items() if key != "lr"} for group in param_groups]
    elif name == "Adafactor":
        # With an explicit lr, Adafactor must not pick its own relative step size.
        kwargs.setdefault("relative_step", False)
        kwargs.setdefault("scale_parameter", False)
        kwargs.setdefault("warmup_init", False)
    _check_same_rates(name, param_groups)
    try:
        optimizer = cls(param_groups, lr=lr, **kwargs)
    except TypeError as problem:
        raise TrainerError(
            f"optimizer_args do not fit {name}: {problem}",
            hint="Check the names in optimizer_args against the optimizer's documentation.", option="optimizer_args",
        ) from problem
    if is_schedule_free(optimizer):
        optimizer.train()  # these refuse to step in their (default) eval mode
    return optimizer


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The library optimizer inside accelerate's AcceleratedOptimizer (or the optimizer itself)."""
    inner = optimizer
    while hasattr(inner, "optimizer") and isinstance(getattr(inner, "optimizer"), torch.optim.Optimizer):
        inner = inner.optimizer
    return inner


def is_schedule_free(optimizer: Any) -> bool:
    """True for the schedulefree optimizers, which keep separate train and eval weights."""
    groups = unwrap_optimizer(optimizer).param_groups
    return bool(groups) and "train_mode" in groups[0]


def is_adafactor(optimizer: Any) -> bool:
    """True when ``optimizer`` (possibly wrapped) is transformers' Adafactor."""
    try:
        from transformers.optimization import Adafactor
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        return False
    return isinstance(unwrap_optimizer(optimizer), Adafactor)


def lr_free_warning(name: str, rates: Iterable[float]) -> str | None:
    """A warning when a learning-rate-free optimizer (Prodigy, DAdapt*) gets a rate far from 1."""
    if name not in LR_FREE:
        return None
    off = [rate for rate in rates if rate and not 0.1 <= rate <= 10]
    if not off:
        return None
    return (f"{name} finds its own step size and expects learning rates of about 1; got {off}. "
            "Set learning_rate (and unet_lr/text_encoder_lr) to 1.")


def current_lrs(optimizer: Any) -> list[float]:
    """Each parameter group's learning rate right now (with D-Adaptation/Prodigy's d folded in).

    Adafactor with relative steps ignores the group's "lr", so its own step size is reported.
    """
    inner = unwrap_optimizer(optimizer)
    relative = is_adafactor(inner)
    rates = []
    for group in inner.param_groups:
        rate = float(group["lr"]) if group.get("lr") is not None else 0.0
        if relative and group.get("relative_step"):
            state = inner.state.get(group["params"][0], {})
            if "step" in state:
                rate = float(inner._get_lr(group, state))  # the rate Adafactor actually used
        if "d" in group and isinstance(group["d"], (int, float)) and math.isfinite(group["d"]):
            rate *= float(group["d"])
        rates.append(rate)
    return rates


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup: float | int,
                    num_cycles: int, power: float, scheduler_type: str | None = None,
                    scheduler_args: Sequence[str] = ()) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule; see :func:`trainer.schedules.build_schedule`."""
    from trainer.schedules import build_schedule

    return build_schedule(name, optimizer, total_steps, warmup, num_cycles, power, scheduler_type, scheduler_args)
