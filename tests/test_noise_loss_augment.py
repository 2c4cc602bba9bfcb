"""Noise variations, loss types and weightings, max-norm, masks and image augmentations.

Each function is checked against values worked out by hand; then a few short real runs of the
tiny SD1.5 model show the options reach training (finite losses, and the masks' effect).
"""
from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from tests.test_train_end_to_end import base_overrides, load_tensors, make_learnable_dataset, train
from trainer.config import load_training_config
from trainer.data.blueprint import DatasetSpec, SubsetSpec
from trainer.data.buckets import (
    BucketAssignment, image_to_tensor, prepare_mask, prepare_pixels, random_crop_assignment, resize_and_crop,
)
from trainer.data.epochs import load_batch
from trainer.data.images import apply_gamma, color_augment, load_image_rgb_and_alpha, shift_hue
from trainer.data.latent_cache import LatentCache
from trainer.data.scan import scan_datasets
from trainer.errors import TrainerError
from trainer.maths import (
    debiased_weights, elementwise_loss, huber_c_per_sample, make_noise, masked, v_pred_like_noise_pred_scale,
)
from trainer.networks.lora import LoRAModule, LoRANetwork
from trainer.noise import (
    NoiseSettings, offset_noise, perturb_noise, pyramid_noise, random_strength, training_noise,
)
from trainer.optim_steps import apply_max_norm
from trainer.options.rules import check_config


# ---------------------------------------------------------------- noise

def test_offset_noise_and_its_adaptive_scale_by_hand() -> None:
    latents = torch.zeros(1, 2, 2, 2)
    latents[0, 0] = 2.0  # channel 0 mean 2
    latents[0, 1] = -1.0  # channel 1 mean -1
    noise = torch.zeros(1, 2, 2, 2)
    shift = torch.randn((1, 2, 1, 1), generator=torch.Generator().manual_seed(4))
    plain = offset_noise(latents, noise, 0.1, None, torch.Generator().manual_seed(4))
    assert torch.allclose(plain, (0.1 * shift).expand(1, 2, 2, 2))
    adaptive = offset_noise(latents, noise, 0.1, 0.5, torch.Generator().manual_seed(4))
    strength = torch.tensor([0.1 + 0.5 * 2.0, 0.1 + 0.5 * 1.0]).reshape(1, 2, 1, 1)  # |mean| per channel
    assert torch.allclose(adaptive, (strength * shift).expand(1, 2, 2, 2))
    floored = offset_noise(latents, noise, 0.1, -1.0, torch.Generator().manual_seed(4))
    assert torch.equal(floored, torch.zeros(1, 2, 2, 2))  # 0.1 - 2 and 0.1 - 1 are floored at 0


def test_random_strength_and_input_perturbation_by_hand() -> None:
    draw = float(torch.rand(1, generator=torch.Generator().manual_seed(9)))
    assert random_strength(0.2, True, torch.Generator().manual_seed(9)) == pytest.approx(0.2 * draw)
    assert random_strength(0.2, False, None) == 0.2
    noise = torch.ones(1, 1, 2, 2)
    extra = torch.randn((1, 1, 2, 2), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(perturb_noise(noise, 0.1, torch.Generator().manual_seed(2)), noise + 0.1 * extra)


def test_pyramid_noise_levels_by_hand() -> None:
    noise = torch.randn(1, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(pyramid_noise(noise, 0, 0.3, None), noise / noise.std())
    # 2x2: level 0 is a second full-size noise, level 1 is 1x1 (a constant per channel), then it stops.
    replay = torch.Generator().manual_seed(1)
    torch.rand(1, generator=replay)  # level 0's ratio (unused at full size)
    level0 = torch.randn((1, 2, 2, 2), generator=replay)
    torch.rand(1, generator=replay)  # level 1's ratio: 2 / r < 2, so 1 pixel
    level1 = torch.randn((1, 2, 1, 1), generator=replay)
    total = noise + level0 + 0.3 * level1.expand(1, 2, 2, 2)
    got = pyramid_noise(noise, 6, 0.3, torch.Generator().manual_seed(1))
    assert torch.allclose(got, total / total.std(), atol=1e-6)
    assert float(got.std()) == pytest.approx(1.0)
    big = pyramid_noise(torch.zeros(2, 4, 64, 64), 6, 0.8, torch.Generator().manual_seed(3))
    # The coarse levels make neighbouring pixels alike, which plain noise is not.
    neighbours = torch.corrcoef(torch.stack([big[..., :-1].reshape(-1), big[..., 1:].reshape(-1)]))[0, 1]
    assert float(neighbours) > 0.3


def test_training_noise_defaults_match_make_noise_and_ip_gamma_only_perturbs_the_input() -> None:
    latents = torch.randn(2, 4, 8, 8)
    noise, input_noise = training_noise(latents, NoiseSettings(noise_offset=0.05), torch.Generator().manual_seed(3))
    assert noise is input_noise
    assert torch.equal(noise, make_noise(latents, 0.05, torch.Generator().manual_seed(3)))
    settings = NoiseSettings(ip_noise_gamma=0.1)
    noise, input_noise = training_noise(latents, settings, torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)
    expected_noise = torch.randn(latents.shape, generator=replay)
    extra = torch.randn(latents.shape, generator=replay)
    assert torch.equal(noise, expected_noise)
    assert torch.allclose(input_noise, expected_noise + 0.1 * extra)


# ---------------------------------------------------------------- loss

def test_huber_c_schedules_by_hand() -> None:
    t = torch.tensor([0, 500, 1000])
    fake_alphas = torch.ones(1001)
    assert huber_c_per_sample("constant", 0.1, t, fake_alphas).tolist() == pytest.approx([0.1] * 3)
    # exp(-a t), a = -ln(0.1) / 1000: 1 at 0, sqrt(0.1) halfway, 0.1 at the end.
    assert huber_c_per_sample("exponential", 0.1, t, fake_alphas).tolist() == pytest.approx([1.0, 0.1**0.5, 0.1])
    alphas = torch.tensor([0.8, 0.5])  # sigma = sqrt(0.2 / 0.8) = 0.5, sqrt(0.5 / 0.5) = 1
    got = huber_c_per_sample("snr", 0.1, torch.tensor([0, 1]), alphas).tolist()
    assert got == pytest.approx([0.9 / 1.5**2 + 0.1, 0.9 / 2.0**2 + 0.1])


def test_loss_types_by_hand() -> None:
    prediction = torch.zeros(2, 1, 1, 2)
    target = torch.tensor([[[[3.0, 0.0]]], [[[3.0, 0.0]]]])
    assert elementwise_loss(prediction, target, "l2").flatten().tolist() == [9.0, 0.0, 9.0, 0.0]
    c = torch.tensor([1.0, 0.5])
    huber = elementwise_loss(prediction, target, "huber", c).flatten().tolist()
    assert huber == pytest.approx([2 * 1.0 * (math.sqrt(10) - 1), 0.0, 2 * 0.5 * (math.sqrt(9.25) - 0.5), 0.0])
    smooth = elementwise_loss(prediction, target, "smooth_l1", c).flatten().tolist()
    assert smooth == pytest.approx([2 * (math.sqrt(10) - 1), 0.0, 2 * (math.sqrt(9.25) - 0.5), 0.0])
    # For errors far below c, huber is the l2 loss: 2c (sqrt(e^2 + c^2) - c) ~ e^2.
    small = elementwise_loss(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 1e-2), "huber", torch.tensor([1.0]))
    assert float(small) == pytest.approx(1e-4, rel=1e-2)
    with pytest.raises(ValueError):
        elementwise_loss(prediction, target, "huber")


def test_mask_snr_weightings_by_hand() -> None:
    mask = torch.zeros(1, 4, 4)
    mask[:, :, :2] = 1.0  # left half kept
    mask[:, 0, 0] = 0.0  # one pixel off in the top-left 2x2 block
    weighted = masked(torch.full((1, 3, 2, 2), 2.0), mask)
    assert weighted[0, 0].tolist() == [[1.5, 0.0], [2.0, 0.0]]  # area average times 2
    snr = torch.tensor([4.0, 0.0, 2000.0])
    assert debiased_weights(snr, False).tolist() == pytest.approx([0.5, 1e4, 1 / math.sqrt(1000)])
    assert debiased_weights(snr, True).tolist() == pytest.approx([1 / 5, 1.0, 1 / 1001])
    assert v_pred_like_noise_pred_scale(torch.tensor([1.0, 3.0, 2000.0])).tolist() == \
        pytest.approx([0.5, 0.75, 1000 / 1001])


def test_apply_max_norm_scales_only_modules_over_the_cap() -> None:
    big = LoRAModule("lora_unet_big", torch.nn.Linear(2, 2, bias=False), rank=1, alpha=1.0)
    small = LoRAModule("lora_unet_small", torch.nn.Linear(2, 2, bias=False), rank=2, alpha=1.0)
    with torch.no_grad():
        big.lora_down.weight.copy_(torch.tensor([[3.0, 4.0]]))
        big.lora_up.weight.copy_(torch.tensor([[1.0], [0.0]]))  # update [[3, 4], [0, 0]]: norm 5
        small.lora_down.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        small.lora_up.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # norm 1 x alpha/rank 0.5
    network = LoRANetwork([big, small])
    report = apply_max_norm(network, 1.0)
    assert (report.keys_scaled, report.mean_norm, report.max_norm) == pytest.approx((1, 0.75, 1.0))
    keys_scaled, mean_norm, max_norm = report  # also a plain tuple
    assert keys_scaled == 1 and max_norm == pytest.approx(1.0)
    update = (big.lora_up.weight @ big.lora_down.weight).detach()
    assert float(update.norm()) == pytest.approx(1.0)
    assert update.flatten().tolist() == pytest.approx([0.6, 0.8, 0.0, 0.0])  # same direction, 1/5 the size
    assert big.lora_down.weight.flatten().tolist() == pytest.approx([3 / 5**0.5, 4 / 5**0.5])  # both x sqrt(1/5)
    assert small.lora_up.weight.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(TrainerError):
        apply_max_norm(network, 0.0)


def test_noise_and_loss_rules(tmp_path: Path) -> None:
    base = {"pretrained_model_name_or_path": "/m.safetensors", "output_dir": str(tmp_path)}

    def check(subsets=(), **options):
        return check_config(load_training_config(overrides={**base, **options}), list(subsets))

    with pytest.raises(TrainerError) as caught:
        check(adaptive_noise_scale="0.01")
    assert caught.value.option == "adaptive_noise_scale" and "noise_offset" in caught.value.hint
    assert check(adaptive_noise_scale="0.01", noise_offset="0.05") == []
    with pytest.raises(TrainerError) as caught:
        check([SubsetSpec(image_dir="x")], masked_loss="true")
    assert caught.value.option == "masked_loss" and "alpha_mask" in caught.value.hint
    assert check([SubsetSpec(image_dir="x", alpha_mask=True)], masked_loss="true") == []
    assert check(loss_type="huber", huber_schedule="exponential") == []
    with pytest.raises(TrainerError):
        check(loss_type="huber", huber_schedule="exponential", huber_c="1.5")
    assert any("only apply" in w for w in check(huber_c="0.2"))
    assert any("v-prediction" in w for w in check(scale_v_pred_loss_like_noise_pred="true"))
    assert any("no effect" in w for w in check(ip_noise_gamma_random_strength="true"))


# ---------------------------------------------------------------- augmentations and masks

def test_hue_shift_gamma_and_color_aug_draws() -> None:
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    assert shift_hue(red, 120.0).getpixel((0, 0)) == pytest.approx((0, 255, 0), abs=6)  # red turns green
    assert shift_hue(red, 0.0).getpixel((0, 0)) == (255, 0, 0)
    grey = Image.new("RGB", (2, 2), (128, 128, 128))
    assert apply_gamma(grey, 2.0).getpixel((0, 0)) == (64, 64, 64)  # 255 * (128/255)^2 = 64.25
    picture = Image.new("RGB", (8, 8), (200, 60, 30))
    outcomes = set()
    for seed in range(40):
        twin = random.Random(seed)
        applied = twin.random() <= 0.33
        hue = applied and twin.random() > 0.5
        result = color_augment(picture, random.Random(seed))
        pixel = result.getpixel((0, 0))
        if not applied:
            assert result is picture
        elif hue:  # a hue turn keeps the brightest channel's value
            assert max(pixel) == pytest.approx(200, abs=3) and pixel != (200, 60, 30)
        else:  # a gamma near 1 keeps the hue: red stays the largest channel, blue the smallest
            assert pixel[0] > pixel[1] > pixel[2]
        outcomes.add("none" if not applied else "hue" if hue else "gamma")
    assert outcomes == {"none", "hue", "gamma"}


def test_random_crop_moves_the_crop_within_the_spare_pixels() -> None:
    assignment = BucketAssignment(bucket=(64, 64), resized=(100, 64), crop_top_left=(0, 18), original_size=(100, 64))
    lefts = set()
    for seed in range(30):
        moved = random_crop_assignment(assignment, random.Random(seed))
        top, left = moved.crop_top_left
        assert top == 0 and 0 <= left <= 36 and moved.bucket == assignment.bucket
        lefts.add(left)
    assert len(lefts) > 10
    gradient = Image.linear_gradient("L").resize((100, 64)).convert("RGB")  # brightness changes down the image
    stripes = Image.new("RGB", (100, 64))
    ImageDraw.Draw(stripes).rectangle((0, 0, 9, 63), fill=(255, 255, 255))  # a white band at the far left
    moved = replace(assignment, crop_top_left=(0, 0))
    assert prepare_pixels(stripes, moved)[:, :, :10].min() == 1.0  # the band is in a left crop ...
    assert prepare_pixels(stripes, assignment)[:, :, :10].max() == -1.0  # ... never in the centre one
    assert torch.equal(prepare_pixels(gradient, moved), image_to_tensor(gradient.crop((0, 0, 64, 64))))


def _cutout(path: Path, alpha_left: int, alpha_right: int, size: tuple[int, int] = (64, 64)) -> None:
    image = Image.new("RGBA", size, (30, 30, 220, alpha_right))
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 2 - 1, size[1] - 1), fill=(220, 30, 30, alpha_left))
    image.save(path)


def test_alpha_becomes_a_latent_sized_mask_also_from_the_cache(tmp_path: Path) -> None:
    folder = tmp_path / "1_cut"
    folder.mkdir()
    _cutout(folder / "half.png", 255, 0)
    Image.new("RGB", (64, 64), (0, 200, 0)).save(folder / "opaque.png")
    rgb, alpha = load_image_rgb_and_alpha(folder / "half.png")
    assert rgb.mode == "RGB" and alpha is not None and alpha.getpixel((0, 0)) == 255 and alpha.getpixel((63, 0)) == 0
    assert load_image_rgb_and_alpha(folder / "opaque.png")[1] is None
    subset = SubsetSpec(image_dir=str(folder), alpha_mask=True, flip_aug=True)
    dataset = DatasetSpec(resolution=(64, 64), batch_size=2, enable_bucket=False, min_bucket_reso=64,
                          max_bucket_reso=64, bucket_reso_steps=64, bucket_no_upscale=False, subsets=(subset,))
    records = sorted(scan_datasets((dataset,), strict=False).records, key=lambda r: r.path.name)
    batch = load_batch(records, 1, random.Random(0))
    masks = batch["masks"]
    assert masks.shape == (2, 8, 8)
    flipped = bool(batch["flipped"][0])
    left, right = (0.0, 1.0) if flipped else (1.0, 0.0)
    assert masks[0, :, :4].unique().tolist() == [left] and masks[0, :, 4:].unique().tolist() == [right]
    assert masks[1].unique().tolist() == [1.0]  # no transparency: learned everywhere
    cache = LatentCache()
    cache.ensure(records, lambda pixels: torch.nn.functional.avg_pool2d(pixels, 8), "test-vae", 2)
    cached = load_batch(records, 1, random.Random(0), cache)
    assert torch.equal(cached["masks"], masks) and "pixels" not in cached
    assert torch.equal(cache.mask(records[0], True), cache.mask(records[0], False).flip(-1))
    plain = load_batch([replace(r, subset=replace(subset, alpha_mask=False)) for r in records], 1, random.Random(0))
    assert "masks" not in plain


def test_color_aug_and_random_crop_change_pixels_reproducibly(tmp_path: Path) -> None:
    folder = tmp_path / "1_wide"
    folder.mkdir()
    image = Image.linear_gradient("L").rotate(90).resize((96, 64)).convert("RGB")
    image.save(folder / "wide.png")
    subset = SubsetSpec(image_dir=str(folder), random_crop=True, color_aug=True)
    dataset = DatasetSpec(resolution=(64, 64), batch_size=1, enable_bucket=False, min_bucket_reso=64,
                          max_bucket_reso=64, bucket_reso_steps=64, bucket_no_upscale=False, subsets=(subset,))
    record = scan_datasets((dataset,), strict=False).records[0]
    centre = prepare_pixels(image, record.assignment)
    loads = [load_batch([record], 1, random.Random(seed))["pixels"][0] for seed in range(12)]
    assert all(torch.equal(a, b) for a, b in zip(loads, [load_batch([record], 1, random.Random(s))["pixels"][0]
                                                        for s in range(12)]))
    assert sum(not torch.equal(pixels, centre) for pixels in loads) >= 10  # crops rarely land in the centre
    assert resize_and_crop(image, record.assignment).size == (64, 64)


def test_mask_of_an_image_without_alpha_is_ones_at_the_asked_size() -> None:
    assignment = BucketAssignment(bucket=(64, 48), resized=(64, 48), crop_top_left=(0, 0), original_size=(64, 48))
    assert torch.equal(prepare_mask(None, assignment, downscale=8), torch.ones(6, 8))
    alpha = Image.new("L", (64, 48), 128)
    assert prepare_mask(alpha, assignment).shape == (48, 64)
    assert float(prepare_mask(alpha, assignment, downscale=8).mean()) == pytest.approx(128 / 255)


# ---------------------------------------------------------------- real runs

def _cutout_dataset(root: Path, alpha: int) -> Path:
    folder = root / "train" / "4_disc"
    folder.mkdir(parents=True)
    for index in range(2):
        _cutout(folder / f"disc{index}.png", alpha, alpha)
        (folder / f"disc{index}.txt").write_text("ohwx disc", encoding="utf-8")
    return root / "train"


def test_all_zero_mask_leaves_the_lora_untouched_and_a_full_mask_trains(tmp_path: Path, tiny_sd15) -> None:
    ups = {}
    for alpha in (0, 255):
        root = tmp_path / f"alpha{alpha}"
        data = _cutout_dataset(root, alpha)
        path, events = train(root, **base_overrides(
            str(tiny_sd15.diffusers_dir), data, root / "out", max_train_steps=3, masked_loss="true",
            alpha_mask="true", optimizer_args="weight_decay=0", text_encoder_lr="1e-3",
        ))
        losses = [event["loss"] for event in events if event["type"] == "step"]
        assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
        if alpha == 0:
            assert losses == [0.0, 0.0, 0.0]
        tensors = load_tensors(path)
        ups[alpha] = max(float(t.abs().max()) for key, t in tensors.items() if key.endswith("lora_up.weight"))
    assert ups[0] == 0.0  # no gradient anywhere: the zero-initialised up weights stay zero
    assert ups[255] > 0.0


def test_noise_and_loss_options_train_with_finite_losses(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    everything = dict(
        noise_offset="0.05", adaptive_noise_scale="0.01", noise_offset_random_strength="true",
        multires_noise_iterations="4", multires_noise_discount="0.3", ip_noise_gamma="0.1",
        ip_noise_gamma_random_strength="true", loss_type="huber", huber_schedule="snr", min_snr_gamma="5",
        debiased_estimation_loss="true", v_parameterization="true", scale_v_pred_loss_like_noise_pred="true",
        flip_aug="true", color_aug="true", random_crop="true", scale_weight_norms="1.0",
    )
    losses = {}
    for label, extra in (("plain", {}), ("options", everything), ("smooth", {"loss_type": "smooth_l1",
                                                                             "huber_schedule": "exponential"})):
        path, events = train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / label,
                                                        max_train_steps=3, **extra))
        warnings = [event["message"] for event in events if event["type"] == "warning"]
        assert not any("not implemented" in warning for warning in warnings), warnings
        losses[label] = [event["loss"] for event in events if event["type"] == "step"]
        assert len(losses[label]) == 3 and all(math.isfinite(v) and v >= 0 for v in losses[label]), label
        assert any(float(t.abs().max()) > 0 for k, t in load_tensors(path).items() if k.endswith("lora_up.weight"))
    assert losses["options"] != losses["plain"] and losses["smooth"] != losses["plain"]
