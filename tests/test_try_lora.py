"""'Try it': a LoRA drawn at several strengths on the tiny SD1.5 model, same seed and prompt."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import CoreError
from core.try_lora import (DEFAULT_STRENGTHS, LoraTryout, TryoutSettings, default_prompt, parse_strengths,
                           prompt_for_lora, side_by_side)
from trainer.saving.lora_file import save_lora_file

SETTINGS = TryoutSettings(prompt="ohwx disc, red", negative_prompt="blurry", seed=3, steps=3, guidance_scale=5.0,
                          sampler="euler", width=64, height=64)


def make_sd15_lora(path: Path, tiny_sd15) -> Path:
    """A LoRA/LoCon on the tiny model's UNet and text encoder with strong random up weights."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from trainer.networks.lora import LoRANetwork

    unet = UNet2DConditionModel.from_pretrained(tiny_sd15.diffusers_dir / "unet")
    te = CLIPTextModel.from_pretrained(tiny_sd15.diffusers_dir / "text_encoder")
    network = LoRANetwork.create(unet, [te], ["lora_te"], lambda p: p, dim=4, alpha=4.0, conv_dim=2, conv_alpha=2.0)
    gen = torch.Generator().manual_seed(21)
    state = {k: (torch.randn(v.shape, generator=gen) * 0.2 if k.endswith("lora_up.weight") else v)
             for k, v in network.kohya_state_dict().items()}
    save_lora_file(path, state, {"ss_network_dim": "4"})
    return path


def base_image(tiny_sd15) -> np.ndarray:
    """The base model alone, drawn by diffusers' own pipeline (its own prompt encoding)."""
    from diffusers import StableDiffusionPipeline

    from trainer.sampling.samplers import make_scheduler

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15.diffusers_dir, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = make_scheduler("euler")
    pipe.set_progress_bar_config(disable=True)
    image = pipe(SETTINGS.prompt, negative_prompt=SETTINGS.negative_prompt, height=64, width=64,
                 num_inference_steps=SETTINGS.steps, guidance_scale=SETTINGS.guidance_scale,
                 generator=torch.Generator().manual_seed(SETTINGS.seed)).images[0]
    return np.asarray(image, dtype=np.int16)


def test_strengths_side_by_side_zero_is_the_base_model(tmp_path: Path, tiny_sd15) -> None:
    lora = make_sd15_lora(tmp_path / "disc.safetensors", tiny_sd15)
    tryout = LoraTryout(tiny_sd15.diffusers_dir, device="cpu")
    drawn: list[tuple[int, float]] = []
    # 1.0 first: strength 0 drawn after it proves the base weights are put back between strengths.
    result = tryout.run(lora, SETTINGS, [1.0, 0.0, 0.5], on_image=lambda i, s: drawn.append((i, s)))
    assert drawn == [(0, 1.0), (1, 0.0), (2, 0.5)]
    full, zero, half = (np.asarray(image, dtype=np.int16) for image in result.images)
    assert zero.shape == (64, 64, 3)
    assert np.array_equal(zero, base_image(tiny_sd15))  # exactly the base model's picture
    assert np.abs(full - zero).mean() > 5 and np.abs(half - zero).mean() > 1  # the LoRA changes the picture
    assert np.abs(full - half).mean() > 1
    assert result.grid.size == (3 * 64, 64)
    again = tryout.run(lora, SETTINGS, [0.0])  # same loaded model, same seed: the very same pixels
    assert np.array_equal(np.asarray(again.images[0], dtype=np.int16), zero)


def test_single_file_base_and_user_errors(tmp_path: Path, tiny_sd15) -> None:
    lora = make_sd15_lora(tmp_path / "disc.safetensors", tiny_sd15)
    tryout = LoraTryout(tiny_sd15.single_file, model_config=str(tiny_sd15.config_dir), device="cpu")
    result = tryout.run(lora, SETTINGS, [0.0, 1.0])
    assert len(result.images) == 2 and result.grid.size == (128, 64)
    with pytest.raises(CoreError, match="does not exist"):
        tryout.run(tmp_path / "missing.safetensors", SETTINGS)
    with pytest.raises(CoreError, match="prompt is empty"):
        tryout.run(lora, TryoutSettings(prompt="  "))
    sdxl_stem = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    other = tmp_path / "sdxl.safetensors"
    save_lora_file(other, {f"{sdxl_stem}.lora_down.weight": torch.ones(2, 8),
                           f"{sdxl_stem}.lora_up.weight": torch.ones(8, 2)}, {})
    with pytest.raises(CoreError, match="match no layer") as wrong:
        tryout.run(other, SETTINGS, [1.0])
    assert "base model" in wrong.value.hint


def test_side_by_side_grid_is_n_times_as_wide() -> None:
    from PIL import Image

    tiles = [Image.new("RGB", (40, 30), colour) for colour in ("red", "green", "blue", "white")]
    grid = side_by_side(tiles, ["a", "b", "c", "d"])
    assert grid.size == (160, 30)
    assert grid.getpixel((39, 29)) == (255, 0, 0) and grid.getpixel((159, 29)) == (255, 255, 255)


def test_parse_strengths_accepts_commas_and_spaces_and_names_bad_entries() -> None:
    assert parse_strengths("0, 0.5 1") == (0.0, 0.5, 1.0)
    assert parse_strengths("-1.5,2") == (-1.5, 2.0)
    assert parse_strengths("  ", DEFAULT_STRENGTHS) == (0.0, 0.5, 1.0)
    assert parse_strengths("") == ()
    with pytest.raises(CoreError, match="'half' in '0, half' is not a number") as bad:
        parse_strengths("0, half")
    assert "0, 0.5, 1" in bad.value.hint
    with pytest.raises(CoreError, match="Strength 10 in '0, 10' is outside -2 to 2"):
        parse_strengths("0, 10")
    with pytest.raises(CoreError, match="outside"):
        parse_strengths("nan")


def test_default_prompt_is_the_typed_text_else_the_trigger_words(tmp_path: Path) -> None:
    assert default_prompt(["zkstyle", "1girl"]) == "zkstyle, 1girl"
    assert default_prompt(["zkstyle"], "  my prompt ") == "my prompt"
    with pytest.raises(CoreError, match="prompt is empty and style.safetensors records no trigger words"):
        default_prompt([" "], "", "style.safetensors")
    lora = tmp_path / "zk.safetensors"
    save_lora_file(lora, {"lora_unet_x.lora_down.weight": torch.ones(2, 4),
                          "lora_unet_x.lora_up.weight": torch.ones(4, 2)},
                   {"modelspec.trigger_phrase": "zkstyle", "ss_dataset_dirs": '{"10_zk disc": {}}'})
    assert prompt_for_lora("", lora) == "zkstyle, zk disc"
    assert prompt_for_lora("typed", tmp_path / "missing.safetensors") == "typed"  # the file is not read
    with pytest.raises(CoreError, match="does not exist"):
        prompt_for_lora("", tmp_path / "missing.safetensors")
