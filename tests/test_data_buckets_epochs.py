"""Buckets (hand-computed cases), the dataset scan on the odd-case image set, and the epoch plan."""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainer.config import load_training_config
from trainer.data.blueprint import DatasetSpec, SubsetSpec, build_datasets
from trainer.data.buckets import (
    BucketAssignment, BucketSelector, assign_bucket, make_bucket_resolutions, prepare_pixels,
    sdxl_crop_top_left_hw, sdxl_original_size_hw, sdxl_target_size_hw,
)
from trainer.data.epochs import EpochBatches, epoch_batches, load_batch, plan_epoch, steps_per_epoch
from trainer.data.scan import CAPTION_CLASS_TOKENS, CAPTION_FILE, ImageRecord, scan_datasets
from trainer.errors import TrainerError

BUCKETED = DatasetSpec(
    resolution=(512, 512), batch_size=2, enable_bucket=True, min_bucket_reso=256, max_bucket_reso=1024,
    bucket_reso_steps=64, bucket_no_upscale=False, subsets=(),
)
NO_UPSCALE = replace(BUCKETED, bucket_no_upscale=True)
FIXED = replace(BUCKETED, enable_bucket=False)


# --- buckets ------------------------------------------------------------------------------------

def test_bucket_set_for_512_matches_sd_scripts_by_hand() -> None:
    # Widths 256..1024 step 64, each with the largest height under 512*512 (capped at 1024, >= 256).
    expected = {
        (256, 1024), (320, 768), (384, 640), (448, 576), (512, 512), (576, 448), (640, 384), (704, 320),
        (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
        (320, 704), (256, 832), (256, 896), (256, 960),
    }
    buckets = make_bucket_resolutions((512, 512), 256, 1024, 64)
    assert set(buckets) == expected and list(buckets) == sorted(expected)
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in buckets)


def test_wide_image_goes_to_the_closest_aspect_bucket_and_is_centre_cropped() -> None:
    # 1000x500 (aspect 2.0): 704x320 (2.2) beats 640x384 (1.67). Cover: scale 704/1000 -> 704x352;
    # crop (352 - 320) / 2 = 16 rows from the top, none from the left.
    a = assign_bucket((1000, 500), BUCKETED)
    assert a == BucketAssignment(bucket=(704, 320), resized=(704, 352), crop_top_left=(16, 0), original_size=(1000, 500))
    tall = assign_bucket((500, 1000), BUCKETED)
    assert (tall.bucket, tall.resized, tall.crop_top_left) == ((320, 704), (352, 704), (0, 16))


def test_image_already_of_a_bucket_size_is_not_resized() -> None:
    a = assign_bucket((640, 384), BUCKETED)
    assert (a.bucket, a.resized, a.crop_top_left) == ((640, 384), (640, 384), (0, 0))
    small_square = assign_bucket((128, 128), BUCKETED)  # enlarged to the 512 bucket (upscaling allowed)
    assert (small_square.bucket, small_square.resized) == ((512, 512), (512, 512))


def test_sdxl_conditioning_is_height_width_with_sd_scripts_crop_numbers() -> None:
    a = assign_bucket((1000, 500), BUCKETED)
    assert sdxl_original_size_hw(a) == (500, 1000)
    assert sdxl_target_size_hw(a) == (320, 704)
    # sd-scripts fits the original into the bucket: 640x320, offset ((704 - 640) // 2, 0).
    assert sdxl_crop_top_left_hw(a) == (0, 32)
    assert sdxl_crop_top_left_hw(a, flipped=True) == (0, 704 - (32 + 640))
    tall = assign_bucket((500, 1000), BUCKETED)
    assert sdxl_crop_top_left_hw(tall) == (32, 0)


def test_bucket_no_upscale_small_image_rounds_down_never_enlarges() -> None:
    a = assign_bucket((300, 200), NO_UPSCALE)
    assert a == BucketAssignment(bucket=(256, 192), resized=(300, 200), crop_top_left=(4, 22), original_size=(300, 200))


def test_bucket_no_upscale_large_image_is_scaled_to_the_area() -> None:
    # 2000x1000 over 512^2: sqrt(262144*2) = 724 -> width rounding gives 704x320 (aspect 2.2),
    # height rounding gives 640x320 (aspect 2.0): the closer one wins.
    a = assign_bucket((2000, 1000), NO_UPSCALE)
    assert (a.bucket, a.resized, a.crop_top_left) == ((640, 320), (640, 320), (0, 0))
    square = assign_bucket((1024, 1024), NO_UPSCALE)
    assert (square.bucket, square.resized) == ((512, 512), (512, 512))


def test_bucket_no_upscale_side_below_one_step_is_the_only_enlargement() -> None:
    a = assign_bucket((40, 100), NO_UPSCALE)
    assert (a.resized, a.bucket, a.crop_top_left) == ((64, 160), (64, 128), (16, 0))


def test_without_buckets_every_image_covers_the_resolution() -> None:
    wide = assign_bucket((1000, 500), FIXED)
    assert (wide.bucket, wide.resized, wide.crop_top_left) == ((512, 512), (1024, 512), (0, 256))
    small = assign_bucket((100, 50), FIXED)
    assert (small.bucket, small.resized, small.crop_top_left) == ((512, 512), (1024, 512), (0, 256))


def test_bucket_options_inconsistent_with_the_resolution_are_errors() -> None:
    with pytest.raises(TrainerError) as caught:
        BucketSelector.for_dataset(replace(BUCKETED, min_bucket_reso=768))
    assert caught.value.option == "min_bucket_reso"
    with pytest.raises(TrainerError) as caught:
        BucketSelector.for_dataset(replace(BUCKETED, resolution=(1536, 1536)))
    assert caught.value.option == "max_bucket_reso"


def test_prepare_pixels_crops_the_centre_scales_and_flips() -> None:
    # R = x, G = y: the first output pixel tells where the crop started.
    image = Image.new("RGB", (250, 200))
    image.putdata([(x, y, 0) for y in range(200) for x in range(250)])
    a = assign_bucket((250, 200), NO_UPSCALE)
    assert (a.bucket, a.crop_top_left) == ((192, 192), (4, 29))
    pixels = prepare_pixels(image, a)
    assert pixels.shape == (3, 192, 192) and pixels.dtype == torch.float32
    assert pixels[0, 0, 0].item() == pytest.approx(29 / 127.5 - 1) and pixels[1, 0, 0].item() == pytest.approx(4 / 127.5 - 1)
    flipped = prepare_pixels(image, a, flip=True)
    assert torch.equal(flipped, torch.flip(pixels, dims=[2]))
    white = prepare_pixels(Image.new("RGB", (1000, 500), "white"), assign_bucket((1000, 500), BUCKETED))
    assert white.shape == (3, 320, 704) and torch.all(white == 1.0)
    with pytest.raises(TrainerError):
        prepare_pixels(image, assign_bucket((300, 200), NO_UPSCALE))  # not the scanned size


# --- scan ---------------------------------------------------------------------------------------

def subset_specs(image_set, **changes) -> tuple[SubsetSpec, SubsetSpec]:
    subject, style = image_set.subsets
    return (SubsetSpec(image_dir=str(subject), num_repeats=10, class_tokens="ohwx woman", **changes),
            SubsetSpec(image_dir=str(style), num_repeats=3, class_tokens="style", **changes))


def dataset_of(image_set, **changes) -> tuple[DatasetSpec, ...]:
    return (replace(BUCKETED, subsets=subset_specs(image_set, **changes)),)


def test_scan_keeps_every_good_image_and_names_every_broken_one(image_set_template) -> None:
    result = scan_datasets(dataset_of(image_set_template), strict=False)
    assert {r.path for r in result.records} == set(image_set_template.good)
    assert len(result.records) == len(image_set_template.good) == 19
    assert {s.path for s in result.skipped} == set(image_set_template.broken)
    assert all(s.reason for s in result.skipped)
    seen = {r.path for r in result.records} | {s.path for s in result.skipped}
    assert not seen & set(image_set_template.non_images) and not seen & set(image_set_template.orphan_captions)
    assert sum(c.images for c in result.bucket_table.values()) == len(image_set_template.good)
    assert sum(c.with_repeats for c in result.bucket_table.values()) == 13 * 10 + 6 * 3
    assert result.num_train_images == 148 and result.num_reg_images == 0
    assert result.subset_image_counts == {(0, 0): 13, (0, 1): 6}
    for record in result.records:
        assert record.original_size == image_set_template.expected_size[record.path]
        assert record.bucket in make_bucket_resolutions((512, 512), 256, 1024, 64)
    assert any("truncated.jpg" in w for w in result.warnings)
    assert any("orphan.txt" in w for w in result.warnings)


def test_scan_captions_and_class_tokens(image_set_template) -> None:
    by_path = {r.path: r for r in scan_datasets(dataset_of(image_set_template), strict=False).records}
    for path, caption in image_set_template.captions.items():
        assert (by_path[path].caption, by_path[path].caption_source) == (caption, CAPTION_FILE)
    uncaptioned = {p.name: by_path[p] for p in image_set_template.uncaptioned}
    assert (uncaptioned["uncaptioned.webp"].caption, uncaptioned["uncaptioned.webp"].caption_source) == ("ohwx woman", CAPTION_CLASS_TOKENS)
    assert uncaptioned["style_b.bmp"].caption == "style"


def test_scan_metadata_dirs_and_tag_frequency(image_set_template) -> None:
    result = scan_datasets(dataset_of(image_set_template), strict=False)
    assert result.dataset_dirs == {"10_ohwx woman": {"n_repeats": 10, "img_count": 13},
                                   "3_style": {"n_repeats": 3, "img_count": 6}}
    subject, style = result.tag_frequency["10_ohwx woman"], result.tag_frequency["3_style"]
    assert subject["ohwx woman"] == 13  # 12 captions + the class tokens of uncaptioned.webp
    assert subject["café"] == 1 and subject["猫"] == 2 and subject["red dress"] == 1
    assert style["style"] == 6 and style["red dress"] == 2 and style["smaller"] == 1
    expected_total = sum(len(c.split(",")) for p, c in image_set_template.captions.items() if "10_" in p.parent.name) + 1
    assert sum(subject.values()) == expected_total


def test_scan_from_train_data_dir_via_the_blueprint(image_set_template, tmp_path: Path) -> None:
    config = load_training_config(
        overrides={"train_data_dir": str(image_set_template.root), "enable_bucket": "true"}, cwd=tmp_path)
    datasets, _ = build_datasets(config)
    result = scan_datasets(datasets, strict=config["strict_images"])
    assert {r.path for r in result.records} == set(image_set_template.good)
    assert {r.num_repeats for r in result.records if r.subset_index == 0} == {10}


def test_strict_mode_raises_naming_every_broken_file(image_set_template) -> None:
    with pytest.raises(TrainerError) as caught:
        scan_datasets(dataset_of(image_set_template), strict=True)
    for path in image_set_template.broken:
        assert str(path) in str(caught.value)
    assert caught.value.option == "strict_images"


def test_scan_order_does_not_depend_on_threads(image_set_template) -> None:
    one = scan_datasets(dataset_of(image_set_template), strict=False, workers=1)
    four = scan_datasets(dataset_of(image_set_template), strict=False, workers=4)
    assert one.records == four.records and one.skipped == four.skipped
    names = [r.path.name for r in one.records if r.subset_index == 1]
    assert names == sorted(names)


def test_scan_warnings_for_missing_and_multiline_captions_and_hidden_files(image_set) -> None:
    subject = image_set.subsets[0]
    (subject / "plain_rgb.txt").write_text("line one\nline two\n", encoding="utf-8")
    (subject / "._plain_rgb.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS companion: ignored
    (subject / "nested").mkdir()
    Image.new("RGB", (64, 64)).save(subject / "nested" / "inner.png")  # sub-folders are not entered
    spec = replace(BUCKETED, subsets=(SubsetSpec(image_dir=str(subject), num_repeats=2),))
    result = scan_datasets((spec,), strict=False)
    by_name = {r.path.name: r for r in result.records}
    assert by_name["plain_rgb.png"].caption == "line one"
    assert by_name["uncaptioned.webp"].caption == "" and by_name["uncaptioned.webp"].caption_source == "none"
    assert "inner.png" not in by_name and "._plain_rgb.png" not in by_name
    assert "._plain_rgb.png" not in {s.path.name for s in result.skipped}
    assert any("more than one line" in w and "plain_rgb.txt" in w for w in result.warnings)
    assert any("empty caption" in w and "uncaptioned.webp" in w for w in result.warnings)


def test_empty_subset_warns_and_all_empty_is_an_error(image_set_template, tmp_path: Path) -> None:
    empty = tmp_path / "5_empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images", encoding="utf-8")
    spec = replace(BUCKETED, subsets=subset_specs(image_set_template) + (SubsetSpec(image_dir=str(empty)),))
    result = scan_datasets((spec,), strict=False)
    assert result.subset_image_counts[(0, 2)] == 0
    assert any("5_empty" in w and "no usable images" in w for w in result.warnings)
    with pytest.raises(TrainerError) as caught:
        scan_datasets((replace(BUCKETED, subsets=(SubsetSpec(image_dir=str(empty)),)),), strict=False)
    assert "5_empty" in str(caught.value)
    with pytest.raises(TrainerError) as caught:
        scan_datasets((replace(BUCKETED, subsets=(SubsetSpec(image_dir=str(tmp_path / "nope")),)),), strict=False)
    assert caught.value.option == "image_dir"


# --- epoch plan -----------------------------------------------------------------------------------

def fake_record(name: str, bucket: tuple[int, int], repeats: int, dataset_index: int = 0) -> ImageRecord:
    assignment = BucketAssignment(bucket=bucket, resized=bucket, crop_top_left=(0, 0), original_size=bucket)
    return ImageRecord(
        path=Path(f"/data/{name}.png"), dataset_index=dataset_index, subset_index=0, caption=name,
        caption_source=CAPTION_FILE, original_size=bucket, assignment=assignment, num_repeats=repeats,
        is_reg=False, subset=SubsetSpec(image_dir="/data", num_repeats=repeats),
    )


RECORDS = (
    [fake_record(f"a{i}", (512, 512), 2) for i in range(3)]        # 6 samples / 4 -> 2 batches (4 + 2)
    + [fake_record("b0", (704, 320), 3)]                           # 3 samples / 4 -> 1 batch
    + [fake_record(f"c{i}", (512, 512), 1, dataset_index=1) for i in range(2)]  # batch 1 -> 2 batches
)
DATASETS = (replace(BUCKETED, batch_size=4), replace(BUCKETED, batch_size=1))


def test_each_record_appears_num_repeats_times_and_partial_batches_are_kept() -> None:
    plan = plan_epoch(RECORDS, DATASETS, epoch=1, seed=123)
    counts = Counter(r.path.name for batch in plan for r in batch.records)
    assert counts == {r.path.name: r.num_repeats for r in RECORDS}
    sizes = sorted(len(batch.records) for batch in plan)
    assert sizes == [1, 1, 2, 3, 4]
    for batch in plan:
        assert {r.bucket for r in batch.records} == {batch.bucket}
        assert {r.dataset_index for r in batch.records} == {batch.dataset_index}


def test_steps_per_epoch_formula() -> None:
    assert steps_per_epoch(RECORDS, DATASETS) == 5 == len(plan_epoch(RECORDS, DATASETS, 1, 0))
    one = [fake_record(f"x{i}", (512, 512), 10) for i in range(13)]
    assert steps_per_epoch(one, (replace(BUCKETED, batch_size=4),)) == math.ceil(130 / 4)


def test_same_seed_and_epoch_give_the_same_order() -> None:
    def order(epoch: int, seed: int) -> list[list[str]]:
        return [[r.path.name for r in b.records] for b in plan_epoch(RECORDS, DATASETS, epoch, seed)]

    assert order(1, 7) == order(1, 7)
    assert order(1, 7) == [[r.path.name for r in b.records] for b in plan_epoch(list(reversed(RECORDS)), DATASETS, 1, 7)]
    assert len({str(order(epoch, 7)) for epoch in range(1, 9)}) > 1  # epochs differ
    assert len({str(order(1, seed)) for seed in range(8)}) > 1  # seeds differ


def test_load_batch_gives_pixels_captions_and_sdxl_sizes(image_set_template) -> None:
    specs = subset_specs(image_set_template, shuffle_caption=True, keep_tokens=1, flip_aug=True)
    datasets = (replace(BUCKETED, subsets=specs),)
    records = scan_datasets(datasets, strict=False).records
    plan = plan_epoch(records, datasets, epoch=1, seed=5)
    batch = max(plan, key=lambda b: len(b.records))
    loaded = load_batch(batch.records, 1, random.Random(0))
    width, height = batch.bucket
    assert loaded["pixels"].shape == (len(batch.records), 3, height, width) and loaded["pixels"].dtype == torch.float32
    assert loaded["pixels"].min() >= -1 and loaded["pixels"].max() <= 1
    assert "latents" not in loaded
    assert loaded["target_sizes"].tolist() == [[height, width]] * len(batch.records)
    assert loaded["original_sizes"].tolist() == [[r.original_size[1], r.original_size[0]] for r in batch.records]
    assert loaded["crop_top_lefts"].shape == (len(batch.records), 2)
    assert loaded["is_reg"].dtype == torch.bool and not loaded["is_reg"].any()
    assert loaded["paths"] == [r.path for r in batch.records]
    for caption, record in zip(loaded["captions"], batch.records):
        first = record.caption.split(",")[0].strip()
        assert caption.split(", ")[0] == first
        assert sorted(caption.split(", ")) == sorted(t.strip() for t in record.caption.split(","))
    again = load_batch(batch.records, 1, random.Random(0))
    assert again["captions"] == loaded["captions"] and torch.equal(again["pixels"], loaded["pixels"])


def test_load_batch_uses_the_latent_lookup_when_given(image_set_template) -> None:
    records = scan_datasets(dataset_of(image_set_template), strict=False).records
    batch = plan_epoch(records, (replace(BUCKETED, subsets=()),), 1, 0)[0]
    asked = []

    def lookup(record: ImageRecord, flip: bool) -> torch.Tensor:
        asked.append((record.path, flip))
        return torch.full((4, 2, 2), float(len(asked)))

    loaded = load_batch(batch.records, 1, random.Random(0), latent_lookup=lookup)
    assert "pixels" not in loaded and loaded["latents"].shape == (len(batch.records), 4, 2, 2)
    assert asked == [(r.path, False) for r in batch.records]


def test_epoch_batches_work_directly_and_through_a_dataloader(image_set_template) -> None:
    datasets = dataset_of(image_set_template, shuffle_caption=True)
    records = [r for r in scan_datasets(datasets, strict=False).records if r.subset_index == 1]
    batches = epoch_batches(records, datasets, epoch=2, seed=9)
    assert isinstance(batches, EpochBatches) and len(batches) == steps_per_epoch(records, datasets)
    direct = list(batches)
    # Two worker processes: each batch seeds its own rng, so workers give what direct iteration gives.
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=2)
    through = list(loader)
    assert [b["captions"] for b in direct] == [b["captions"] for b in through]
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(direct, through))
    assert sum(len(b["paths"]) for b in direct) == 6 * 3
