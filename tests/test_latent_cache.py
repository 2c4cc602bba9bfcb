"""The latent cache: content keys, nothing re-encoded twice, stale or corrupt entries never used.

The VAE is not under test: a counting average-pool by 8 stands in for ``vae.encode``.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainer.data.blueprint import DatasetSpec, SubsetSpec
from trainer.data.buckets import prepare_pixels
from trainer.data.images import load_image_rgb
from trainer.data.latent_cache import CACHE_FOLDER, LatentCache, latent_key, vae_fingerprint
from trainer.data.scan import ImageRecord, scan_datasets
from trainer.errors import TrainerError

DATASET = DatasetSpec(
    resolution=(256, 256), batch_size=1, enable_bucket=True, min_bucket_reso=128, max_bucket_reso=512,
    bucket_reso_steps=64, bucket_no_upscale=False, subsets=(),
)


class CountingEncoder:
    """avg_pool2d by 8, counting images and calls."""

    def __init__(self) -> None:
        self.images = 0
        self.calls = 0
        self.batch_shapes: list[tuple[int, ...]] = []

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.images += pixels.shape[0]
        self.calls += 1
        self.batch_shapes.append(tuple(pixels.shape))
        return torch.nn.functional.avg_pool2d(pixels, 8)


def scan(image_set, resolution: int = 256, flip_aug: bool = False) -> tuple[ImageRecord, ...]:
    subject, style = image_set.subsets
    subsets = (SubsetSpec(image_dir=str(subject), num_repeats=10, class_tokens="ohwx woman", flip_aug=flip_aug),
               SubsetSpec(image_dir=str(style), num_repeats=3, class_tokens="style", flip_aug=flip_aug))
    dataset = replace(DATASET, resolution=(resolution, resolution), subsets=subsets)
    return scan_datasets((dataset,), strict=False).records


def expected_latent(record: ImageRecord, flip: bool = False) -> torch.Tensor:
    pixels = prepare_pixels(load_image_rgb(record.path), record.assignment, flip)
    return torch.nn.functional.avg_pool2d(pixels.unsqueeze(0), 8)[0]


def snapshot(root: Path) -> dict[Path, str]:
    """Every user file (cache folders excluded) and its sha256."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and CACHE_FOLDER not in p.parts}


def cache_files(root: Path) -> list[Path]:
    return sorted(root.rglob(f"{CACHE_FOLDER}/*.safetensors"))


def test_second_ensure_encodes_nothing_and_duplicates_encode_once(image_set_template) -> None:
    records = scan(image_set_template)
    cache, encoder = LatentCache(), CountingEncoder()
    first = cache.ensure(records, encoder, "vae-a", batch_size=4)
    # plain_rgb.png and copy_of_plain.png are byte-identical with the same bucket: one latent.
    assert first.encoded == encoder.images == len(records) - 1 == 18
    assert all(shape[0] <= 4 for shape in encoder.batch_shapes)
    assert len({shape[2:] for shape in encoder.batch_shapes}) > 1  # one bucket per VAE call, several buckets
    second = cache.ensure(records, encoder, "vae-a", batch_size=4)
    assert (second.encoded, second.in_memory, encoder.images) == (0, len(records), 18)
    for record in records:
        assert torch.allclose(cache.get(record), expected_latent(record), atol=1e-6)
    assert cache(records[0], False) is cache.get(records[0])


def test_changed_bytes_fingerprint_or_bucket_trigger_re_encoding(image_set) -> None:
    records = scan(image_set)
    cache, encoder = LatentCache(), CountingEncoder()
    cache.ensure(records, encoder, "vae-a", batch_size=8)
    plain = next(r for r in records if r.path.name == "style_b.bmp")
    old = cache.get(plain).clone()
    Image.new("RGB", (64, 64), (0, 255, 0)).save(plain.path)  # same name, same size, new content
    stats = cache.ensure(records, encoder, "vae-a", batch_size=8)
    assert stats.encoded == 1 and not torch.equal(cache.get(plain), old)
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand_as(old)  # pure green in [-1, 1]
    assert torch.allclose(cache.get(plain), green, atol=1e-6)
    assert cache.ensure(records, encoder, "vae-b", batch_size=8).encoded == len(records) - 1
    bigger = scan(image_set, resolution=384)
    moved = {(hashlib.sha256(b.path.read_bytes()).digest(), b.assignment)
             for a, b in zip(records, bigger) if a.assignment != b.assignment}
    assert len(moved) > 0
    assert cache.ensure(bigger, encoder, "vae-b", batch_size=8).encoded == len(moved)


def test_disk_cache_is_reused_by_a_new_instance_and_never_touches_user_files(image_set) -> None:
    records = scan(image_set)
    before = snapshot(image_set.root)
    first = LatentCache(beside_images=True)
    assert first.ensure(records, CountingEncoder(), "vae-a", batch_size=3).encoded == 18
    files = cache_files(image_set.root)
    assert len(files) == 18 and {f.parent.parent for f in files} == set(image_set.subsets)
    assert not list(image_set.root.rglob(".tmp-*"))  # atomic writes leave no temporaries
    assert snapshot(image_set.root) == before
    fresh, encoder = LatentCache(beside_images=True), CountingEncoder()
    stats = fresh.ensure(records, encoder, "vae-a", batch_size=3)
    assert (stats.encoded, encoder.calls) == (0, 0) and stats.from_disk == 18
    for record in records:
        assert torch.equal(fresh.get(record), first.get(record))
    other = LatentCache(beside_images=True)
    assert other.ensure(records, CountingEncoder(), "vae-other", batch_size=3).encoded == 18
    assert len(cache_files(image_set.root)) == 36


def test_corrupt_or_mismatched_cache_files_are_re_encoded(image_set, tmp_path: Path) -> None:
    records = scan(image_set)
    disk = tmp_path / "cache"
    LatentCache(disk).ensure(records, CountingEncoder(), "vae-a", batch_size=4)
    files = cache_files(disk)
    assert len(files) == 18 and all(f.parent == disk / CACHE_FOLDER for f in files)
    files[0].write_bytes(b"not a safetensors file")
    files[1].write_bytes(files[1].read_bytes()[:40])  # truncated
    files[2].write_bytes(files[3].read_bytes())  # valid file under the wrong name
    fresh, encoder = LatentCache(disk), CountingEncoder()
    stats = fresh.ensure(records, encoder, "vae-a", batch_size=4)
    assert (stats.encoded, stats.from_disk, encoder.images) == (3, 15, 3)
    for record in records:
        assert torch.allclose(fresh.get(record), expected_latent(record), atol=1e-6)
    again = LatentCache(disk).ensure(records, CountingEncoder(), "vae-a", batch_size=4)
    assert (again.encoded, again.from_disk) == (0, 18)  # the bad files were replaced


def test_unwritable_disk_cache_falls_back_to_memory(image_set_template, tmp_path: Path) -> None:
    records = scan(image_set_template)[:3]
    (tmp_path / CACHE_FOLDER).write_text("a file where the cache folder should be", encoding="utf-8")
    cache = LatentCache(tmp_path)
    stats = cache.ensure(records, CountingEncoder(), "vae-a", batch_size=2)
    assert stats.encoded == 3 and len(stats.disk_errors) == 3 and "kept in memory" in stats.disk_errors[0]
    assert all(torch.allclose(cache.get(r), expected_latent(r), atol=1e-6) for r in records)


def test_flip_aug_caches_both_orientations(image_set_template) -> None:
    records = scan(image_set_template, flip_aug=True)
    cache, encoder = LatentCache(), CountingEncoder()
    assert cache.ensure(records, encoder, "vae-a", batch_size=4).encoded == 2 * 18
    record = next(r for r in records if r.path.name == "wide_bom.jpg")
    assert torch.allclose(cache.get(record, flip=True), expected_latent(record, flip=True), atol=1e-6)
    assert torch.allclose(cache.get(record, flip=True), torch.flip(cache.get(record), dims=[2]), atol=1e-6)
    plain_cache = LatentCache()
    plain_cache.ensure(scan(image_set_template), CountingEncoder(), "vae-a", batch_size=4)
    with pytest.raises(TrainerError):
        plain_cache.get(record, flip=True)


def test_key_depends_on_every_part() -> None:
    from trainer.data.buckets import BucketAssignment

    a = BucketAssignment((512, 512), (512, 640), (64, 0), (800, 1000))
    base = latent_key("c" * 64, a, False, "vae-a")
    assert base == latent_key("c" * 64, a, False, "vae-a")
    variants = {
        latent_key("d" * 64, a, False, "vae-a"), latent_key("c" * 64, a, True, "vae-a"),
        latent_key("c" * 64, a, False, "vae-b"), latent_key("c" * 64, replace(a, crop_top_left=(0, 0)), False, "vae-a"),
        latent_key("c" * 64, replace(a, bucket=(448, 576)), False, "vae-a"),
    }
    assert base not in variants and len(variants) == 5


def test_vae_fingerprint_follows_weights_and_config() -> None:
    from diffusers import AutoencoderKL

    def tiny(**config) -> AutoencoderKL:
        torch.manual_seed(0)
        return AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, layers_per_block=1, latent_channels=4, **config)

    vae = tiny()
    fingerprint = vae_fingerprint(vae)
    assert fingerprint.startswith("vae-") and fingerprint == vae_fingerprint(tiny())
    other_config = tiny(scaling_factor=0.13025)
    assert vae_fingerprint(other_config) != fingerprint
    with torch.no_grad():
        vae.decoder.conv_out.bias[0] += 0.01
    assert vae_fingerprint(vae) != fingerprint
