"""The trainer end to end on the tiny fixtures: real models, real steps, real files.

Proves what issue 3 asks: SD1.5 and SDXL train from a diffusers folder and from a single file,
the loss falls on a learnable target, the same seed gives the same weights, the file's stems are
kohya's default set, broken images are skipped and named, and every good image is bucketed.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from safetensors import safe_open

from trainer.config import load_training_config
from trainer.events import read_events
from trainer.train_network import run_training

PROJECT = Path(__file__).resolve().parent.parent


def make_learnable_dataset(root: Path) -> Path:
    """Two simple images with fixed captions: a target a LoRA can learn in a few dozen steps."""
    folder = root / "train" / "4_disc"
    folder.mkdir(parents=True)
    for index, colour in enumerate(((220, 30, 30), (30, 30, 220))):
        image = Image.new("RGB", (64, 64), (255, 255, 255))
        ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=colour)
        image.save(folder / f"disc{index}.png")
        (folder / f"disc{index}.txt").write_text("ohwx disc", encoding="utf-8")
    return root / "train"


def base_overrides(model: str, data: Path, out: Path, **extra) -> dict:
    settings = {
        "pretrained_model_name_or_path": model,
        "train_data_dir": str(data),
        "output_dir": str(out),
        "output_name": "tiny",
        "resolution": "64",
        "network_dim": "4",
        "network_alpha": "4",
        "learning_rate": "3e-3",
        "max_train_steps": "8",
        "train_batch_size": "2",
        "seed": "7",
    }
    settings.update({key: str(value) for key, value in extra.items()})
    return settings


def train(tmp: Path, **overrides) -> tuple[Path, list[dict]]:
    config = load_training_config(overrides=overrides, cwd=tmp)
    path = run_training(config)
    events = read_events(Path(config.output_dir) / "tiny_events.jsonl")
    return path, events


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def test_sd15_from_folder_trains_and_same_seed_gives_same_weights(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    first, events = train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / "a"))
    second, _ = train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / "b"))
    one, two = load_tensors(first), load_tensors(second)
    assert one.keys() == two.keys()
    assert all(torch.equal(one[key], two[key]) for key in one)
    ups = [tensor for key, tensor in one.items() if key.endswith("lora_up.weight")]
    assert any(float(up.abs().max()) > 0 for up in ups), "training must move the zero-initialised up weights"

    kinds = [event["type"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    steps = [event for event in events if event["type"] == "step"]
    assert [event["step"] for event in steps] == list(range(1, 9))
    assert all({"loss", "avg_loss", "lr", "it_per_s", "eta_s", "epoch"} <= event.keys() for event in steps)
    start = events[0]
    assert start["total_steps"] == 8 and start["images"] == 2 and start["images_with_repeats"] == 8
    assert events[-1]["path"] == str(first)


def test_sdxl_from_single_file_trains_with_sgm_keys(tmp_path: Path, tiny_sdxl) -> None:
    data = make_learnable_dataset(tmp_path)
    path, events = train(tmp_path, **base_overrides(
        str(tiny_sdxl.single_file), data, tmp_path / "out", model_config=str(tiny_sdxl.config_dir),
        max_train_steps=4, network_train_unet_only="true", cache_latents="true", cache_text_encoder_outputs="true",
    ))
    keys = load_tensors(path).keys()
    assert any(key.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") for key in keys)
    assert not any("down_blocks" in key for key in keys)
    assert not any(key.startswith("lora_te") for key in keys)  # unet only
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert json.loads(metadata["ss_tag_frequency"])["4_disc"]["ohwx disc"] == 2
    assert events[-1]["type"] == "done" and events[-1]["steps"] == 4


def test_sd15_single_file_and_text_encoder_training(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    path, _ = train(tmp_path, **base_overrides(
        str(tiny_sd15.single_file), data, tmp_path / "out", model_config=str(tiny_sd15.config_dir),
        max_train_steps=3, text_encoder_lr="1e-3",
    ))
    keys = load_tensors(path).keys()
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in keys
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha" in keys


def _fixed_loss(pipe, latents: torch.Tensor, prompt_embeds: torch.Tensor) -> float:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(latents.shape, generator=generator)
    total = 0.0
    with torch.no_grad():
        for t in (100, 300, 500, 700, 900):
            timesteps = torch.tensor([t] * latents.shape[0])
            noisy = pipe.scheduler.add_noise(latents, noise, timesteps)
            prediction = pipe.unet(noisy, timesteps, prompt_embeds).sample
            total += float(torch.nn.functional.mse_loss(prediction, noise))
    return total / 5


def test_loss_falls_on_a_learnable_target(tmp_path: Path, tiny_sd15) -> None:
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    data = make_learnable_dataset(tmp_path)
    path, events = train(tmp_path, **base_overrides(
        str(tiny_sd15.diffusers_dir), data, tmp_path / "out", max_train_steps=40, learning_rate="1e-2",
        network_dim=8, network_alpha=8, train_batch_size=2,
    ))
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15.diffusers_dir, safety_checker=None)
    pipe.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear")
    pixels = torch.stack([
        torch.from_numpy(__import__("numpy").asarray(Image.open(p).convert("RGB"), dtype="float32")).permute(2, 0, 1)
        for p in sorted((data / "4_disc").glob("*.png"))
    ]) / 127.5 - 1.0
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        embeds, _ = pipe.encode_prompt(["ohwx disc"] * 2, "cpu", 1, False)
    before = _fixed_loss(pipe, latents, embeds)
    pipe.load_lora_weights(str(path))
    after = _fixed_loss(pipe, latents, embeds)
    print("fixed-noise loss before", before, "after", after)
    assert after < before * 0.9, (before, after)
    losses = [event["avg_loss"] for event in events if event["type"] == "step"]
    assert losses[-1] < losses[4]


def test_broken_images_are_skipped_and_named_and_every_good_image_is_bucketed(tmp_path: Path, tiny_sd15, image_set) -> None:
    path, events = train(tmp_path, **base_overrides(
        str(tiny_sd15.diffusers_dir), image_set.root, tmp_path / "out", max_train_steps=2, enable_bucket="true",
        min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=32, train_batch_size=1,
    ))
    skipped = {Path(event["path"]) for event in events if event["type"] == "skipped_image"}
    assert skipped == {p.resolve() for p in image_set.broken} or skipped == set(image_set.broken)
    assert all(event["reason"] for event in events if event["type"] == "skipped_image")
    start = next(event for event in events if event["type"] == "start")
    assert start["images"] == len(image_set.good)
    assert sum(bucket["images"] for bucket in start["buckets"]) == len(image_set.good)
    assert path.exists()


def test_cli_runs_headless_and_reports_errors_without_traceback(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    config = tmp_path / "run.toml"
    config.write_text(
        "[model]\npretrained_model_name_or_path = '{}'\n[data]\ntrain_data_dir = 'train'\nresolution = 64\n"
        "[saving]\noutput_dir = 'out'\noutput_name = 'cli'\n[training]\nmax_train_steps = 2\nseed = 1\n"
        "network_dim = 4\n".format(tiny_sd15.diffusers_dir),
        encoding="utf-8",
    )
    assert data.parent == tmp_path
    run = subprocess.run([sys.executable, "-m", "trainer.train_network", "--config_file", str(config),
                          "--network_alpha", "2"], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "out" / "cli.safetensors").exists()
    # A second run refuses to overwrite the first run's file, before any heavy work.
    again = subprocess.run([sys.executable, "-m", "trainer.train_network", "--config_file", str(config)],
                           cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1
    assert "overwrite_output" in again.stderr and "Traceback" not in again.stderr
    typo = subprocess.run([sys.executable, "-m", "trainer.train_network", "--config_file", str(config),
                           "--network_dimm", "8"], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert typo.returncode == 1 and "network_dim" in typo.stderr and "Traceback" not in typo.stderr
