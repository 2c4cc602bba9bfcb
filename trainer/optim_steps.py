"""What some optimizers and options need from the training loop around each update.

* :func:`install_fused_backward` (``fused_backward_pass``, Adafactor only): each LoRA tensor is
  updated inside the backward pass, as soon as its gradient is complete, and its gradient is
  freed at once, so the gradients of the whole network never exist together. While installed,
  the loop must NOT call ``optimizer.step()``, ``optimizer.zero_grad()`` or clip the gradients
  (clipping happens per tensor in the hook); it still calls ``scheduler.step()`` once per update.
  (Calling them anyway is harmless, only wasted: every gradient is already None.)
* :func:`optimizer_train_mode` / :func:`optimizer_eval_mode` (AdamWScheduleFree,
  RAdamScheduleFree): these optimizers train one point and evaluate another (an average).
  ``build_optimizer`` returns them in train mode. Call eval mode before anything that reads the
  weights for use (saving the LoRA, sample images, validation) and train mode again before the
  next step; :func:`weights_for_use` does both around a block. For other optimizers they do nothing.
* :func:`apply_max_norm` (``scale_weight_norms``): after each ``optimizer.step()``, scale down
  every LoRA module whose update ``up @ down * alpha / rank`` has a Frobenius norm above the cap.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from trainer.errors import TrainerError
from trainer.optim import is_adafactor, is_schedule_free, unwrap_optimizer


@dataclass
class FusedBackward:
    """The hooks of a fused backward pass; :meth:`remove` puts the normal behaviour back."""

    handles: list[Any] = field(default_factory=list)
    steps: int = 0  # per-tensor updates done so far (for tests and debugging)

    def remove(self) -> None:
        """Unregister every hook (idempotent)."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _step_one(optimizer: torch.optim.Optimizer, param: torch.Tensor, group: dict[str, Any]) -> None:
    """One Adafactor update of ``param`` alone, with its group's settings.

    Adafactor's update of a tensor depends only on that tensor, its gradient, its state and its
    group's settings, so its own step() is run over a one-tensor view of the groups: the state
    (keyed by the tensor) is shared, nothing else is touched.
    """
    groups = optimizer.param_groups
    optimizer.param_groups = [{**group, "params": [param]}]
    try:
        optimizer.step()
    finally:
        optimizer.param_groups = groups


def install_fused_backward(optimizer: Any, params: Iterable[torch.Tensor] | None = None,
                           max_grad_norm: float = 0.0) -> FusedBackward:
    """Make the backward pass update each of ``params`` (default: all the optimizer's) itself.

    ``max_grad_norm`` clips each tensor's gradient on its own (a global norm cannot be known
    before the whole backward pass ends; sd-scripts clips per tensor too).
    """
    inner = unwrap_optimizer(optimizer)
    if not is_adafactor(inner):
        raise TrainerError(
            f"fused_backward_pass works with optimizer_type Adafactor only, not {type(inner).__name__}.",
            hint="Set optimizer_type = \"Adafactor\", or turn fused_backward_pass off.", option="fused_backward_pass",
        )
    group_of = {id(p): group for group in inner.param_groups for p in group["params"]}
    fused = FusedBackward()

    def hook(param: torch.Tensor) -> None:
        if param.grad is None:
            return
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_([param], max_grad_norm)
        _step_one(inner, param, group_of[id(param)])
        param.grad = None  # the point of fusing: this gradient's memory is free from here on
        fused.steps += 1

    chosen = list(params) if params is not None else [p for g in inner.param_groups for p in g["params"]]
    for param in chosen:
        if id(param) not in group_of:
            raise TrainerError("install_fused_backward got a tensor the optimizer does not train.",
                               hint="Pass the optimizer's own parameters.", option="fused_backward_pass")
        if param.requires_grad:
            fused.handles.append(param.register_post_accumulate_grad_hook(hook))
    return fused


def optimizer_train_mode(optimizer: Any) -> None:
    """Before training steps: schedule-free optimizers switch to their training point."""
    if is_schedule_free(optimizer):
        unwrap_optimizer(optimizer).train()


def optimizer_eval_mode(optimizer: Any) -> None:
    """Before saving or sampling: schedule-free optimizers switch to their averaged weights."""
    if is_schedule_free(optimizer):
        unwrap_optimizer(optimizer).eval()


@contextmanager
def weights_for_use(optimizer: Any) -> Iterator[None]:
    """``with weights_for_use(optimizer): save(...)``: eval mode inside, train mode after."""
    optimizer_eval_mode(optimizer)
    try:
        yield
    finally:
        optimizer_train_mode(optimizer)


class MaxNormReport(NamedTuple):
    """What :func:`apply_max_norm` did: modules scaled down, and the mean and largest norm after."""

    keys_scaled: int
    mean_norm: float
    max_norm: float


def apply_max_norm(network: Any, max_norm: float) -> MaxNormReport:
    """Cap the norm of every module's weight update at ``max_norm``; returns what it did.

    For our LoRA modules the update is ``up @ down * alpha / rank``; one over the cap has both
    ``up`` and ``down`` multiplied by ``sqrt(max_norm / norm)``, so the update shrinks by
    ``max_norm / norm`` exactly. Norms are Frobenius norms over the whole update (for a conv,
    over all kernel positions). Modules of the ``lycoris`` package use their own
    ``apply_max_norm``; kinds it cannot cap (it returns None) are left out of the report.
    ``network`` is any of our networks (their ``loras`` hold the modules).
    """
    if max_norm <= 0:
        raise TrainerError(f"scale_weight_norms must be above 0, got {max_norm}.",
                           hint="1.0 is the usual value; leave it empty to switch it off.", option="scale_weight_norms")
    scaled = 0
    norms: list[float] = []
    with torch.no_grad():
        for module in network.loras.values():
            if hasattr(module, "lora_down") and hasattr(module, "alpha_value"):
                was_scaled, norm = _cap_lora_module(module, max_norm)
            elif hasattr(module, "apply_max_norm"):
                was_scaled, found = module.apply_max_norm(max_norm, None)
                if was_scaled is None:
                    continue
                was_scaled, norm = bool(was_scaled), float(found)
            else:
                continue
            scaled += int(was_scaled)
            norms.append(norm)
    if not norms:
        return MaxNormReport(0, 0.0, 0.0)
    return MaxNormReport(scaled, sum(norms) / len(norms), max(norms))


def _cap_lora_module(module: Any, max_norm: float) -> tuple[bool, float]:
    """Scale one LoRAModule down to ``max_norm`` if needed; returns (scaled?, norm after)."""
    down, up = module.lora_down.weight, module.lora_up.weight
    update = up.reshape(up.shape[0], -1).float() @ down.reshape(down.shape[0], -1).float()
    norm = float(update.norm()) * module.alpha_value / module.rank
    if norm <= max_norm:
        return False, norm
    root = (max_norm / norm) ** 0.5
    down.mul_(root)
    up.mul_(root)
    return True, max_norm
