"""DyLoRA (``network_module = "networks.dylora"``): random rank prefixes in training, a plain LoRA file.

The maths is checked against LoRAs built by hand from the module's own rows: the training forward
at a drawn rank must equal the rank-r prefix LoRA with scale alpha / r, only the newest block may
get gradients, and outside training the module is the full-rank LoRA. A real run on the tiny
SD1.5 model must write a file diffusers loads as an ordinary LoCon.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from tests.fixtures.sd_models import TinyModel
from tests.test_lora_file import load_with_diffusers
from tests.test_lora_network import expected_te_stems, expected_unet_stems, load_pipe
from tests.test_train_end_to_end import base_overrides, load_tensors, make_learnable_dataset, train
from trainer.config import load_training_config
from trainer.errors import TrainerError
from trainer.networks.dylora import DyLoRAModule, parse_dylora_args
from trainer.options.rules import check_config


def prefix_lora(module: DyLoRAModule, x: torch.Tensor, rank: int) -> torch.Tensor:
    """The update of the LoRA made of the first ``rank`` rows / columns, scaled alpha / rank."""
    down, up = module.lora_down.weight[:rank], module.lora_up.weight[:, :rank]
    if isinstance(module.lora_down, nn.Conv2d):
        hidden = F.conv2d(x, down, None, module.lora_down.stride, module.lora_down.padding)
        return F.conv2d(hidden, up) * (module.alpha_value / rank)
    return F.linear(F.linear(x, down), up) * (module.alpha_value / rank)


@pytest.mark.parametrize("layer", [nn.Linear(12, 10), nn.Conv2d(6, 5, 3, padding=1)], ids=["linear", "conv"])
def test_training_forward_is_a_random_prefix_with_only_the_newest_block_trained(layer: nn.Module) -> None:
    layer.requires_grad_(False)
    module = DyLoRAModule("lora_unet_x", layer, rank=6, alpha=3.0, unit=2)
    with torch.no_grad():
        module.lora_up.weight.normal_(0.0, 0.5)
    module.apply_to()
    x = torch.randn(3, 12) if isinstance(layer, nn.Linear) else torch.randn(2, 6, 5, 5)
    base = module._org_forward(x)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        rank = module.draw_rank()
        torch.manual_seed(seed)  # the forward draws the same rank
        module.train()
        module.zero_grad(set_to_none=True)
        out = layer(x)
        torch.testing.assert_close(out - base, prefix_lora(module, x, rank), atol=1e-5, rtol=1e-4)
        out.sum().backward()
        rows = module.lora_down.weight.grad.flatten(1).abs().sum(1)
        assert bool((rows[rank - 2:rank] > 0).all()) and float(rows[:rank - 2].sum() + rows[rank:].sum()) == 0.0
        seen.add(rank)
    assert seen == {2, 4, 6}
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x) - base, prefix_lora(module, x, 6), atol=1e-5, rtol=1e-4)
    module.restore()


def test_args_and_rules_refuse_what_cannot_train(tmp_path: Path) -> None:
    assert parse_dylora_args(["unit=4", "conv_dim=8", "conv_alpha=2"]).unit == 4
    for args, message in ((["unit=0"], "at least 1"), (["unit=two"], "must be a number"),
                          (["algo=loha"], "not understood by networks.dylora")):
        with pytest.raises(TrainerError, match=message):
            parse_dylora_args(args)
    config = load_training_config(overrides={
        "pretrained_model_name_or_path": str(tmp_path), "output_dir": str(tmp_path), "network_module": "networks.dylora",
        "network_dim": "6", "network_args": ["unit=4"]}, cwd=tmp_path)
    with pytest.raises(TrainerError, match="multiple of unit") as caught:
        check_config(config)
    assert caught.value.option == "network_args"


def test_dylora_run_writes_a_plain_locon_file_diffusers_loads(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    data = make_learnable_dataset(tmp_path)
    settings = base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / "out", network_module="networks.dylora",
                              max_train_steps=2, network_dim=4, network_alpha=2, text_encoder_lr="1e-3")
    settings["network_args"] = ["unit=2", "conv_dim=4", "conv_alpha=2"]
    path, events = train(tmp_path, **settings)
    tensors = load_tensors(path)
    pipe = load_pipe(tiny_sd15)
    expected = set(expected_unet_stems("sd15", pipe.unet, include_conv=True))
    expected |= set(expected_te_stems(pipe.text_encoder, "lora_te"))
    assert {key.split(".")[0] for key in tensors} == expected
    assert {key.partition(".")[2] for key in tensors} == {"lora_down.weight", "lora_up.weight", "alpha"}
    assert all(tensors[key].shape[0] == 4 for key in tensors if key.endswith("lora_down.weight"))
    assert any(float(tensors[key].abs().max()) > 0 for key in tensors if key.endswith("lora_up.weight"))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_network_module"] == "networks.dylora"
    assert json.loads(metadata["ss_network_args"]) == {"unit": "2", "conv_dim": "4", "conv_alpha": "2"}
    assert events[-1]["type"] == "done" and events[-1]["steps"] == 2
    load_with_diffusers(pipe, path)
