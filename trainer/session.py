"""Everything a run needs before its first step: checked options, scanned images, model, network, caches.

``prepare_session`` does the work in the order that fails cheapest first: option rules and
output-file checks, then the image scan, then the model (seconds to minutes), then the
network, the optimizer and the caches. Each stage gets only the typed values it needs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from trainer.callbacks import Callback
from trainer.callbacks_factory import build_callbacks, validation_seed
from trainer.config import TrainingConfig
from trainer.data.blueprint import DatasetSpec, build_datasets
from trainer.data.epochs import steps_per_epoch
from trainer.data.latent_cache import LatentCache, vae_fingerprint
from trainer.data.scan import ScanResult, scan_datasets
from trainer.errors import TrainerError
from trainer.events import EventWriter
from trainer.models.family import Conditioning
from trainer.models.loader import LoadedModel, ModelSpec, load_model
from trainer.networks.factory import build_network
from trainer.networks.lora import LoRANetwork
from trainer.optim import build_optimizer, build_scheduler, lr_free_warning
from trainer.optim_steps import install_fused_backward
from trainer.options import BY_NAME
from trainer.options.rules import check_config
from trainer.saving.lora_file import OutputPaths, check_no_overwrite, output_paths
from trainer.validation import split_validation

_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class StepPlan:
    """How long the run is: batches per epoch, optimizer updates per epoch, totals."""

    batches_per_epoch: int
    updates_per_epoch: int
    total_steps: int
    epochs: int


@dataclass(eq=False)
class Session:
    """A prepared run. ``model`` parts are frozen; only ``network`` trains."""

    config: TrainingConfig
    datasets: tuple[DatasetSpec, ...]
    scan: ScanResult
    paths: OutputPaths
    events: EventWriter
    accelerator: Any
    model: LoadedModel
    network: LoRANetwork
    optimizer: torch.optim.Optimizer
    scheduler: Any
    plan: StepPlan
    weight_dtype: torch.dtype
    train_text_encoder: bool
    latent_cache: LatentCache | None
    text_cache: dict[str, Conditioning] | None
    started_at: float = field(default_factory=time.time)
    warnings: list[str] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)
    fused_backward: Any = None  # the hooks of fused_backward_pass, when on
    last_max_norm: Any = None  # (keys scaled, mean norm, max norm) of scale_weight_norms


def events_path(config: TrainingConfig, paths: OutputPaths) -> Path:
    """``events_file``, or ``<output_dir>/<output_name>_events.jsonl``."""
    if config.events_file:
        return Path(config.events_file)
    return paths.output_dir / f"{paths.output_name}_events.jsonl"


def plan_steps(config: TrainingConfig, batches_per_epoch: int) -> StepPlan:
    """Turn epochs or steps into both, the way sd-scripts counts them (epochs win when set)."""
    accumulation = config.gradient_accumulation_steps
    updates = max(1, math.ceil(batches_per_epoch / accumulation))
    if config.max_train_epochs:
        total = updates * config.max_train_epochs
        epochs = config.max_train_epochs
    else:
        total = config.max_train_steps
        epochs = math.ceil(total / updates)
    return StepPlan(batches_per_epoch, updates, total, epochs)


def make_accelerator(config: TrainingConfig) -> Any:
    """The accelerate Accelerator for this run, with a clear error for impossible precisions."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # accelerate keeps one process-wide state; a second run in the same process (tests, a
    # notebook that trains in-process) must not inherit the first run's precision.
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        return Accelerator(mixed_precision=config.mixed_precision,
                           gradient_accumulation_steps=config.gradient_accumulation_steps)
    except (ValueError, RuntimeError) as problem:
        raise TrainerError(
            f"mixed_precision {config.mixed_precision} is not possible here: {problem}",
            hint="fp16 needs an NVIDIA GPU; use bf16 or no on the CPU.", option="mixed_precision",
        ) from problem


def check_device_options(config: TrainingConfig, device_type: str) -> None:
    """Options that need CUDA fail on the CPU with a message, not a stack trace."""
    if device_type == "cuda":
        return
    for option in BY_NAME.values():
        if option.needs_cuda and config[option.name]:
            raise TrainerError(
                f"{option.name} needs an NVIDIA GPU, and this run is on the {device_type}.",
                hint=f"Turn {option.name} off for this machine.", option=option.name,
            )


def prepare_session(config: TrainingConfig, events: EventWriter | None = None) -> Session:
    """Check, scan, load and build everything; emits ``warning`` and ``skipped_image`` events."""
    datasets, folder_warnings = build_datasets(config)
    subsets = [subset for dataset in datasets for subset in dataset.subsets]
    warnings = list(config.warnings) + folder_warnings + check_config(config, subsets)
    paths = output_paths(config.output_dir, config.output_name)
    if config.resume:
        # A resumed run continues its own numbered saves; only a finished run's final file is protected.
        if paths.final.exists() and not config.overwrite_output:
            check_no_overwrite(paths, False)
    else:
        check_no_overwrite(paths, config.overwrite_output)
    events = events or EventWriter(events_path(config, paths))
    accelerator = make_accelerator(config)
    check_device_options(config, accelerator.device.type)
    if config.seed is not None:
        from accelerate.utils import set_seed

        set_seed(config.seed)

    if accelerator.num_processes > 1:
        # train_batch_size is per process, as in sd-scripts: the epoch plan works in global batches.
        datasets = tuple(replace(d, batch_size=d.batch_size * accelerator.num_processes) for d in datasets)
    scan = scan_datasets(datasets, config.strict_images)
    scan, held_out = split_validation(scan, datasets, config.validation_split, validation_seed(config))
    for skipped in scan.skipped:
        events.emit("skipped_image", path=skipped.path, reason=skipped.reason)
    warnings += list(scan.warnings)

    weight_dtype = _DTYPES[config.mixed_precision]
    model = load_model(ModelSpec.from_config(config), accelerator.device, weight_dtype)
    warnings += list(model.warnings)
    train_te = not config.network_train_unet_only
    if train_te and config.cache_text_encoder_outputs:
        train_te = False  # rules already refused this combination; kept for clarity
    network = build_network(config, model, train_te)
    network.to(accelerator.device)
    if config.full_fp16 or config.full_bf16:
        network.to(weight_dtype)
    groups = network.param_groups(config.unet_lr, config.text_encoder_lr, config.learning_rate)
    lr_note = lr_free_warning(config.optimizer_type, [group["lr"] for group in groups])
    if lr_note:
        warnings.append(lr_note)
    if config.gradient_checkpointing:
        _enable_checkpointing(model, train_te)

    plan = plan_steps(config, steps_per_epoch(scan.records, datasets))
    optimizer = build_optimizer(config.optimizer_type, groups, config.learning_rate, config.optimizer_args,
                                accelerator.device.type, lr_scheduler=config.lr_scheduler)
    scheduler = build_scheduler(config.lr_scheduler, optimizer, plan.total_steps, config.lr_warmup_steps,
                                config.lr_scheduler_num_cycles, config.lr_scheduler_power,
                                config.lr_scheduler_type, config.lr_scheduler_args)
    # The scheduler is stepped by the loop once per update; accelerate's wrapper would step it once
    # per process, which makes multi-process runs race through the schedule.
    optimizer = accelerator.prepare(optimizer)
    fused = None
    if config.fused_backward_pass:
        if accelerator.num_processes > 1:
            raise TrainerError("fused_backward_pass cannot be used with several processes: gradients are used up "
                               "before they could be averaged.", hint="Train on one GPU, or turn it off.",
                               option="fused_backward_pass")
        fused = install_fused_backward(optimizer, max_grad_norm=config.max_grad_norm)

    latent_cache = _cache_latents(config, model, scan, accelerator, paths.output_dir) if config.cache_latents else None
    text_cache = _cache_text(config, model, scan) if config.cache_text_encoder_outputs else None
    for warning in warnings:
        events.emit("warning", message=warning)
    session = Session(config, datasets, scan, paths, events, accelerator, model, network, optimizer, scheduler, plan,
                      weight_dtype, train_te, latent_cache, text_cache, warnings=warnings, fused_backward=fused)
    session.callbacks = build_callbacks(config, session, held_out)
    return session


def _enable_checkpointing(model: LoadedModel, train_te: bool) -> None:
    model.unet.enable_gradient_checkpointing()
    if train_te:
        for encoder in model.text_encoders:
            # transformers 5 renamed the switch; older releases only have the first name.
            enable = getattr(encoder, "activation_checkpointing_enable", None) or encoder.gradient_checkpointing_enable
            enable()


def encode_pixels(model: LoadedModel, pixels: torch.Tensor, generator: torch.Generator | None = None,
                  sample: bool = True) -> torch.Tensor:
    """VAE latents of pixels in [-1, 1], scaled as the UNet expects.

    ``sample`` draws from the VAE's posterior (per step, as usual); False takes its mean, which
    makes cached latents independent of batching and of the number of processes.
    """
    vae = model.vae
    with torch.no_grad():
        pixels = pixels.to(device=vae.device, dtype=vae.dtype)
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mean
    shift = vae.config.get("shift_factor") or 0.0
    return (latents.float() - shift) * model.adapter.latent_scaling_factor


def _cache_latents(config: TrainingConfig, model: LoadedModel, scan: ScanResult, accelerator: Any,
                   output_dir: Path) -> LatentCache:
    """Encode every image once. With several processes each encodes its share to disk, then all read it."""
    world, rank = accelerator.num_processes, accelerator.process_index
    if config.cache_latents_to_disk:
        cache = LatentCache(beside_images=True)
    elif world > 1:
        cache = LatentCache(disk_dir=output_dir)  # processes share latents through a hidden folder there
    else:
        cache = LatentCache()
    fingerprint = vae_fingerprint(model.vae) + f":{model.adapter.latent_scaling_factor}:mean"

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        return encode_pixels(model, pixels, sample=False).cpu()

    if world > 1:
        cache.ensure(scan.records[rank::world], encode, fingerprint, config.vae_batch_size)
        accelerator.wait_for_everyone()
    cache.ensure(scan.records, encode, fingerprint, config.vae_batch_size)
    return cache


def _cache_text(config: TrainingConfig, model: LoadedModel, scan: ScanResult) -> dict[str, Conditioning]:
    """Encode each distinct caption once; captions cannot change when this is allowed (see rules)."""
    from trainer.data.captions import process_caption
    import random

    captions = sorted({process_caption(r.caption, r.subset, random.Random(0), 1) for r in scan.records})
    cache: dict[str, Conditioning] = {}
    with torch.no_grad():
        for start in range(0, len(captions), 16):
            chunk = captions[start:start + 16]
            encoded = model.adapter.encode_prompts(chunk, config.clip_skip, config.max_token_length)
            for index, caption in enumerate(chunk):
                pooled = encoded.pooled[index:index + 1] if encoded.pooled is not None else None
                cache[caption] = Conditioning(encoded.encoder_hidden_states[index:index + 1], pooled)
    return cache
