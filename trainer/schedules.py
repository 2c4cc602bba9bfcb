"""Learning-rate schedules: sd-scripts' names, REX, Adafactor's own, or any scheduler class.

* The standard curves (constant, linear, cosine, cosine_with_restarts, polynomial, with warmup)
  are diffusers' implementations.
* ``rex``: the REX profile of Chen, Wolfe and Kyrillidis ("REX: Revisiting Budgeted Training
  with an Improved Schedule", 2022): with ``z`` the fraction of the cycle done, the rate is
  ``lr * (1 - z) / (1 - z / 2)``. It stays high longer than linear decay and drops faster at
  the end. After the warmup, the remaining steps are cut into ``lr_scheduler_num_cycles`` equal
  cycles, each restarting at the full rate.
* ``adafactor``: transformers' AdafactorSchedule, which reports the step size Adafactor picks
  for itself (the optimizer is built with relative steps for it).
* ``lr_scheduler_type``: any scheduler class, "module.Class" or a bare name from
  ``torch.optim.lr_scheduler``, built as ``cls(optimizer, **lr_scheduler_args)``.

Every schedule is stepped once per optimizer update.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from trainer.errors import TrainerError
from trainer.maths import warmup_steps

STANDARD = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


def rex_factor(step: int, total_steps: int, warmup: int = 0, num_cycles: int = 1) -> float:
    """The REX multiplier of the base rate at ``step`` (0-based), with linear warmup and restarts."""
    if warmup and step < warmup:
        return step / warmup
    if step >= total_steps:
        return 0.0  # past the end: the last cycle has run out, no restart
    span = max(1, total_steps - warmup)
    cycle = span / max(1, num_cycles)
    done = ((step - warmup) % cycle) / cycle
    return (1.0 - done) / (1.0 - done / 2.0)


def rex_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: int = 0,
                 num_cycles: int = 1) -> LambdaLR:
    """REX with warmup and ``num_cycles`` restarts as a LambdaLR (its state saves and resumes)."""
    return LambdaLR(optimizer, _RexLambda(total_steps, warmup, num_cycles))


class _RexLambda:
    """A picklable callable (LambdaLR's state_dict keeps objects, not closures)."""

    def __init__(self, total_steps: int, warmup: int, num_cycles: int) -> None:
        self.total_steps, self.warmup, self.num_cycles = total_steps, warmup, num_cycles

    def __call__(self, step: int) -> float:
        return rex_factor(step, self.total_steps, self.warmup, self.num_cycles)


def adafactor_schedule(optimizer: torch.optim.Optimizer) -> LRScheduler:
    """transformers' AdafactorSchedule; refuses any optimizer but Adafactor."""
    from transformers.optimization import Adafactor, AdafactorSchedule

    from trainer.optim import unwrap_optimizer

    inner = unwrap_optimizer(optimizer)
    if not isinstance(inner, Adafactor):
        raise TrainerError(
            f"lr_scheduler adafactor only works with optimizer_type Adafactor, not {type(inner).__name__}.",
            hint="Set optimizer_type = \"Adafactor\", or choose another lr_scheduler (constant, cosine, ...).",
            option="lr_scheduler",
        )
    return AdafactorSchedule(inner, initial_lr=0.0)


def resolve_scheduler_class(path: str) -> type:
    """The class named by ``lr_scheduler_type``: "module.Class", or a name in torch.optim.lr_scheduler."""
    from trainer.optim import import_class

    text = path.strip()
    if "." in text:
        module_name, _, class_name = text.rpartition(".")
    else:
        module_name, class_name = "torch.optim.lr_scheduler", text
    found = import_class(module_name, class_name, module_name.split(".")[0], text, option="lr_scheduler_type")
    if not isinstance(found, type):
        raise TrainerError(f"lr_scheduler_type {text} is not a class.",
                           hint="Name a scheduler class, e.g. torch.optim.lr_scheduler.StepLR.",
                           option="lr_scheduler_type")
    return found


def custom_schedule(optimizer: torch.optim.Optimizer, path: str, items: Sequence[str]) -> LRScheduler:
    """``lr_scheduler_type`` built with ``lr_scheduler_args`` (typed like optimizer_args)."""
    from trainer.optim import parse_optimizer_args

    cls = resolve_scheduler_class(path)
    kwargs = parse_optimizer_args(items, option="lr_scheduler_args")
    try:
        return cls(optimizer, **kwargs)
    except (TypeError, ValueError) as problem:
        raise TrainerError(
            f"lr_scheduler_args do not fit {path}: {problem}",
            hint="Give the scheduler's own arguments as \"key=value\" items in lr_scheduler_args, "
                 "e.g. [\"step_size=100\", \"gamma=0.5\"] for StepLR.", option="lr_scheduler_args",
        ) from problem


def build_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup: float | int,
                   num_cycles: int, power: float, scheduler_type: str | None = None,
                   scheduler_args: Sequence[str] = ()) -> LRScheduler:
    """The schedule for ``lr_scheduler`` (or ``lr_scheduler_type`` when that is set)."""
    if scheduler_type:
        return custom_schedule(optimizer, scheduler_type, scheduler_args)
    steps = warmup_steps(warmup, total_steps)
    builders: dict[str, Callable[[], LRScheduler]] = {
        "rex": lambda: rex_schedule(optimizer, total_steps, steps, num_cycles),
        "adafactor": lambda: adafactor_schedule(optimizer),
    }
    if name in builders:
        return builders[name]()
    if name not in STANDARD:
        raise TrainerError(f"lr_scheduler {name} is not known.",
                           hint=f"Choose one of {', '.join(STANDARD + tuple(builders))}.", option="lr_scheduler")
    from diffusers.optimization import get_scheduler

    if name == "constant" and steps:
        name = "constant_with_warmup"  # sd-scripts warms up whenever lr_warmup_steps is set
    return get_scheduler(
        name, optimizer, num_warmup_steps=steps, num_training_steps=total_steps,
        num_cycles=num_cycles, power=power,
    )
