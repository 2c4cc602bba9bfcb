"""Every optimizer name, the learning-rate schedules, and the optimizer extras the loop calls.

Curves are checked against values worked out by hand from each schedule's formula; the fused
backward pass is checked against ordinary Adafactor steps on the tiny SD1.5 model.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.test_train_end_to_end import base_overrides, make_learnable_dataset, train
from trainer.config import load_training_config
from trainer.errors import TrainerError
from trainer.optim import build_optimizer, build_scheduler, current_lrs, lr_free_warning
from trainer.optim_steps import (
    install_fused_backward, optimizer_eval_mode, optimizer_train_mode, weights_for_use,
)
from trainer.options.rules import check_config
from trainer.options.table_model import OPTIMIZERS
from trainer.schedules import rex_factor

CUDA_ONLY = {"AdamW8bit", "PagedAdamW8bit", "Lion8bit"}


def one_step(optimizer: torch.optim.Optimizer, weight: torch.nn.Parameter) -> None:
    loss = ((weight - torch.tensor([1.0, -2.0, 3.0])) ** 2).sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_name_takes_a_step_on_the_cpu_or_refuses(name: str) -> None:
    weight = torch.nn.Parameter(torch.zeros(3))
    lr = 1.0 if name in ("Prodigy",) or name.startswith("DAdapt") else 1e-2
    if name in CUDA_ONLY:
        with pytest.raises(TrainerError) as caught:
            build_optimizer(name, [{"params": [weight], "lr": lr}], lr, [], "cpu")
        assert "NVIDIA GPU" in caught.value.message and caught.value.option == "optimizer_type"
        return
    optimizer = build_optimizer(name, [{"params": [weight], "lr": lr}], lr, [], "cpu")
    for _ in range(10):  # RAdam's rectification holds the first few steps back
        one_step(optimizer, weight)
    assert not torch.equal(weight.detach(), torch.zeros(3)), name
    assert torch.isfinite(weight).all(), name
    # Every step moved the weights towards the target's signs (all of these descend the gradient).
    assert weight[0] > 0 and weight[1] < 0 and weight[2] > 0, (name, weight)


def test_learning_rate_free_optimizers_warn_and_refuse_mixed_rates() -> None:
    for name in ("DAdaptAdam", "DAdaptLion", "DAdaptAdaGrad", "DAdaptAdan", "DAdaptSGD", "Prodigy"):
        assert "about 1" in lr_free_warning(name, [1e-4, 1.0])
        assert lr_free_warning(name, [1.0, 0.5]) is None
    assert lr_free_warning("CAME", [1e-4]) is None
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(TrainerError) as caught:
        build_optimizer("DAdaptAdam", [{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}], 1.0, [], "cpu")
    assert caught.value.option == "text_encoder_lr" and "same value" in caught.value.hint
    # A zero rate (a frozen part) is allowed, and the d estimate shows in the reported rate.
    optimizer = build_optimizer("DAdaptAdam", [{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.0}], 1.0, [], "cpu")
    assert current_lrs(optimizer) == pytest.approx([1e-6, 0.0])  # d0 = 1e-6 before any step


def test_schedule_free_optimizers_switch_between_train_and_averaged_weights() -> None:
    for name in ("AdamWScheduleFree", "RAdamScheduleFree"):
        weight = torch.nn.Parameter(torch.zeros(3))
        optimizer = build_optimizer(name, [{"params": [weight], "lr": 0.1}], 0.1, [], "cpu")
        for _ in range(10):
            one_step(optimizer, weight)  # would raise if build_optimizer had left it in eval mode
        training_point = weight.detach().clone()
        optimizer_eval_mode(optimizer)
        averaged = weight.detach().clone()
        assert not torch.allclose(averaged, training_point), name
        optimizer_train_mode(optimizer)
        assert torch.allclose(weight.detach(), training_point, atol=1e-6), name
        with weights_for_use(optimizer):
            assert torch.allclose(weight.detach(), averaged, atol=1e-6)
        assert torch.allclose(weight.detach(), training_point, atol=1e-6)
    plain = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    optimizer_eval_mode(plain)  # no-op for every other optimizer
    assert plain.param_groups[0]["lr"] == 0.1


def lr_curve(name: str, steps: int, warmup=0, cycles: int = 1, optimizer_name: str = "SGD", args=(),
             scheduler_type: str | None = None, scheduler_args=()) -> list[float]:
    """The learning rate used at each of ``steps`` real updates of a one-weight model."""
    weight = torch.nn.Parameter(torch.ones(3))
    if optimizer_name == "SGD":
        optimizer = torch.optim.SGD([weight], lr=1.0)
    else:
        optimizer = build_optimizer(optimizer_name, [{"params": [weight], "lr": 1.0}], 1.0, list(args), "cpu",
                                    lr_scheduler=name)
    scheduler = build_scheduler(name, optimizer, steps, warmup, cycles, 1.0, scheduler_type, list(scheduler_args))
    seen = []
    for _ in range(steps):
        one_step(optimizer, weight)
        seen.append(current_lrs(optimizer)[0] if optimizer_name == "Adafactor" else None)
        scheduler.step()
    if optimizer_name != "SGD":
        return seen
    # For SGD, replay: the rate in force at step i is what the scheduler had set before it.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    scheduler = build_scheduler(name, optimizer, steps, warmup, cycles, 1.0, scheduler_type, list(scheduler_args))
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_rex_follows_its_formula_with_warmup_and_restarts() -> None:
    # (1 - z) / (1 - z/2) at z = step / 10
    curve = lr_curve("rex", 10)
    assert curve[0] == pytest.approx(1.0)
    assert curve[5] == pytest.approx(0.5 / 0.75)
    assert curve[9] == pytest.approx(0.1 / 0.55)
    assert all(a > b for a, b in zip(curve, curve[1:]))  # falls all the way
    # 2 warmup steps, then 8 steps in two cycles of 4: restart at step 6.
    curve = lr_curve("rex", 10, warmup=2, cycles=2)
    assert curve[:3] == pytest.approx([0.0, 0.5, 1.0])
    assert curve[4] == pytest.approx(0.5 / 0.75) and curve[6] == pytest.approx(1.0)
    assert curve[8] == pytest.approx(0.5 / 0.75) and curve[9] == pytest.approx(0.25 / 0.625)
    assert rex_factor(10, 10) == 0.0  # after the last step: no restart


def test_cosine_with_restarts_and_warmup_fraction_by_hand() -> None:
    curve = lr_curve("cosine_with_restarts", 10, cycles=2)
    assert curve[2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.4)))
    assert curve[5] == pytest.approx(1.0)  # second cycle starts again at the full rate
    assert lr_curve("linear", 10, warmup=0.2)[:4] == pytest.approx([0.0, 0.5, 1.0, 1 - 1 / 8])


def test_adafactor_schedule_reports_adafactors_own_step_size() -> None:
    # relative_step with warmup_init: the step size is min(1e-6 * t, 1 / sqrt(t)) = 1e-6 * t.
    rates = lr_curve("adafactor", 3, optimizer_name="Adafactor", args=["scale_parameter=False", "warmup_init=True"])
    assert rates == pytest.approx([1e-6, 2e-6, 3e-6])
    # Without warmup_init it is min(1e-2, 1 / sqrt(t)) = 1e-2, whatever learning_rate says.
    rates = lr_curve("adafactor", 2, optimizer_name="Adafactor", args=["scale_parameter=False"])
    assert rates == pytest.approx([1e-2, 1e-2])
    with pytest.raises(TrainerError) as caught:
        build_scheduler("adafactor", torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))]), 5, 0, 1, 1.0)
    assert caught.value.option == "lr_scheduler" and "Adafactor" in caught.value.hint
    with pytest.raises(TrainerError) as caught:
        build_optimizer("Adafactor", [{"params": [torch.nn.Parameter(torch.ones(1))], "lr": 1e-3}], 1e-3,
                        ["relative_step=False"], "cpu", lr_scheduler="adafactor")
    assert "relative_step" in caught.value.message


def test_any_scheduler_class_with_its_arguments() -> None:
    assert lr_curve("constant", 5, scheduler_type="StepLR", scheduler_args=["step_size=2", "gamma=0.5"]) == \
        pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])
    assert lr_curve("constant", 3, scheduler_type="torch.optim.lr_scheduler.ExponentialLR",
                    scheduler_args=["gamma=0.1"]) == pytest.approx([1.0, 0.1, 0.01])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    with pytest.raises(TrainerError) as caught:
        build_scheduler("constant", optimizer, 5, 0, 1, 1.0, "NoSuchScheduler")
    assert caught.value.option == "lr_scheduler_type"
    with pytest.raises(TrainerError) as caught:
        build_scheduler("constant", optimizer, 5, 0, 1, 1.0, "StepLR", ["no_such_arg=3"])
    assert caught.value.option == "lr_scheduler_args"


def test_rules_for_optimizer_and_schedule_combinations(tmp_path: Path) -> None:
    base = {"pretrained_model_name_or_path": "/m.safetensors", "output_dir": str(tmp_path)}

    def refused(**options) -> TrainerError:
        with pytest.raises(TrainerError) as caught:
            check_config(load_training_config(overrides={**base, **options}))
        return caught.value

    assert refused(fused_backward_pass="true").option == "fused_backward_pass"
    assert "gradient_accumulation_steps" in refused(fused_backward_pass="true", optimizer_type="Adafactor",
                                                    gradient_accumulation_steps=2).message
    assert refused(lr_scheduler="adafactor").option == "lr_scheduler"
    assert refused(lr_scheduler="adafactor", optimizer_type="Adafactor", lr_warmup_steps=10).option == "lr_warmup_steps"
    assert refused(lr_scheduler_args=["gamma=0.5"]).option == "lr_scheduler_args"
    assert refused(lr_scheduler_type="StepLR", lr_warmup_steps=5).option == "lr_warmup_steps"
    assert check_config(load_training_config(overrides={**base, "fused_backward_pass": "true",
                                                        "optimizer_type": "Adafactor"})) == []
    assert check_config(load_training_config(overrides={**base, "lr_scheduler": "rex"})) == []
    warned = check_config(load_training_config(overrides={**base, "optimizer_type": "AdamWScheduleFree",
                                                          "lr_scheduler": "cosine"}))
    assert any("constant" in warning for warning in warned)


def test_fused_backward_matches_ordinary_adafactor_steps_on_a_small_model() -> None:
    def model_and_optimizer(seed: int):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        groups = [{"params": list(model[0].parameters()), "lr": 1e-2}, {"params": list(model[2].parameters()), "lr": 5e-3}]
        return model, build_optimizer("Adafactor", groups, 1e-2, [], "cpu")

    inputs = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    plain, plain_opt = model_and_optimizer(3)
    fused, fused_opt = model_and_optimizer(3)
    handle = install_fused_backward(fused_opt)
    for _ in range(4):
        plain(inputs).pow(2).mean().backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)
        fused(inputs).pow(2).mean().backward()
        assert all(p.grad is None for p in fused.parameters())  # freed inside the backward pass
    assert handle.steps == 4 * 4  # 4 tensors, 4 backward passes
    for a, b in zip(plain.parameters(), fused.parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    handle.remove()
    fused(inputs).pow(2).mean().backward()
    assert all(p.grad is not None for p in fused.parameters())  # hooks gone: ordinary gradients again
    with pytest.raises(TrainerError) as caught:
        install_fused_backward(torch.optim.AdamW(plain.parameters()))
    assert caught.value.option == "fused_backward_pass"


def test_fused_backward_pass_trains_the_tiny_model_like_plain_adafactor(tmp_path: Path, tiny_sd15) -> None:
    from trainer.data.epochs import epoch_batches
    from trainer.loss import compute_loss
    from trainer.session import prepare_session

    data = make_learnable_dataset(tmp_path)

    def run(fused: bool) -> dict[str, torch.Tensor]:
        overrides = base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / f"out{int(fused)}",
                                   optimizer_type="Adafactor", learning_rate="1e-2", max_grad_norm=0,
                                   fused_backward_pass=str(fused).lower(), max_train_steps=3)
        session = prepare_session(load_training_config(overrides=overrides, cwd=tmp_path))
        session.network.train()
        handle = install_fused_backward(session.optimizer) if fused else None
        generator = torch.Generator().manual_seed(5)
        batches = epoch_batches(session.scan.records, session.datasets, 1, 7, session.latent_cache)
        for index in range(3):
            loss = compute_loss(session, batches[index], generator)
            assert math.isfinite(float(loss.detach()))
            session.accelerator.backward(loss)
            if handle is None:  # what the loop skips when the pass is fused
                session.optimizer.step()
                session.optimizer.zero_grad(set_to_none=True)
            session.scheduler.step()
        if handle is not None:
            handle.remove()
        return {key: value.detach().clone() for key, value in session.network.state_dict().items()}

    plain, fused = run(False), run(True)
    assert plain.keys() == fused.keys()
    ups = [key for key in plain if key.endswith("lora_up.weight")]
    assert any(float(plain[key].abs().max()) > 0 for key in ups)  # the steps did train
    for key in plain:
        assert torch.allclose(plain[key], fused[key], rtol=1e-4, atol=1e-6), key


def test_new_optimizers_and_schedules_train_the_tiny_model(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    runs = {
        "came_rex": dict(optimizer_type="CAME", lr_scheduler="rex", learning_rate="1e-3"),
        "schedulefree_steplr": dict(optimizer_type="AdamWScheduleFree", learning_rate="1e-3",
                                    lr_scheduler_type="StepLR", lr_scheduler_args=["step_size=2", "gamma=0.5"]),
        "adafactor_own": dict(optimizer_type="Adafactor", lr_scheduler="adafactor", learning_rate="1e-3"),
    }
    for label, options in runs.items():
        overrides = base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / label, max_train_steps=4, **options)
        if "lr_scheduler_args" in options:
            overrides["lr_scheduler_args"] = options["lr_scheduler_args"]  # a list, not its str()
        path, events = train(tmp_path, **overrides)
        steps = [event for event in events if event["type"] == "step"]
        assert len(steps) == 4 and all(math.isfinite(event["loss"]) for event in steps), label
        rates = [next(iter(event["lr"].values())) for event in steps]
        if label == "came_rex":  # the rate for the next step, after k of 4 updates
            assert rates == pytest.approx([1e-3 * rex_factor(k, 4) for k in range(1, 5)])
        elif label == "adafactor_own":  # min(1e-2, 1/sqrt(t)) x max(1e-3, RMS of the weights): not learning_rate
            assert all(1e-5 <= rate <= 1e-2 for rate in rates) and rates[0] != pytest.approx(1e-3)
        else:
            assert rates == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4])
        assert path.exists()
