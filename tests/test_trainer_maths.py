"""The training maths, optimizer/scheduler choice, cross-option rules and the events file."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from trainer.config import load_training_config
from trainer.errors import TrainerError
from trainer.events import EventWriter, read_events
from trainer.maths import (
    compute_snr, make_noise, make_noise_scheduler, min_snr_weights, per_sample_mse, sample_timesteps,
    training_target, warmup_steps,
)
from trainer.options.rules import check_config
from trainer.data.blueprint import SubsetSpec
from trainer.optim import (
    build_optimizer, build_scheduler, current_lrs, lr_free_warning, parse_optimizer_args,
    resolve_optimizer_class,
)


def test_snr_and_min_snr_weights_by_hand() -> None:
    alphas_cumprod = torch.tensor([0.9, 0.5, 0.1])
    snr = compute_snr(alphas_cumprod, torch.tensor([0, 1, 2]))
    assert snr.tolist() == pytest.approx([9.0, 1.0, 0.1 / 0.9], rel=1e-5)
    eps = min_snr_weights(snr, gamma=5.0, v_prediction=False)
    assert eps.tolist() == pytest.approx([5.0 / 9.0, 1.0, 1.0], rel=1e-5)
    v = min_snr_weights(snr, gamma=5.0, v_prediction=True)
    assert v.tolist() == pytest.approx([5.0 / 10.0, 1.0 / 2.0, (0.1 / 0.9) / (0.1 / 0.9 + 1)], rel=1e-5)


def test_scheduler_targets_and_zero_terminal_snr() -> None:
    eps = make_noise_scheduler(v_parameterization=False, zero_terminal_snr=False)
    v = make_noise_scheduler(v_parameterization=True, zero_terminal_snr=True)
    assert eps.config.prediction_type == "epsilon" and v.config.prediction_type == "v_prediction"
    assert float(v.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-6)
    assert float(eps.alphas_cumprod[-1]) > 1e-3
    latents, noise = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 2.0)
    t = torch.tensor([500])
    assert torch.equal(training_target(eps, latents, noise, t), noise)
    a = float(v.alphas_cumprod[500])
    expected = math.sqrt(a) * 2.0 - math.sqrt(1 - a) * 1.0
    assert training_target(v, latents, noise, t)[0, 0, 0, 0].item() == pytest.approx(expected, rel=1e-5)


def test_noise_offset_shifts_channels_and_is_seeded() -> None:
    latents = torch.zeros(2, 4, 8, 8)
    plain = make_noise(latents, None, torch.Generator().manual_seed(1))
    again = make_noise(latents, None, torch.Generator().manual_seed(1))
    assert torch.equal(plain, again)
    shifted = make_noise(latents, 0.5, torch.Generator().manual_seed(1))
    difference = shifted - plain
    # The offset is constant over each channel's pixels, different between channels.
    assert torch.allclose(difference, difference[:, :, :1, :1].expand_as(difference))
    assert difference[0, :, 0, 0].std() > 0


def test_timesteps_range_mse_and_warmup() -> None:
    steps = sample_timesteps(1000, 100, 200, torch.Generator().manual_seed(0))
    assert int(steps.min()) >= 100 and int(steps.max()) < 200
    loss = per_sample_mse(torch.zeros(2, 1, 2, 2), torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[2.0, 0.0], [0.0, 0.0]]]]))
    assert loss.tolist() == pytest.approx([1.0, 1.0])
    assert warmup_steps(0.1, 250) == 25 and warmup_steps(40, 250) == 40 and warmup_steps(0, 10) == 0


def test_optimizer_args_are_typed() -> None:
    parsed = parse_optimizer_args(["weight_decay=0.01", "betas=0.9,0.99", "decouple=True", "eps=1e-8", "name=x"])
    assert parsed == {"weight_decay": 0.01, "betas": (0.9, 0.99), "decouple": True, "eps": 1e-8, "name": "x"}
    with pytest.raises(TrainerError) as caught:
        parse_optimizer_args(["weight_decay"])
    assert caught.value.option == "optimizer_args"


def test_optimizers_build_and_cuda_only_ones_refuse_on_cpu() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    for name in ("AdamW", "Adafactor", "Prodigy", "Lion", "SGDNesterov", "torch.optim.RMSprop"):
        optimizer = build_optimizer(name, [{"params": [weight], "lr": 1e-3}], 1e-3, [], "cpu")
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3), name
    for name in ("AdamW8bit", "PagedAdamW8bit", "Lion8bit"):
        with pytest.raises(TrainerError) as caught:
            resolve_optimizer_class(name, "cpu")
        assert "NVIDIA GPU" in str(caught.value)
    with pytest.raises(TrainerError) as caught:
        build_optimizer("AdamW", [{"params": [weight], "lr": 1e-3}], 1e-3, ["no_such_arg=1"], "cpu")
    assert caught.value.option == "optimizer_args"
    assert lr_free_warning("Prodigy", [1e-4]) and lr_free_warning("Prodigy", [1.0]) is None
    assert lr_free_warning("AdamW", [1e-4]) is None


def test_schedulers_follow_their_curves() -> None:
    def lrs(name: str, warmup, total: int = 10, **kwargs) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
        scheduler = build_scheduler(name, optimizer, total, warmup, kwargs.get("cycles", 1), kwargs.get("power", 1.0))
        seen = []
        for _ in range(total):
            seen.append(current_lrs(optimizer)[0])
            optimizer.step()
            scheduler.step()
        return seen

    assert lrs("constant", 0) == [1.0] * 10
    assert lrs("constant", 0.2)[:3] == pytest.approx([0.0, 0.5, 1.0])  # warmup as a fraction
    assert lrs("linear", 0) == pytest.approx([1 - i / 10 for i in range(10)])
    assert lrs("cosine", 0)[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs("polynomial", 0, power=2.0)[5] == pytest.approx(0.25, abs=1e-6)


def test_rules_refuse_contradictions_with_named_options(tmp_path: Path) -> None:
    base = {"pretrained_model_name_or_path": "/m.safetensors", "output_dir": str(tmp_path)}
    config = load_training_config(overrides={**base, "cache_text_encoder_outputs": "true"})
    with pytest.raises(TrainerError) as caught:
        check_config(config)
    assert caught.value.option == "cache_text_encoder_outputs" and "network_train_unet_only" in caught.value.hint
    config = load_training_config(overrides={**base, "cache_text_encoder_outputs": "true", "network_train_unet_only": "true"})
    with pytest.raises(TrainerError) as caught:
        check_config(config, [SubsetSpec(image_dir="x", shuffle_caption=True)])
    assert "shuffle_caption" in str(caught.value)
    assert check_config(config, [SubsetSpec(image_dir="x")]) == []
    config = load_training_config(overrides={**base, "cache_latents": "true"})
    with pytest.raises(TrainerError) as caught:
        check_config(config, [SubsetSpec(image_dir="x", random_crop=True)])
    assert "random_crop" in str(caught.value)
    with pytest.raises(TrainerError) as caught:
        check_config(load_training_config(overrides={"output_dir": str(tmp_path)}))
    assert caught.value.option == "pretrained_model_name_or_path"
    warned = check_config(load_training_config(overrides={**base, "network_alpha": "64", "network_dim": "8"}))
    assert any("network_alpha" in warning for warning in warned)


def test_events_are_json_lines_and_old_files_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "run_events.jsonl"
    with EventWriter(path) as events:
        events.emit("start", total_steps=10, path=tmp_path)
        events.emit("step", step=1, loss=float("nan"))
    with EventWriter(path) as events:
        events.emit("start", total_steps=5)
    first = [json.loads(line) for line in (tmp_path / "run_events.1.jsonl").read_text().splitlines()]
    assert [e["type"] for e in first] == ["start", "step"] and first[0]["path"] == str(tmp_path)
    assert first[1]["loss"] == "nan"
    assert [e["total_steps"] for e in read_events(path)] == [5]
    silent = EventWriter(tmp_path / "other.jsonl", enabled=False)
    silent.emit("step", step=1)
    assert not (tmp_path / "other.jsonl").exists()
