"""Validation finds every planted defect of the odd-case image set; fixes never delete; statistics match the trainer."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.dataset_manager import DatasetManager, main
from core.datasets.fixes import ORIGINALS_DIR, REJECTED_DIR, convert_images, move_rejects
from core.datasets.hashing import ahash, dhash, near_duplicate_pairs, perceptual_hash
from core.datasets.statistics import BucketSettings, compute_statistics
from core.datasets.validation import (
    ALPHA, BAD_CAPTION, BROKEN_KINDS, CMYK, CORRUPT, DUPLICATE, EMPTY, HUGE, EMPTY_CAPTION, NEAR_DUPLICATE, NO_CAPTION, ODD_MODE_KINDS,
    ORPHAN_CAPTION, OUTSIDE_SUBSET, PALETTE, SIXTEEN_BIT, TOO_SMALL, TRUNCATED, ValidationSettings, validate_dataset,
)
from core.errors import CoreError
from core.paths import ProjectPaths
from trainer.config import load_training_config
from trainer.data.blueprint import build_datasets
from trainer.data.epochs import steps_per_epoch
from trainer.data.images import load_image_rgb
from trainer.data.scan import scan_datasets

# Loose enough that no fixture image is "too small" (the smallest is 64x64), so every finding is planted.
LOOSE = ValidationSettings(min_side=64)


def found(report) -> set[tuple[str, str]]:
    return {(f.kind, f.path.name) for f in report.findings}


def test_validation_finds_every_planted_defect_and_nothing_else(image_set_template) -> None:
    s = image_set_template
    report = validate_dataset(s.root, LOOSE)
    by_name = {p.name: p for p in s.good + s.broken}
    expected = {
        (EMPTY, "empty.png"), (CORRUPT, "not_really.jpg"), (TRUNCATED, "truncated.jpg"), (TRUNCATED, "truncated.png"),
        (CMYK, "cmyk.jpg"), (SIXTEEN_BIT, "gray16.png"), (PALETTE, "palette.png"), (PALETTE, "palette_alpha.png"),
        (ALPHA, "palette_alpha.png"), (ALPHA, "rgba_hole.PNG"), (ALPHA, "la_alpha.png"), (ALPHA, "style_a.WEBP"),
    }
    expected |= {(DUPLICATE, copy.name) for _, copy in s.duplicates}
    expected |= {(NEAR_DUPLICATE, near.name) for _, near in s.near_duplicates}
    expected |= {(NO_CAPTION, p.name) for p in s.uncaptioned}
    expected |= {(ORPHAN_CAPTION, p.name) for p in s.orphan_captions}
    assert found(report) == expected
    # Cross-check against the fixture's own lists, so a new planted file cannot slip by unnoticed.
    assert report.paths(*BROKEN_KINDS) == set(s.broken)
    assert {p for p in report.paths(*ODD_MODE_KINDS)} == {by_name[n] for n in
            ("cmyk.jpg", "gray16.png", "palette.png", "palette_alpha.png", "rgba_hole.PNG", "la_alpha.png", "style_a.WEBP")}
    for original, copy in s.duplicates:
        assert next(f for f in report.of_kind(DUPLICATE) if f.path == copy).related == original
    for original, near in s.near_duplicates:
        assert next(f for f in report.of_kind(NEAR_DUPLICATE) if f.path == near).related == original
    assert {i.path for i in report.images} == set(s.good)
    assert {i.path: i.size for i in report.images} == s.expected_size  # sizes upright, as the trainer sees them
    assert not report.paths(*BROKEN_KINDS) & set(s.non_images)


def test_too_small_and_huge_limits(image_set_template, tmp_path: Path) -> None:
    report = validate_dataset(image_set_template.root, ValidationSettings(min_side=100))
    small = {p.name for p, (w, h) in image_set_template.expected_size.items() if min(w, h) < 100}
    assert {f.path.name for f in report.of_kind(TOO_SMALL)} == small and "style_b.bmp" in small
    folder = tmp_path / "10_big"
    folder.mkdir()
    Image.new("RGB", (300, 200), (9, 9, 9)).save(folder / "big.png")
    huge = validate_dataset(folder, ValidationSettings(min_side=1, max_pixels=300 * 200 - 1))
    assert [(f.kind, f.path.name) for f in huge.findings] == [(HUGE, "big.png")]  # not decoded, so no other finding
    assert "60,000 pixels" in huge.findings[0].detail


def test_images_outside_n_name_folders_are_flagged(image_set, tmp_path: Path) -> None:
    loose = image_set.root / "loose.png"
    Image.new("RGB", (64, 64)).save(loose)
    nested = image_set.subsets[0] / "nested"
    nested.mkdir()
    Image.new("RGB", (64, 64)).save(nested / "deep.png")
    report = validate_dataset(image_set.root, LOOSE)
    assert {f.path.name for f in report.of_kind(OUTSIDE_SUBSET)} == {"loose.png", "deep.png"}


def test_empty_and_unreadable_captions(image_set) -> None:
    subject = image_set.subsets[0]
    (subject / "plain_rgb.txt").write_bytes(b" \r\n")
    (subject / "wide_bom.txt").write_bytes("caf\u00e9".encode("latin-1"))
    report = validate_dataset(subject, LOOSE)
    assert {(f.kind, f.path.name) for f in report.of_kind(EMPTY_CAPTION, BAD_CAPTION)} == {
        (EMPTY_CAPTION, "plain_rgb.txt"), (BAD_CAPTION, "wide_bom.txt")}


def test_perceptual_hashes_by_hand() -> None:
    ramp = Image.fromarray(np.tile(np.arange(0, 252, 28, dtype=np.uint8), (8, 1)), "L")  # 9x8, brighter rightwards
    assert dhash(ramp) == 2**64 - 1
    halves = np.zeros((8, 8), np.uint8)
    halves[:, 4:] = 200  # right half bright: bits 0000 1111 in every row
    assert ahash(Image.fromarray(halves, "L")) == int("00001111" * 8, 2)
    a, b = perceptual_hash(ramp), perceptual_hash(Image.fromarray(halves, "L"))
    assert near_duplicate_pairs([a, a, b]) == [(0, 1, 0, 0)]


def test_move_rejects_moves_never_deletes_and_the_trainer_then_skips_nothing(image_set) -> None:
    s = image_set
    before = {p: p.read_bytes() for p in s.broken}
    copy = s.duplicates[0][1]
    copy_bytes, copy_caption = copy.read_bytes(), s.caption_files[copy].read_bytes()
    report = validate_dataset(s.root, LOOSE)
    result = move_rejects(report, BROKEN_KINDS + (DUPLICATE,))
    for path, data in before.items():
        assert not path.exists()
        assert (s.root / REJECTED_DIR / path.relative_to(s.root)).read_bytes() == data
    moved_copy = s.root / REJECTED_DIR / copy.relative_to(s.root)
    assert moved_copy.read_bytes() == copy_bytes and moved_copy.with_suffix(".txt").read_bytes() == copy_caption
    assert len(result.moved) == len(s.broken) + 2  # the duplicate travels with its caption
    log = (s.root / REJECTED_DIR / "moves.tsv").read_text(encoding="utf-8").splitlines()
    assert log[0] == "time\treason\tfrom\tto" and len(log) == 1 + len(result.moved)
    again = validate_dataset(s.root, LOOSE)
    assert not again.of_kind(*BROKEN_KINDS, DUPLICATE)
    config = load_training_config(overrides={"train_data_dir": str(s.root), "enable_bucket": "true"})
    assert scan_datasets(build_datasets(config)[0], strict=True).skipped == ()  # _rejected/ is not read


def test_duplicate_fix_keeps_the_copy_with_the_caption(tmp_path: Path) -> None:
    folder = tmp_path / "10_char"
    folder.mkdir()
    Image.new("RGB", (96, 96), (30, 120, 200)).save(folder / "img0.png")
    (folder / "img0.txt").write_text("char, blue", encoding="utf-8")
    data = (folder / "img0.png").read_bytes()
    (folder / "a_copy.png").write_bytes(data)  # first in file order, no caption
    (folder / "b_copy.png").write_bytes(data)
    (folder / "b_copy.txt").write_text("  \n", encoding="utf-8")  # an empty caption is no reason to keep it
    report = validate_dataset(folder, LOOSE)
    duplicates = {f.path.name: f.related.name for f in report.of_kind(DUPLICATE)}
    assert duplicates == {"a_copy.png": "img0.png", "b_copy.png": "img0.png"}
    move_rejects(report, (DUPLICATE,))
    assert (folder / "img0.png").read_bytes() == data and (folder / "img0.txt").read_text(encoding="utf-8") == "char, blue"
    assert sorted(p.name for p in (folder / REJECTED_DIR).iterdir()) == ["a_copy.png", "b_copy.png", "b_copy.txt", "moves.tsv"]
    assert not validate_dataset(folder, LOOSE).of_kind(DUPLICATE)


def test_validation_uses_the_trainers_pixel_limit() -> None:
    from core.datasets.validation import DEFAULT_MAX_PIXELS
    from trainer.data.images import DEFAULT_MAX_PIXELS as TRAINER_MAX_PIXELS

    assert DEFAULT_MAX_PIXELS == TRAINER_MAX_PIXELS == ValidationSettings().max_pixels


def test_convert_keeps_originals_and_gives_the_trainer_the_same_pixels(image_set) -> None:
    s = image_set
    odd = {p.name: p for p in s.good if p.name in ("cmyk.jpg", "gray16.png", "palette_alpha.png", "la_alpha.png")}
    originals = {name: path.read_bytes() for name, path in odd.items()}
    seen = {name: np.asarray(load_image_rgb(path)) for name, path in odd.items()}
    report = validate_dataset(s.subsets[0], LOOSE)
    result = convert_images(report, ODD_MODE_KINDS, image_format="png", paths=set(odd.values()))
    assert sorted(c.original.name for c in result.converted) == sorted(odd)
    for converted in result.converted:
        name = converted.original.name
        assert converted.converted == converted.original.with_suffix(".png")
        assert converted.backup == s.subsets[0] / ORIGINALS_DIR / name
        assert converted.backup.read_bytes() == originals[name]
        with Image.open(converted.converted) as image:
            assert image.mode == "RGB" and image.format == "PNG"
            assert np.array_equal(np.asarray(image), seen[name])  # PNG is lossless: exactly what training saw
    after = validate_dataset(s.subsets[0], LOOSE)
    assert not after.paths(*ODD_MODE_KINDS) & {c.converted for c in result.converted}
    assert (s.subsets[0] / "cmyk.txt").is_file()  # the caption still pairs with cmyk.png


def test_convert_to_jpeg_never_overwrites_another_image(image_set) -> None:
    folder = image_set.subsets[0]
    clash = folder / "palette.jpg"
    clash.write_bytes(b"someone else's picture")
    report = validate_dataset(folder, LOOSE)
    result = convert_images(report, (PALETTE,), image_format="jpeg")
    assert clash.read_bytes() == b"someone else's picture"
    assert any("palette.jpg already exists" in reason for reason in result.skipped)
    assert [c.converted.name for c in result.converted] == ["palette_alpha.jpg"]


@pytest.mark.parametrize("overrides, batch", [
    ({"enable_bucket": "true"}, 2),
    ({"enable_bucket": "true", "bucket_no_upscale": "true", "resolution": "256"}, 3),
    ({"enable_bucket": "false", "resolution": "128"}, 1),
])
def test_statistics_bucket_table_equals_the_trainer_scan(image_set_template, overrides, batch) -> None:
    root = image_set_template.root
    config = load_training_config(overrides={"train_data_dir": str(root), "train_batch_size": str(batch), **overrides})
    datasets, _ = build_datasets(config)
    scan = scan_datasets(datasets, strict=False)
    spec = datasets[0]
    settings = BucketSettings(resolution=spec.resolution, enable_bucket=spec.enable_bucket,
                              min_bucket_reso=spec.min_bucket_reso, max_bucket_reso=spec.max_bucket_reso,
                              bucket_reso_steps=spec.bucket_reso_steps, bucket_no_upscale=spec.bucket_no_upscale)
    stats = compute_statistics(root, settings, batch_size=batch, epochs=4)
    assert stats.bucket_table == scan.bucket_table
    assert stats.steps_per_epoch == steps_per_epoch(scan.records, datasets)
    assert stats.total_steps == 4 * stats.steps_per_epoch
    assert stats.steps_per_epoch == sum(math.ceil(c.with_repeats / batch) for c in stats.bucket_table.values())
    assert stats.image_count == 19 and len(stats.skipped) == 4
    assert sum(stats.sizes.values()) == sum(stats.side_histogram.values()) == 19
    assert stats.tag_frequency["ohwx woman"] == 13 and stats.tag_frequency["style"] == 6
    assert stats.tag_frequency["red dress"] == 3
    assert f"= {stats.steps_per_epoch};" in stats.formula


def test_statistics_of_one_folder_and_repeats_override(image_set_template) -> None:
    stats = compute_statistics(image_set_template.subsets[1], batch_size=1, epochs=1)
    assert [(s.repeats, s.images) for s in stats.subsets] == [(3, 6)]
    assert stats.steps_per_epoch == 18
    assert compute_statistics(image_set_template.subsets[1], repeats=1).steps_per_epoch == 6


def test_statistics_settings_follow_the_presets_and_the_trainer_defaults() -> None:
    from core.datasets.statistics import settings_for_resolution
    from core.training.presets import load_training_presets
    from trainer.options import get_option

    presets = load_training_presets()
    sdxl = settings_for_resolution(1024)
    assert sdxl.buckets == BucketSettings(resolution=(1024, 1024), min_bucket_reso=presets["sdxl"].values["min_bucket_reso"],
                                          max_bucket_reso=presets["sdxl"].values["max_bucket_reso"])
    assert (sdxl.buckets.min_bucket_reso, sdxl.buckets.max_bucket_reso) == (512, 2048)
    assert (sdxl.batch_size, sdxl.epochs) == (presets["sdxl"].values["train_batch_size"], 10)
    assert sdxl.describe() == ("Assumed: 1024x1024, buckets 512-2048 px in steps of 64, batch 2, 10 epochs "
                               "(the SDXL preset).")
    sd15 = settings_for_resolution(512)
    assert (sd15.buckets.min_bucket_reso, sd15.buckets.max_bucket_reso, sd15.source) == (256, 1024, "the SD 1.5 preset")
    # No preset at 768: the options table's defaults, which already hold 768.
    sd2 = settings_for_resolution(768)
    assert sd2.source == "the trainer's defaults" and sd2.batch_size == get_option("train_batch_size").default
    assert (sd2.buckets.min_bucket_reso, sd2.buckets.max_bucket_reso, sd2.buckets.bucket_reso_steps) == (
        get_option("min_bucket_reso").default, get_option("max_bucket_reso").default, get_option("bucket_reso_steps").default)
    # A resolution outside the default range widens it, as the trainer requires max_bucket_reso >= resolution.
    big = settings_for_resolution(1536, presets={})
    assert (big.buckets.min_bucket_reso, big.buckets.max_bucket_reso) == (256, 1536)
    with pytest.raises(CoreError, match="too small"):
        settings_for_resolution(8)


def test_manager_statistics_at_a_resolution_use_those_settings(image_set_template) -> None:
    manager = DatasetManager(ProjectPaths.resolve({}, work_dir=image_set_template.root.parent))
    stats = manager.statistics_at(image_set_template.root, 1024)
    assert (stats.batch_size, stats.epochs) == (2, 10)
    assert all(min(size) >= 512 and max(size) <= 2048 for size in stats.bucket_table)
    assert stats.summary_lines()[3] == stats.assumed and "(the SDXL preset)" in stats.assumed


def test_cli_validate_and_stats(image_set, capsys, monkeypatch) -> None:
    monkeypatch.setenv("LORA_DATASETS_DIR", str(image_set.root.parent))
    assert main(["validate", image_set.root.name, "--min-side", "64", "--move-rejects", "empty,corrupt"]) == 0
    out = capsys.readouterr().out
    assert "[truncated] 10_ohwx woman/truncated.jpg" in out and "moved" in out
    assert (image_set.root / REJECTED_DIR / "10_ohwx woman" / "empty.png").is_file()
    assert (image_set.root / "10_ohwx woman" / "truncated.jpg").is_file()  # only the kinds chosen moved
    assert main(["stats", image_set.root.name, "--batch-size", "2"]) == 0
    assert "steps per epoch" in capsys.readouterr().out
    assert main(["validate", "no_such_project"]) == 2
    assert "no_such_project does not exist" in capsys.readouterr().err


def test_manager_validate_facade(image_set_template) -> None:
    manager = DatasetManager(ProjectPaths.resolve({}, work_dir=image_set_template.root.parent))
    report = manager.validate(image_set_template.root, LOOSE)
    assert report.counts()[NO_CAPTION] == len(image_set_template.uncaptioned)
    assert report.summary_lines()[0].endswith(f"{len(report.findings)} finding(s).")
