"""Checks across options: contradictions and risky values, found before any heavy work starts.

``check_config`` returns warnings and raises :class:`TrainerError` for the first contradiction,
naming the options involved and what to change.
"""
from __future__ import annotations

from collections.abc import Sequence

from trainer.errors import TrainerError

IMPLEMENTED_NETWORKS = ("networks.lora",)
IMPLEMENTED_LOSSES = ("l2",)


def _require(condition: bool, message: str, hint: str, option: str) -> None:
    if not condition:
        raise TrainerError(message, hint=hint, option=option)


def check_config(config, subsets: Sequence = ()) -> list[str]:
    """Refuse contradictory settings; return warnings for risky ones.

    ``config`` is a TrainingConfig; ``subsets`` the SubsetSpecs that will train (their caption and
    augmentation settings matter for the caching rules).
    """
    warnings: list[str] = []
    _require(bool(config.pretrained_model_name_or_path), "No base model given.",
             "Set pretrained_model_name_or_path to a model file, a diffusers folder or a Hub repo id.",
             "pretrained_model_name_or_path")
    _require(bool(config.output_dir), "No output folder given.",
             "Set output_dir to the folder the LoRA should be written to.", "output_dir")
    _require(config.network_module in IMPLEMENTED_NETWORKS,
             f"network_module {config.network_module} is not available in this version yet.",
             "Use networks.lora (add conv_dim/conv_alpha to network_args for LoCon).", "network_module")
    _require(config.loss_type in IMPLEMENTED_LOSSES, f"loss_type {config.loss_type} is not available yet.",
             "Use loss_type = \"l2\".", "loss_type")
    _require(not (config.network_train_unet_only and config.network_train_text_encoder_only),
             "network_train_unet_only and network_train_text_encoder_only are both set, so nothing would train.",
             "Keep at most one of them.", "network_train_unet_only")
    _require(config.min_timestep < config.max_timestep,
             f"min_timestep ({config.min_timestep}) must be below max_timestep ({config.max_timestep}).",
             "The usual range is min_timestep = 0, max_timestep = 1000.", "min_timestep")
    _require(config.min_bucket_reso <= config.max_bucket_reso,
             f"min_bucket_reso ({config.min_bucket_reso}) is above max_bucket_reso ({config.max_bucket_reso}).",
             "Swap them, e.g. min 256 and max 1024 (2048 for SDXL).", "min_bucket_reso")
    _require(not (config.full_fp16 and config.mixed_precision != "fp16"),
             "full_fp16 needs mixed_precision = \"fp16\".", "Set mixed_precision to fp16 or turn full_fp16 off.",
             "full_fp16")
    _require(not (config.full_bf16 and config.mixed_precision != "bf16"),
             "full_bf16 needs mixed_precision = \"bf16\".", "Set mixed_precision to bf16 or turn full_bf16 off.",
             "full_bf16")
    te_lr = config.text_encoder_lr
    _require(not (isinstance(te_lr, list) and len(te_lr) > 2),
             f"text_encoder_lr has {len(te_lr) if isinstance(te_lr, list) else 1} values; at most two text encoders exist.",
             "Give one value, or two for SDXL (CLIP-L, CLIP-G).", "text_encoder_lr")
    _check_caching(config, subsets)
    if config.lr_scheduler in ("adafactor", "rex"):
        raise TrainerError(f"lr_scheduler {config.lr_scheduler} is not available yet.",
                           hint="Use constant, cosine, cosine_with_restarts, linear or polynomial.", option="lr_scheduler")
    if config.network_alpha and config.network_alpha > config.network_dim:
        warnings.append(
            f"network_alpha ({config.network_alpha:g}) is above network_dim ({config.network_dim}): the LoRA's "
            "updates are scaled up, which usually needs a much lower learning rate."
        )
    if config.noise_offset and config.noise_offset > 0.15:
        warnings.append(f"noise_offset {config.noise_offset} is high; 0.03-0.1 is usual, more washes images out.")
    return warnings


def _check_caching(config, subsets: Sequence) -> None:
    if config.cache_text_encoder_outputs:
        trains_te = not config.network_train_unet_only
        _require(not trains_te,
                 "cache_text_encoder_outputs needs frozen text encoders, but the text encoder is being trained.",
                 "Set network_train_unet_only = true, or turn cache_text_encoder_outputs off.",
                 "cache_text_encoder_outputs")
        for subset in subsets:
            for name in ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate",
                         "caption_dropout_every_n_epochs"):
                _require(not getattr(subset, name),
                         f"cache_text_encoder_outputs cannot be used with {name} (in {subset.image_dir}): "
                         "cached captions are encoded once, so they cannot change between steps.",
                         f"Turn {name} off, or turn cache_text_encoder_outputs off.", "cache_text_encoder_outputs")
    if config.cache_latents:
        for subset in subsets:
            for name in ("random_crop", "color_aug"):
                _require(not getattr(subset, name),
                         f"cache_latents cannot be used with {name} (in {subset.image_dir}): cached images are "
                         "encoded once, so they cannot change between steps.",
                         f"Turn {name} off, or turn cache_latents off.", "cache_latents")
