"""Training options that change what the loop does, each proven on a real tiny run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from tests.test_train_end_to_end import PROJECT, base_overrides, load_tensors, make_learnable_dataset, train
from trainer.checkpoint_layout import UNetLayout, unet_module_to_ldm
from trainer.errors import TrainerError


def kohya_unet_stems_by_hand(unet: nn.Module, sgm: bool) -> set[str]:
    """Every Linear and 1x1 conv inside a Transformer2DModel, named as kohya names them."""
    layout = UNetLayout.from_config(dict(unet.config)) if sgm else None
    stems = set()
    for block_path, block in unet.named_modules():
        if type(block).__name__ != "Transformer2DModel":
            continue
        for inner, module in block.named_modules():
            is_linear = isinstance(module, nn.Linear)
            is_1x1 = isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
            if inner and (is_linear or is_1x1):
                path = f"{block_path}.{inner}"
                stems.add("lora_unet_" + (unet_module_to_ldm(path, layout) if sgm else path).replace(".", "_"))
    return stems


def test_sdxl_from_folder_saves_exactly_the_kohya_target_set(tmp_path: Path, tiny_sdxl) -> None:
    from diffusers import UNet2DConditionModel

    data = make_learnable_dataset(tmp_path)
    path, _ = train(tmp_path, **base_overrides(str(tiny_sdxl.diffusers_dir), data, tmp_path / "out",
                                               max_train_steps=2, text_encoder_lr="1e-4,2e-4"))
    keys = load_tensors(path).keys()
    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl.diffusers_dir, subfolder="unet")
    saved_unet = {key.split(".")[0] for key in keys if key.startswith("lora_unet_")}
    assert saved_unet == kohya_unet_stems_by_hand(unet, sgm=True)
    assert any(key.startswith("lora_te1_text_model_encoder_layers_0_mlp_fc1") for key in keys)
    assert any(key.startswith("lora_te2_text_model_encoder_layers_2_self_attn_out_proj") for key in keys)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["ss_text_encoder_lr"].replace("'", '"')) == [1e-4, 2e-4]


def test_epochs_accumulation_and_numbered_saves(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)  # 2 images x 4 repeats = 8 samples, 4 batches of 2
    out = tmp_path / "out"
    path, events = train(tmp_path, **base_overrides(
        str(tiny_sd15.diffusers_dir), data, out, max_train_epochs=3, gradient_accumulation_steps=2,
        save_every_n_epochs=1, save_last_n_epochs=1,
    ))
    start = events[0]
    assert (start["batches_per_epoch"], start["epochs"], start["total_steps"]) == (4, 3, 6)
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4, 5, 6]
    checkpoints = [Path(e["path"]).name for e in events if e["type"] == "checkpoint"]
    assert checkpoints == ["tiny-000001.safetensors", "tiny-000002.safetensors", "tiny.safetensors"]
    on_disk = sorted(p.name for p in out.glob("*.safetensors"))
    assert on_disk == ["tiny-000002.safetensors", "tiny.safetensors"]  # epoch 1 pruned by save_last_n_epochs
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert (metadata["ss_epoch"], metadata["ss_steps"], metadata["ss_num_epochs"]) == ("3", "6", "3")


def test_step_saves_and_nan_loss_stops_keeping_the_last_good_save(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(TrainerError) as caught:
        train(tmp_path, **base_overrides(
            str(tiny_sd15.diffusers_dir), data, out, max_train_steps=20, learning_rate="1e30", max_grad_norm=0,
            optimizer_type="torch.optim.SGD", save_every_n_steps=1, network_alpha=4,
        ))
    assert "loss became" in caught.value.message and "fp16" in caught.value.hint
    assert not (out / "tiny.safetensors").exists()
    kept = sorted(out.glob("tiny-step*.safetensors"))
    assert caught.value.message.count("last good save") == (1 if kept else 0)
    events = [json.loads(line) for line in (out / "tiny_events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "error" and "loss became" in events[-1]["message"]


def test_many_options_at_once_train_with_finite_loss(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    path, events = train(tmp_path, **base_overrides(
        str(tiny_sd15.diffusers_dir), data, tmp_path / "out", max_train_steps=6, mixed_precision="bf16",
        save_precision="fp16", gradient_checkpointing="true", min_snr_gamma=5, noise_offset=0.05,
        v_parameterization="true", zero_terminal_snr="true", clip_skip=2, max_token_length=150,
        lr_scheduler="cosine", lr_warmup_steps=3, shuffle_caption="true", keep_tokens=1,
        caption_tag_dropout_rate=0.1, network_dropout=0.1, network_args="conv_dim=2", optimizer_type="Prodigy",
        learning_rate=1.0,
    ))
    tensors = load_tensors(path)
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.dim() > 0)
    assert any(key.endswith("lora_down.weight") and tensors[key].dim() == 4 and tensors[key].shape[-1] == 3
               for key in tensors), "conv_dim adds 3x3 LoCon modules"
    steps = [e for e in events if e["type"] == "step"]
    assert all(isinstance(e["loss"], float) for e in steps)
    rates = [e["lr"]["unet"] for e in steps]
    assert rates[0] < rates[2]  # warming up
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["ss_base_model_version"] == "sd_v1_v"


def test_regularisation_images_and_prior_loss_weight(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    reg = tmp_path / "reg" / "1_disc"
    reg.mkdir(parents=True)
    for image in (data / "4_disc").glob("*.png"):
        (reg / image.name).write_bytes(image.read_bytes())
    path, events = train(tmp_path, **base_overrides(
        str(tiny_sd15.diffusers_dir), data, tmp_path / "out", max_train_steps=3, reg_data_dir=str(tmp_path / "reg"),
        prior_loss_weight=0.5,
    ))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    # Two reg images balanced against 8 training samples (2 images x 4 repeats): 4 repeats each.
    assert metadata["ss_num_reg_images"] == "8" and metadata["ss_num_train_images"] == "8"
    assert events[0]["images"] == 4


def test_runs_under_accelerate_launch(tmp_path: Path, tiny_sd15) -> None:
    make_learnable_dataset(tmp_path)
    config = tmp_path / "run.toml"
    config.write_text(
        f"pretrained_model_name_or_path = '{tiny_sd15.diffusers_dir}'\ntrain_data_dir = 'train'\nresolution = 64\n"
        "output_dir = 'out'\noutput_name = 'acc'\nmax_train_steps = 2\nnetwork_dim = 4\n", encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "-m", "trainer.train_network",
         "--config_file", str(config)],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "out" / "acc.safetensors").exists()


def test_cuda_only_options_refuse_on_the_cpu_before_loading(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    for name in ("xformers", "fp8_base"):
        with pytest.raises(TrainerError) as caught:
            train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / name,
                                             max_train_steps=1, **{name: "true"}))
        assert caught.value.option == name and "NVIDIA GPU" in caught.value.message
    with pytest.raises(TrainerError) as caught:
        train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / "bnb", max_train_steps=1,
                                         optimizer_type="PagedAdamW8bit"))
    assert caught.value.option == "optimizer_type" and "NVIDIA GPU" in caught.value.message
