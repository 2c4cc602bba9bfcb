"""Checks across options: contradictions and risky values, found before any heavy work starts.

``check_config`` returns warnings and raises :class:`TrainerError` for the first contradiction,
naming the options involved and what to change.
"""
from __future__ import annotations

from collections.abc import Sequence

from trainer.errors import TrainerError

IMPLEMENTED_NETWORKS = ("networks.lora", "lycoris.kohya", "networks.dylora")
IMPLEMENTED_LOSSES = ("l2", "huber", "smooth_l1")
SCHEDULE_FREE = ("AdamWScheduleFree", "RAdamScheduleFree")


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
    warnings += _check_network_args(config)
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
    _check_optimizer(config)
    _check_schedule(config)
    warnings += _check_noise_and_loss(config, subsets)
    warnings += _check_previews_and_logging(config)
    if config.optimizer_type in SCHEDULE_FREE and config.lr_scheduler != "constant" and not config.lr_scheduler_type:
        warnings.append(
            f"{config.optimizer_type} replaces the learning-rate schedule with its own averaging; lr_scheduler "
            f"{config.lr_scheduler} is applied on top of it. Use lr_scheduler = \"constant\" (warmup may stay)."
        )
    if config.network_alpha and config.network_alpha > config.network_dim:
        warnings.append(
            f"network_alpha ({config.network_alpha:g}) is above network_dim ({config.network_dim}): the LoRA's "
            "updates are scaled up, which usually needs a much lower learning rate."
        )
    if config.noise_offset and config.noise_offset > 0.15:
        warnings.append(f"noise_offset {config.noise_offset} is high; 0.03-0.1 is usual, more washes images out.")
    return warnings


def _check_network_args(config) -> list[str]:
    """Read network_args the way the network builder will, so mistakes surface before the model loads."""
    from trainer.networks.dylora import parse_dylora_args
    from trainer.networks.factory import parse_network_args
    from trainer.networks.lycoris_args import parse_lycoris_args
    from trainer.networks.lycoris_presets import load_preset

    if config.network_module == "lycoris.kohya":
        settings, warnings = parse_lycoris_args(config.network_args)
        preset = load_preset(settings.preset)
        if config.network_train_unet_only and not preset.has_unet_targets:
            raise TrainerError(f"LyCORIS preset {preset.name} trains text encoders only, but network_train_unet_only "
                               "is set.", hint="Use preset=full or unet-only.", option="network_args")
        if config.network_train_text_encoder_only and not preset.has_text_encoder_targets:
            raise TrainerError(f"LyCORIS preset {preset.name} has no text-encoder layers, but "
                               "network_train_text_encoder_only is set.", hint="Use preset=full or attn-mlp.",
                               option="network_args")
        return warnings
    if config.network_module == "networks.dylora":
        dylora = parse_dylora_args(config.network_args)
        _require(config.network_dim % dylora.unit == 0,
                 f"networks.dylora needs network_dim ({config.network_dim}) to be a multiple of unit ({dylora.unit}).",
                 f"Pick a unit that divides {config.network_dim}, e.g. unit=1, 2 or 4.", "network_args")
        _require(not dylora.conv_dim or dylora.conv_dim % dylora.unit == 0,
                 f"networks.dylora needs conv_dim ({dylora.conv_dim}) to be a multiple of unit ({dylora.unit}).",
                 f"Pick a unit that divides {dylora.conv_dim}.", "network_args")
        return []
    parse_network_args(config.network_args)
    return []


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


def _check_optimizer(config) -> None:
    if not config.fused_backward_pass:
        return
    _require(config.optimizer_type == "Adafactor",
             f"fused_backward_pass works with optimizer_type Adafactor only, not {config.optimizer_type}.",
             "Set optimizer_type = \"Adafactor\", or turn fused_backward_pass off.", "fused_backward_pass")
    _require(config.gradient_accumulation_steps == 1,
             "fused_backward_pass updates the weights during each backward pass, so gradients cannot be "
             f"accumulated (gradient_accumulation_steps is {config.gradient_accumulation_steps}).",
             "Set gradient_accumulation_steps = 1 (raise train_batch_size instead), or turn fused_backward_pass off.",
             "fused_backward_pass")
    _require(config.mixed_precision != "fp16",
             "fused_backward_pass cannot be used with mixed_precision fp16: the fp16 loss scaler checks the "
             "gradients for overflow only after the backward pass, when they are already applied.",
             "Use mixed_precision = \"bf16\" (or \"no\"), or turn fused_backward_pass off.", "fused_backward_pass")


def _check_schedule(config) -> None:
    if config.lr_scheduler_args and not config.lr_scheduler_type:
        raise TrainerError("lr_scheduler_args is set but lr_scheduler_type is not; the arguments would be ignored.",
                           hint="Set lr_scheduler_type to the scheduler class they are for, or remove lr_scheduler_args.",
                           option="lr_scheduler_args")
    if config.lr_scheduler_type:
        _require(not config.lr_warmup_steps,
                 f"lr_scheduler_type {config.lr_scheduler_type} cannot be combined with lr_warmup_steps: a scheduler "
                 "class is used exactly as given.",
                 "Set lr_warmup_steps = 0, or put the warmup into the scheduler's own lr_scheduler_args.",
                 "lr_warmup_steps")
        return
    if config.lr_scheduler == "adafactor":
        _require(config.optimizer_type == "Adafactor",
                 f"lr_scheduler adafactor only works with optimizer_type Adafactor, not {config.optimizer_type}.",
                 "Set optimizer_type = \"Adafactor\", or choose another lr_scheduler (constant, cosine, ...).",
                 "lr_scheduler")
        _require(not config.lr_warmup_steps,
                 "lr_scheduler adafactor has no warmup (Adafactor ramps up by itself with warmup_init=True).",
                 "Set lr_warmup_steps = 0, and add \"warmup_init=True\" to optimizer_args if you want a warmup.",
                 "lr_warmup_steps")


def _check_noise_and_loss(config, subsets: Sequence) -> list[str]:
    warnings: list[str] = []
    _require(config.adaptive_noise_scale is None or bool(config.noise_offset),
             "adaptive_noise_scale adds to noise_offset, which is not set.",
             "Set noise_offset (e.g. 0.0357) as well, or remove adaptive_noise_scale.", "adaptive_noise_scale")
    if config.noise_offset_random_strength and not config.noise_offset:
        warnings.append("noise_offset_random_strength has no effect without noise_offset.")
    if config.ip_noise_gamma_random_strength and not config.ip_noise_gamma:
        warnings.append("ip_noise_gamma_random_strength has no effect without ip_noise_gamma.")
    if config.scale_v_pred_loss_like_noise_pred and not config.v_parameterization:
        warnings.append("scale_v_pred_loss_like_noise_pred only acts on v-prediction models; set v_parameterization "
                        "if this model is one, otherwise the option does nothing.")
    if config.loss_type == "l2" and (config.is_set("huber_c") or config.is_set("huber_schedule")):
        warnings.append("huber_c and huber_schedule only apply to loss_type huber or smooth_l1; this run uses l2.")
    if config.loss_type == "huber" or config.loss_type == "smooth_l1":
        _require(config.huber_c > 0 or config.huber_schedule == "snr" and config.huber_c >= 0,
                 f"huber_c must be above 0 for loss_type {config.loss_type} with huber_schedule {config.huber_schedule}.",
                 "0.1 is the usual value.", "huber_c")
        _require(config.huber_schedule != "exponential" or config.huber_c < 1,
                 "huber_schedule exponential falls from 1 to huber_c, so huber_c must be below 1.",
                 "0.1 is the usual value.", "huber_c")
    masked_subsets = [subset for subset in subsets if subset.alpha_mask]
    if config.masked_loss:
        _require(bool(masked_subsets) or not subsets,
                 "masked_loss is on, but no subset has alpha_mask, so there is no mask to use.",
                 "Set alpha_mask = true on the subsets whose images carry transparency, or turn masked_loss off.",
                 "masked_loss")
    return warnings


def _check_previews_and_logging(config) -> list[str]:
    """Sample prompts, trackers and validation: read the prompts file and find wandb before the model loads."""
    from trainer.sampling.prompts import load_prompts
    from trainer.tracking import require_wandb

    warnings: list[str] = []
    schedules = [name for name in ("sample_every_n_epochs", "sample_every_n_steps", "sample_at_first") if config[name]]
    if config.sample_prompts:
        load_prompts(config.sample_prompts)  # raises, naming the file and line, on any mistake in it
        if not schedules:
            warnings.append("sample_prompts is set, but no sample_every_n_epochs, sample_every_n_steps or "
                            "sample_at_first, so no sample images will be made.")
    elif schedules:
        warnings.append(f"{schedules[0]} is set, but sample_prompts is not, so no sample images will be made.")
    require_wandb(config.log_with)
    if config.wandb_run_name and config.log_with not in ("wandb", "all"):
        warnings.append("wandb_run_name is only used with log_with = \"wandb\" or \"all\".")
    for name in ("validate_every_n_steps", "validate_every_n_epochs"):
        _require(not config[name] or bool(config.validation_split),
                 f"{name} is set, but validation_split is 0, so there is nothing to validate on.",
                 "Set validation_split (e.g. 0.1 holds out a tenth of each folder's images), or remove "
                 f"{name}.", name)
    return warnings
