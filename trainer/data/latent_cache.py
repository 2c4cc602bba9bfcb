"""VAE latents, encoded once and reused: in memory, and optionally on disk across runs.

A latent is keyed by everything that changes it: the image file's CONTENT (sha256 of its bytes,
not its name or date), the bucket, resize and crop, the flip, the pixel pipeline's version and a
VAE fingerprint from the caller. A changed image, VAE or resolution therefore gives a new key and
is re-encoded; a stale latent can never be used. Byte-identical images share one latent.

On disk, each latent is one ``<key>.safetensors`` in a hidden ``.latent_cache`` folder, either
beside the images (``beside_images=True``) or in one ``disk_dir``. Files are written to a temporary
name and renamed, so a crash never leaves half a file; a file that does not load, or whose stored
key does not match its name, is ignored and re-encoded. The user's images are only read.

For ``alpha_mask`` subsets the cache also holds each image's loss mask at latent size (in memory
only: a mask is cheap to remake, and :meth:`LatentCache.ensure` decodes each such image once for
it when its latent came from disk).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trainer.data.buckets import MASK_DOWNSCALE, BucketAssignment, image_to_tensor, prepare_mask, resize_and_crop
from trainer.data.images import load_image_rgb_and_alpha
from trainer.data.scan import ImageRecord
from trainer.errors import TrainerError

CACHE_FOLDER = ".latent_cache"
# Part of every key: bump it whenever load_image_rgb/prepare_pixels would give different pixels.
PIXEL_PIPELINE = "rgb-white-alpha/box-down-lanczos-up/centre-crop/-1..1/v1"
_TENSOR_NAME = "latents"
_FORMAT = "lora-easy-training latent cache 1"


@dataclass(frozen=True)
class EnsureStats:
    """What :meth:`LatentCache.ensure` did: latents encoded, loaded from disk, already in memory."""

    encoded: int
    from_disk: int
    in_memory: int
    disk_errors: tuple[str, ...] = ()  # files that could not be written (the cache stays in memory)


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def latent_key(content_sha256: str, assignment: BucketAssignment, flip: bool, vae_fingerprint: str) -> str:
    """The cache key of one latent (hex); see the module docstring for what goes into it."""
    parts = {
        "content": content_sha256,
        "bucket": list(assignment.bucket),
        "resized": list(assignment.resized),
        "crop_top_left": list(assignment.crop_top_left),
        "flip": bool(flip),
        "vae": vae_fingerprint,
        "pixels": PIXEL_PIPELINE,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """A short id of a VAE: its class, its config and a cheap digest of its weights.

    The digest takes every tensor's name, shape, dtype, sum and 64 evenly spaced values, so a
    fine-tuned or differently converted VAE gets a new id without hashing every byte. Config
    entries starting with "_" (such as the folder it was loaded from) are left out so moving a
    model does not invalidate its cache. Callers whose encode step adds anything else that
    changes the output (dtype, scaling factor) should append it to this string.
    """
    digest = hashlib.sha256(type(vae).__qualname__.encode("utf-8"))
    config = getattr(vae, "config", None)
    if config is not None:
        public = {key: value for key, value in dict(config).items() if not str(key).startswith("_")}
        digest.update(json.dumps(public, sort_keys=True, default=str).encode("utf-8"))
    with torch.no_grad():
        for name, tensor in sorted(vae.state_dict().items()):
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode("utf-8"))
            if tensor.is_meta or tensor.numel() == 0:
                continue
            flat = tensor.detach().reshape(-1).to(torch.float64)
            sample = flat[:: max(1, flat.numel() // 64)][:64]
            digest.update(sample.cpu().numpy().tobytes())
            digest.update(repr(float(flat.sum())).encode("utf-8"))
    return "vae-" + digest.hexdigest()[:32]


@dataclass(frozen=True)
class _Want:
    record: ImageRecord
    flip: bool
    key: str


class LatentCache:
    """Latents by content key. Call :meth:`ensure` before training, then :meth:`get` per image.

    ``disk_dir`` keeps every latent under ``disk_dir/.latent_cache``; ``beside_images`` keeps
    each under ``<image folder>/.latent_cache`` instead; with neither, the cache is memory only.
    An instance is also a latent lookup for :func:`trainer.data.epochs.load_batch`.
    """

    def __init__(self, disk_dir: Path | None = None, *, beside_images: bool = False) -> None:
        if disk_dir is not None and beside_images:
            raise TrainerError("LatentCache got both disk_dir and beside_images.", hint="Choose one place for the cache.")
        self._disk_dir = Path(disk_dir) if disk_dir is not None else None
        self._beside_images = beside_images
        self._latents: dict[str, torch.Tensor] = {}
        self._masks: dict[str, torch.Tensor] = {}
        self._keys: dict[tuple[Path, BucketAssignment, bool], str] = {}

    def cache_file(self, record: ImageRecord, key: str) -> Path | None:
        """Where the latent with ``key`` of ``record`` lives on disk; None for a memory-only cache."""
        if self._disk_dir is not None:
            return self._disk_dir / CACHE_FOLDER / f"{key}.safetensors"
        if self._beside_images:
            return record.path.parent / CACHE_FOLDER / f"{key}.safetensors"
        return None

    def ensure(
        self,
        records: Sequence[ImageRecord],
        encode_fn: Callable[[torch.Tensor], torch.Tensor],
        vae_fingerprint: str,
        batch_size: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> EnsureStats:
        """Make every record's latent (and its flipped one, for flip_aug subsets) available.

        ``encode_fn`` takes pixels [B, 3, H, W] in [-1, 1] and returns latents [B, ...]; it is
        called with up to ``batch_size`` images of one bucket at a time, only for latents found
        neither in memory nor on disk. ``progress(done, total)`` follows the encoding.
        """
        wants: list[_Want] = []
        digests: dict[Path, str] = {}
        for record in records:
            if record.path not in digests:
                try:
                    digests[record.path] = file_sha256(record.path)
                except OSError as problem:
                    raise TrainerError(f"Cannot read image {record.path} to cache its latent: {problem.strerror or problem}",
                                       hint="The file was moved or deleted after the scan; start the run again.") from problem
            for flip in ((False, True) if record.subset.flip_aug else (False,)):
                key = latent_key(digests[record.path], record.assignment, flip, vae_fingerprint)
                self._keys[(record.path, record.assignment, flip)] = key
                wants.append(_Want(record, flip, key))

        in_memory = from_disk = 0
        pending: dict[str, _Want] = {}
        for want in wants:
            if want.key in self._latents:
                in_memory += 1
            elif want.key not in pending and self._load_from_disk(want):
                from_disk += 1
            else:
                pending.setdefault(want.key, want)  # byte-identical images encode once
        errors = self._encode(list(pending.values()), encode_fn, max(1, batch_size), progress)
        self._fill_masks([want for want in wants if want.record.subset.alpha_mask])
        return EnsureStats(encoded=len(pending), from_disk=from_disk, in_memory=in_memory, disk_errors=tuple(errors))

    def get(self, record: ImageRecord, flip: bool = False) -> torch.Tensor:
        """The cached latent of ``record`` (flipped or not); raises if :meth:`ensure` did not cover it."""
        key = self._keys.get((record.path, record.assignment, flip))
        if key is None or key not in self._latents:
            raise TrainerError(
                f"No cached latent for {record.path}{' (flipped)' if flip else ''}.",
                hint="LatentCache.ensure must run over all records (with flip_aug as in training) before training.",
            )
        return self._latents[key]

    def mask(self, record: ImageRecord, flip: bool = False) -> torch.Tensor:
        """The loss mask [H/8, W/8] of ``record`` (an alpha_mask subset's), made by :meth:`ensure`."""
        key = self._keys.get((record.path, record.assignment, flip))
        if key is None or key not in self._masks:
            raise TrainerError(
                f"No cached mask for {record.path}{' (flipped)' if flip else ''}.",
                hint="LatentCache.ensure must run over all records (with alpha_mask as in training) before training.",
            )
        return self._masks[key]

    def _fill_masks(self, wants: list[_Want]) -> None:
        """Masks of alpha_mask records whose latents came from disk or memory (one decode per file)."""
        missing = [want for want in wants if want.key not in self._masks]
        decoded: dict[Path, object] = {}
        for want in missing:
            if want.record.path not in decoded:
                decoded[want.record.path] = load_image_rgb_and_alpha(want.record.path)[1]
            self._masks[want.key] = prepare_mask(decoded[want.record.path], want.record.assignment, want.flip,
                                                 MASK_DOWNSCALE)

    def __call__(self, record: ImageRecord, flip: bool) -> torch.Tensor:
        return self.get(record, flip)

    def __len__(self) -> int:
        return len(self._latents)

    def _load_from_disk(self, want: _Want) -> bool:
        path = self.cache_file(want.record, want.key)
        if path is None or not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("key") != want.key or metadata.get("format") != _FORMAT:
                    return False
                latent = handle.get_tensor(_TENSOR_NAME)
        except Exception:  # noqa: BLE001 - a damaged cache file is only a cache miss; it is re-encoded and replaced
            return False
        self._latents[want.key] = latent
        return True

    def _encode(self, pending: list[_Want], encode_fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
                progress: Callable[[int, int], None] | None) -> list[str]:
        by_bucket: dict[tuple[int, int], list[_Want]] = defaultdict(list)
        for want in pending:
            by_bucket[want.record.bucket].append(want)  # one VAE call needs one shape
        errors: list[str] = []
        done = 0
        for bucket in sorted(by_bucket):
            group = by_bucket[bucket]
            for start in range(0, len(group), batch_size):
                chunk = group[start : start + batch_size]
                pixels = torch.stack([self._pixels_and_mask(w) for w in chunk])
                with torch.no_grad():
                    latents = encode_fn(pixels)
                if latents.shape[0] != len(chunk):
                    raise TrainerError(f"The VAE returned {latents.shape[0]} latents for {len(chunk)} images.",
                                       hint="encode_fn must return one latent per input image.")
                for want, latent in zip(chunk, latents):
                    stored = latent.detach().to("cpu").contiguous().clone()  # own storage, not a view of the batch
                    self._latents[want.key] = stored
                    error = self._write(want, stored)
                    if error:
                        errors.append(error)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(pending))
        return errors

    def _pixels_and_mask(self, want: _Want) -> torch.Tensor:
        """The pixels to encode; an alpha_mask record's mask is stored on the way (same decode)."""
        alpha_mask = want.record.subset.alpha_mask
        image, alpha = load_image_rgb_and_alpha(want.record.path, with_alpha=alpha_mask)
        if alpha_mask:
            self._masks[want.key] = prepare_mask(alpha, want.record.assignment, want.flip, MASK_DOWNSCALE)
        return image_to_tensor(resize_and_crop(image, want.record.assignment, want.flip))

    def _write(self, want: _Want, latent: torch.Tensor) -> str:
        path = self.cache_file(want.record, want.key)
        if path is None:
            return ""
        temp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
            os.close(handle)
            save_file({_TENSOR_NAME: latent}, temp, metadata={"key": want.key, "format": _FORMAT})
            os.replace(temp, path)  # atomic: readers see the old file or the whole new one
            return ""
        except OSError as problem:
            if temp is not None and os.path.exists(temp):
                os.unlink(temp)
            return f"Cannot write latent cache file {path}: {problem.strerror or problem} (kept in memory only)."
