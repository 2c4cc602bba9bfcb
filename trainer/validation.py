"""Validation loss: a share of the images held out of training and scored at fixed noise.

Split: ``validation_split`` of each (non-regularisation) folder's images is held out, never
trained on. Which ones is decided by ``validation_seed`` (default: ``seed``) alone, so the same
settings hold out the same images. Each folder keeps at least one training image: a folder of n
images gives ``floor(n * validation_split)`` to validation.

Score: every held-out image is noised at the same five timesteps, spread evenly over
[min_timestep, max_timestep), with noise drawn once from the validation seed, and the plain
mean squared error of the prediction (no Min-SNR or other weighting) is averaged. The same
images, noise and timesteps are used at every validation and in every run with the same seed,
so the curves of two runs can be laid over each other. Images are read without augmentation
(no flips, caption shuffles or dropout). A first score at step 0 shows the base model's.
"""
from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from trainer.callbacks import Callback
from trainer.data.blueprint import DatasetSpec
from trainer.data.captions import tags_of
from trainer.data.epochs import load_batch
from trainer.data.scan import BucketCount, ImageRecord, ScanResult
from trainer.maths import per_sample_mse, training_target
from trainer.models.family import Conditioning

TIMESTEP_COUNT = 5
# Augmentations switched off for validation images: a score must not depend on a coin toss.
_NO_AUGMENTATION = dict(shuffle_caption=False, caption_dropout_rate=0.0, caption_dropout_every_n_epochs=0,
                        caption_tag_dropout_rate=0.0, flip_aug=False, color_aug=False, random_crop=False)


def held_out_count(images: int, fraction: float) -> int:
    """How many of a folder's ``images`` go to validation; at least one always stays for training."""
    if images < 2 or fraction <= 0:
        return 0
    return min(images - 1, math.floor(images * fraction + 1e-9))  # 1e-9: 10 * 0.3 is 2.9999999999999996


def split_validation(scan: ScanResult, datasets: Sequence[DatasetSpec], fraction: float,
                     seed: int) -> tuple[ScanResult, tuple[ImageRecord, ...]]:
    """The scan without the held-out images (its counts and tag table redone), and those images."""
    if not fraction:
        return scan, ()
    by_subset: dict[tuple[int, int], list[ImageRecord]] = defaultdict(list)
    for record in scan.records:
        if not record.is_reg:
            by_subset[(record.dataset_index, record.subset_index)].append(record)
    held: list[ImageRecord] = []
    for (d, s), members in sorted(by_subset.items()):
        ordered = sorted(members, key=lambda record: str(record.path))
        # A string seed is stable across processes and Python versions (hash randomisation does not apply).
        random.Random(f"validation:{seed}:{d}:{s}").shuffle(ordered)
        held += ordered[:held_out_count(len(ordered), fraction)]
    if not held:
        return scan, ()
    held_paths = {(r.dataset_index, r.subset_index, r.path) for r in held}
    kept = tuple(r for r in scan.records if (r.dataset_index, r.subset_index, r.path) not in held_paths)
    held.sort(key=lambda r: (r.dataset_index, r.subset_index, str(r.path)))
    return _recounted(scan, datasets, kept), tuple(held)


def _recounted(scan: ScanResult, datasets: Sequence[DatasetSpec], kept: tuple[ImageRecord, ...]) -> ScanResult:
    """Redo the per-folder numbers the metadata records (ss_dataset_dirs, ss_tag_frequency, buckets)."""
    per_subset = Counter((r.dataset_index, r.subset_index) for r in kept)
    counts = {key: per_subset.get(key, 0) for key in scan.subset_image_counts}
    # The scan builds these tables one entry per subset, in subset order (train subsets only for dataset_dirs).
    tags = {}
    for key, name in zip(scan.subset_image_counts, scan.tag_frequency):
        found: Counter[str] = Counter()
        for record in kept:
            if (record.dataset_index, record.subset_index) == key:
                found.update(tags_of(record.caption, record.subset))
        tags[name] = dict(sorted(found.items()))
    train_subsets = [(d, s) for d, dataset in enumerate(datasets) for s, sub in enumerate(dataset.subsets)
                     if not sub.is_reg]
    dirs = {name: {**entry, "img_count": counts.get(key, entry["img_count"])}
            for key, (name, entry) in zip(train_subsets, scan.dataset_dirs.items())}
    table: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for record in kept:
        table[record.bucket][0] += 1
        table[record.bucket][1] += record.num_repeats
    buckets = {bucket: BucketCount(*table[bucket]) for bucket in sorted(table)}
    return replace(scan, records=kept, subset_image_counts=counts, dataset_dirs=dirs, tag_frequency=tags,
                   bucket_table=buckets)


def fixed_timesteps(min_timestep: int, max_timestep: int, count: int = TIMESTEP_COUNT) -> tuple[int, ...]:
    """``count`` timesteps at the centres of equal parts of [min, max): 100, 300, ..., 900 by default."""
    span = max_timestep - min_timestep
    return tuple(min_timestep + (span * (2 * index + 1)) // (2 * count) for index in range(count))


@dataclass(frozen=True)
class ValidationBatch:
    """Held-out images of one bucket, encoded once: latents, fixed noise, captions, SDXL sizes."""

    captions: tuple[str, ...]
    latents: torch.Tensor  # float32, on the CPU
    noise: tuple[torch.Tensor, ...]  # one tensor like ``latents`` per timestep
    sizes: dict[str, torch.Tensor]  # original_sizes, crop_top_lefts, target_sizes
    conditioning: Conditioning | None  # encoded once when the text encoders are frozen


@dataclass(frozen=True)
class ValidationSet:
    """Everything a validation pass needs, fixed for the whole run."""

    batches: tuple[ValidationBatch, ...]
    timesteps: tuple[int, ...]
    paths: tuple[Path, ...]


def _conditioning(session: Any, captions: list[str]) -> Conditioning:
    from trainer.loss import batch_conditioning

    cache = session.text_cache
    if cache is not None and any(caption not in cache for caption in captions):
        # Held-out captions are not in the training text cache; the encoders are frozen then anyway.
        return session.model.adapter.encode_prompts(captions, session.config.clip_skip, session.config.max_token_length)
    return batch_conditioning(session, captions)


def prepare_validation_set(session: Any, records: Sequence[ImageRecord], seed: int,
                           batch_size: int) -> ValidationSet:
    """Encode the held-out images and draw their noise (call inside evaluation mode)."""
    from trainer.loss import batch_latents

    config = session.config
    clean = [replace(r, subset=replace(r.subset, **_NO_AUGMENTATION)) for r in records]
    by_bucket: dict[Any, list[ImageRecord]] = defaultdict(list)
    for record in sorted(clean, key=lambda r: str(r.path)):
        by_bucket[record.bucket].append(record)
    timesteps = fixed_timesteps(config.min_timestep, config.max_timestep)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket]
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            loaded = load_batch(chunk, 1, random.Random(f"validation:{seed}"))
            latents = batch_latents(session, loaded, generator).float().cpu()
            noise = tuple(torch.randn(latents.shape, generator=generator) for _ in timesteps)
            captions = list(loaded["captions"])
            frozen = None if session.train_text_encoder else _conditioning(session, captions)
            if frozen is not None:
                pooled = frozen.pooled.cpu() if frozen.pooled is not None else None
                frozen = Conditioning(frozen.encoder_hidden_states.cpu(), pooled)
            sizes = {key: loaded[key] for key in ("original_sizes", "crop_top_lefts", "target_sizes")}
            batches.append(ValidationBatch(tuple(captions), latents, noise, sizes, frozen))
    return ValidationSet(tuple(batches), timesteps, tuple(r.path for r in clean))


def validation_loss(session: Any, validation: ValidationSet) -> float:
    """Mean squared error over every held-out image and fixed timestep (call inside evaluation mode)."""
    model, device, dtype = session.model, session.accelerator.device, session.weight_dtype
    scheduler = model.noise_scheduler
    total, count = 0.0, 0
    for batch in validation.batches:
        latents = batch.latents.to(device)
        conditioning = batch.conditioning
        if conditioning is None:  # the text encoders train: encode with their current LoRA
            conditioning = _conditioning(session, list(batch.captions))
        states = conditioning.encoder_hidden_states.to(device, dtype)
        pooled = conditioning.pooled.to(device) if conditioning.pooled is not None else None
        added = model.adapter.unet_added_conditioning(
            batch.sizes["original_sizes"].tolist(), batch.sizes["crop_top_lefts"].tolist(),
            batch.sizes["target_sizes"].tolist(), pooled, dtype, device,
        )
        for timestep, noise in zip(validation.timesteps, batch.noise):
            noise = noise.to(device)
            timesteps = torch.full((latents.shape[0],), timestep, dtype=torch.long, device=device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            with session.accelerator.autocast():
                prediction = model.unet(noisy.to(dtype), timesteps, states, added_cond_kwargs=added).sample
            losses = per_sample_mse(prediction, training_target(scheduler, latents, noise, timesteps))
            total += float(losses.sum())
            count += int(losses.shape[0])
    return total / count


# (step, loss) -> None; e.g. a tracker's loss/validation curve.
ValidationReport = Callable[[int, float], None]


class ValidationCallback(Callback):
    """Scores the held-out images at step 0, on schedule, and after the last step; ``validation`` events."""

    def __init__(self, records: Sequence[ImageRecord], seed: int, batch_size: int, every_n_steps: int | None,
                 every_n_epochs: int | None, report: ValidationReport | None = None) -> None:
        self.records = tuple(records)
        self.seed = seed
        self.batch_size = batch_size
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.report = report
        self.validation: ValidationSet | None = None
        self.last_step: int | None = None

    def on_train_start(self, session: Any, state: Any) -> None:
        """Encode the held-out images once, announce them, and score the starting point."""
        from trainer.sampling.generate import evaluation_mode

        with evaluation_mode(session):
            self.validation = prepare_validation_set(session, self.records, self.seed, self.batch_size)
        session.events.emit("validation_set", images=len(self.validation.paths), paths=list(self.validation.paths),
                            timesteps=list(self.validation.timesteps))
        self.validate(session, state)

    def on_step_end(self, session: Any, state: Any, loss: float) -> None:
        """Every ``every_n_steps`` updates."""
        if self.every_n_steps and state.step % self.every_n_steps == 0 and not state.stop_requested:
            self.validate(session, state)

    def on_epoch_end(self, session: Any, state: Any) -> None:
        """Every ``every_n_epochs`` complete epochs."""
        if self.every_n_epochs and state.epoch % self.every_n_epochs == 0 and not state.stop_requested:
            self.validate(session, state)

    def on_train_end(self, session: Any, state: Any, final_path: Path | None) -> None:
        """A last score for the saved LoRA, unless the run failed or that step was just scored."""
        if final_path is not None and self.validation is not None:
            self.validate(session, state)

    def validate(self, session: Any, state: Any) -> float | None:
        """Score now (once per step), emit the ``validation`` event and report it; returns the loss."""
        if self.validation is None or self.last_step == state.step:
            return None
        from trainer.sampling.generate import evaluation_mode

        self.last_step = state.step
        with evaluation_mode(session):
            loss = validation_loss(session, self.validation)
        session.events.emit("validation", step=state.step, epoch=state.epoch, loss=loss,
                            images=len(self.validation.paths))
        if self.report is not None:
            self.report(state.step, loss)
        return loss
