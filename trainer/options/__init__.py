"""The one table of training options: validation, defaults, the config writer, widgets and docs read it.

``OPTIONS`` is every option we know, in display order. ``NOT_IMPLEMENTED`` (built from the rows
whose ``implemented`` is False, plus sd-scripts options we accept but ignore) is the one place that
lists what the trainer takes without acting on; loading a config that sets one of them warns.
"""
from __future__ import annotations

import difflib

from trainer.errors import TrainerError
from trainer.options.schema import DATASET, SUBSET, TRAIN, Option, range_text
from trainer.options.table_data import CACHE_OPTIONS, DATA_OPTIONS
from trainer.options.table_model import MODEL_OPTIONS, NETWORK_OPTIONS, OPTIMIZER_OPTIONS, SCHEDULER_OPTIONS
from trainer.options.table_training import (
    LOG_OPTIONS, LOSS_OPTIONS, SAMPLE_OPTIONS, SAVE_OPTIONS, TRAINING_OPTIONS,
)

OPTIONS: tuple[Option, ...] = (
    MODEL_OPTIONS + NETWORK_OPTIONS + OPTIMIZER_OPTIONS + SCHEDULER_OPTIONS + DATA_OPTIONS + CACHE_OPTIONS
    + TRAINING_OPTIONS + LOSS_OPTIONS + SAVE_OPTIONS + SAMPLE_OPTIONS + LOG_OPTIONS
)
BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
if len(BY_NAME) != len(OPTIONS):  # a duplicated row would silently shadow another
    raise RuntimeError("the options table names an option twice")

GROUP_TITLES = {
    "model": "Base model",
    "network": "Network (LoRA type and size)",
    "optimizer": "Optimizer and learning rate",
    "scheduler": "Learning-rate schedule",
    "data": "Dataset",
    "buckets": "Aspect-ratio buckets",
    "captions": "Captions",
    "augmentation": "Augmentation",
    "caching": "Caching",
    "training": "Training length and batch",
    "precision": "Precision",
    "noise": "Noise and loss",
    "saving": "Saving",
    "state": "Saved state and resume",
    "sampling": "Sample images",
    "logging": "Logging",
    "validation": "Validation",
}

# sd-scripts options that are accepted so existing configs load, and ignored, with the reason.
IGNORED_OPTIONS: dict[str, str] = {
    "mem_eff_attn": "PyTorch's scaled-dot-product attention is always used.",
    "highvram": "memory placement is automatic.",
    "console_log_level": "the trainer logs through its events file and tqdm.",
    "console_log_simple": "the trainer logs through its events file and tqdm.",
    "ddp_timeout": "accelerate's default timeout is used.",
    "ddp_gradient_as_bucket_view": "accelerate's defaults are used.",
    "ddp_static_graph": "accelerate's defaults are used.",
    "log_config": "the events file's start event records the whole configuration.",
    "wandb_api_key": "",  # refused below, never ignored silently
}

# Keys that must never be stored in a config file: secrets come from the environment only.
SECRET_KEYS: dict[str, str] = {
    "wandb_api_key": "WANDB_API_KEY",
    "huggingface_token": "HF_TOKEN",
    "hf_token": "HF_TOKEN",
    "civitai_token": "CIVITAI_TOKEN",
    "civitai_api_key": "CIVITAI_TOKEN",
}

NOT_IMPLEMENTED: dict[str, str] = {
    **{option.name: "accepted but not implemented yet" for option in OPTIONS if not option.implemented},
    **{name: reason for name, reason in IGNORED_OPTIONS.items() if reason},
}


def get_option(name: str, scope: str = TRAIN, source: str = "") -> Option:
    """The table row for ``name``; an unknown key raises an error naming the closest known one."""
    if name in SECRET_KEYS:
        raise TrainerError(
            f"'{name}'{f' in {source}' if source else ''} is a secret and is never read from a config file.",
            hint=f"Remove it from the file and set the environment variable {SECRET_KEYS[name]} instead.",
            option=name,
        )
    option = BY_NAME.get(name)
    if option is None or scope not in option.scopes:
        known = [o.name for o in OPTIONS if scope in o.scopes] + list(IGNORED_OPTIONS)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        where = f" in {source}" if source else ""
        level = {TRAIN: "training config", DATASET: "dataset section", SUBSET: "subset section"}[scope]
        if option is not None:
            raise TrainerError(
                f"'{name}'{where} cannot be set in a {level}.",
                hint=f"Move it to a {' or '.join(sorted(option.scopes))} section.",
                option=name,
            )
        hint = f"Did you mean '{close[0]}'?" if close else "See docs/OPTIONS.md for every option."
        raise TrainerError(f"Unknown option '{name}'{where}.", hint=hint, option=name)
    return option


__all__ = [
    "BY_NAME", "DATASET", "GROUP_TITLES", "IGNORED_OPTIONS", "NOT_IMPLEMENTED", "OPTIONS", "Option",
    "SECRET_KEYS", "SUBSET", "TRAIN", "get_option", "range_text",
]
