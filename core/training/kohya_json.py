"""Import a kohya_ss GUI config (its JSON "Save" file) into a :class:`TrainingForm`.

Each GUI key maps to an option of the table (sometimes with a conversion: "512,512" resolutions,
warmup in percent, the LoRA type becoming network_module + algo, conv_dim/conv_alpha becoming
network_args). Keys that cannot be mapped are reported as warnings, one by one when they hold a
value, in one summary line when they are empty or off: nothing is dropped without a word.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import CoreError
from core.training.config_reader import ReadResult, with_network_type_read
from core.training.form import TrainingForm, check_value, is_empty
from trainer.options import SECRET_KEYS

# GUI key -> option name, where only the name differs (or not even that).
_SAME = (
    "pretrained_model_name_or_path", "v2", "v_parameterization", "train_data_dir", "reg_data_dir", "output_dir",
    "output_name", "logging_dir", "learning_rate", "unet_lr", "text_encoder_lr", "lr_scheduler",
    "lr_scheduler_num_cycles", "lr_scheduler_power", "train_batch_size", "max_train_epochs", "max_train_steps",
    "save_every_n_epochs", "save_every_n_steps", "save_last_n_steps", "mixed_precision", "save_precision",
    "seed", "caption_extension", "cache_latents", "cache_latents_to_disk", "gradient_checkpointing",
    "gradient_accumulation_steps", "flip_aug", "color_aug", "shuffle_caption", "keep_tokens", "clip_skip",
    "noise_offset", "adaptive_noise_scale", "multires_noise_iterations", "multires_noise_discount",
    "min_snr_gamma", "network_dim", "network_alpha", "network_dropout", "network_weights", "scale_weight_norms",
    "max_grad_norm", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
    "bucket_no_upscale", "random_crop", "caption_dropout_rate", "caption_dropout_every_n_epochs",
    "prior_loss_weight", "full_fp16", "full_bf16", "save_state", "resume", "vae", "no_half_vae",
    "persistent_data_loader_workers", "max_data_loader_n_workers", "scale_v_pred_loss_like_noise_pred",
    "sample_every_n_epochs", "sample_every_n_steps", "sample_sampler", "ip_noise_gamma",
    "debiased_estimation_loss", "loss_type", "huber_c", "huber_schedule", "max_token_length",
    "min_timestep", "max_timestep", "keep_tokens_separator", "caption_tag_dropout_rate", "fp8_base",
    "cache_text_encoder_outputs", "network_train_unet_only", "network_train_text_encoder_only", "masked_loss",
    "log_with", "wandb_run_name", "log_tracker_name", "training_comment", "metadata_title", "metadata_author",
    "metadata_description", "metadata_license", "metadata_tags", "dim_from_weights", "sdpa", "xformers",
    "save_model_as", "vae_batch_size", "alpha_mask", "lowram",
)
_RENAMED = {
    "epoch": "max_train_epochs",
    "max_resolution": "resolution",
    "resolution": "resolution",
    "optimizer": "optimizer_type",
    "sdxl_no_half_vae": "no_half_vae",
    "sdxl_cache_text_encoder_outputs": "cache_text_encoder_outputs",
    "caption_dropout_every_n_epoch": "caption_dropout_every_n_epochs",
    "noise_offset_random_strength": "noise_offset_random_strength",
    "ip_noise_gamma_random_strength": "ip_noise_gamma_random_strength",
    "zero_terminal_snr": "zero_terminal_snr",
}
# Keys that say something the trainer finds out by itself, so they need no option.
_IMPLIED = {
    "sdxl": "the model family is detected from the base model file",
    "sd3_checkbox": "the model family is detected from the base model file",
    "flux1_checkbox": "the model family is detected from the base model file",
    "model_list": "the GUI's model dropdown; pretrained_model_name_or_path carries the model",
}
# LoRA_type -> (network_module, LyCORIS algo or None)
_LORA_TYPES = {
    "standard": ("networks.lora", None),
    "lora": ("networks.lora", None),
    "kohya locon": ("networks.lora", None),
    "locon": ("networks.lora", None),
    "kohya dylora": ("networks.dylora", None),
    "lycoris/locon": ("lycoris.kohya", "locon"),
    "lycoris/loha": ("lycoris.kohya", "loha"),
    "lycoris/lokr": ("lycoris.kohya", "lokr"),
    "lycoris/ia3": ("lycoris.kohya", "ia3"),
    "lycoris/glora": ("lycoris.kohya", "glora"),
    "lycoris/diag-oft": ("lycoris.kohya", "diag-oft"),
    "lycoris/boft": ("lycoris.kohya", "boft"),
    "lycoris/native fine-tuning": ("lycoris.kohya", "full"),
}
# Network-argument keys the GUI keeps as top-level fields.
_NETWORK_ARG_KEYS = ("conv_dim", "conv_alpha", "factor", "dora_wd", "use_tucker", "use_cp", "train_norm",
                     "rank_dropout", "module_dropout", "unit", "constrain", "rescaled", "decompose_both")


@dataclass
class _Import:
    values: dict[str, Any]
    warnings: list[str]
    handled: set[str]
    base: Path
    source: str

    def put(self, key: str, option: str, raw: Any) -> None:
        self.handled.add(key)
        if is_empty(raw):
            return
        value = check_value(option, raw, "train", self.base, f"{self.source} ({key})")
        if value is not None:
            self.values[option] = value


def _is_off(value: Any) -> bool:
    return is_empty(value) or value is False or value == 0 or str(value).strip().lower() in ("none", "false", "0")


def _network(job: _Import, data: dict[str, Any]) -> None:
    """LoRA_type and the GUI's network-argument fields -> network_module and network_args."""
    args: list[str] = []
    lora_type = data.get("LoRA_type")
    if lora_type is not None:
        job.handled.add("LoRA_type")
        module, algo = _LORA_TYPES.get(str(lora_type).strip().lower(), (None, None))
        if module is None:
            job.warnings.append(f"LoRA_type {lora_type!r} has no equivalent here; network_module is left as it was "
                                "(LoRA). Pick the network type in the panel.")
        else:
            job.values["network_module"] = module
            if algo:
                args.append(f"algo={algo}")
    module = job.values.get("network_module", "networks.lora")
    for key in _NETWORK_ARG_KEYS:
        if key not in data:
            continue
        job.handled.add(key)
        raw = data[key]
        if _is_off(raw) or (key in ("conv_dim", "conv_alpha") and module == "networks.lora"
                            and str(lora_type).strip().lower() == "standard"):
            continue
        if key == "unit" and module != "networks.dylora":
            continue
        text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        args.append(f"{'use_tucker' if key == 'use_cp' else key}={text}")
    extra = data.get("network_args") or data.get("additional_network_args")
    if isinstance(extra, str) and extra.strip():
        args += extra.split()
    job.handled.update({"network_args", "additional_network_args"})
    if args:
        job.put("network_args", "network_args", args)


def _special(job: _Import, data: dict[str, Any]) -> None:
    """Keys whose value needs converting before the option takes it."""
    if "lr_warmup" in data:  # a percentage of the steps in the GUI; below 1 is a ratio here
        job.handled.add("lr_warmup")
        if not _is_off(data["lr_warmup"]):
            job.put("lr_warmup", "lr_warmup_steps", float(data["lr_warmup"]) / 100)
    if "lr_warmup_steps" in data and not _is_off(data["lr_warmup_steps"]):
        job.put("lr_warmup_steps", "lr_warmup_steps", data["lr_warmup_steps"])
    job.handled.add("lr_warmup_steps")
    if "optimizer_args" in data:
        raw = data["optimizer_args"]
        job.put("optimizer_args", "optimizer_args", str(raw).split() if isinstance(raw, str) else raw)
    if "lr_scheduler_args" in data:
        raw = data["lr_scheduler_args"]
        job.put("lr_scheduler_args", "lr_scheduler_args", str(raw).split() if isinstance(raw, str) else raw)
    xformers = data.get("xformers")
    if isinstance(xformers, str):  # newer GUIs: "xformers", "sdpa" or "none"
        job.handled.add("xformers")
        if xformers.strip().lower() in ("xformers", "sdpa"):
            job.put("xformers", xformers.strip().lower(), True)
    noise_type = str(data.get("noise_offset_type", "")).strip().lower()
    if "noise_offset_type" in data:
        job.handled.add("noise_offset_type")
        unused = ("multires_noise_iterations", "multires_noise_discount") if noise_type == "original" else (
            ("noise_offset", "adaptive_noise_scale") if noise_type == "multires" else ())
        job.handled.update(unused)  # the GUI keeps both kinds' fields; only the chosen one applies


def _apply_table(job: _Import, data: dict[str, Any]) -> None:
    for key, raw in data.items():
        if key in job.handled:
            continue
        if key in SECRET_KEYS:
            job.handled.add(key)
            if not is_empty(raw):
                job.warnings.append(f"'{key}' is a secret and was not imported; set {SECRET_KEYS[key]} in the "
                                    "environment instead.")
            continue
        if key in _IMPLIED:
            job.handled.add(key)
            continue
        option = _RENAMED.get(key, key if key in _SAME else None)
        if option is None:
            continue
        if option == "save_model_as" and str(raw).strip().lower() != "safetensors":
            job.handled.add(key)
            job.warnings.append(f"save_model_as {raw!r} is not available; LoRA files are written as safetensors.")
            continue
        if isinstance(raw, bool) and not raw and option in job.values:
            job.handled.add(key)
            continue
        job.put(key, option, raw)


def _converters() -> tuple[Callable[[_Import, dict[str, Any]], None], ...]:
    return (_network, _special, _apply_table)


def import_kohya_json(path: str | Path, project: str | None = None) -> ReadResult:
    """The form a kohya_ss GUI JSON config describes, with a warning for every key not carried over."""
    path = Path(path).expanduser().resolve()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CoreError(f"Config file not found: {path}", "Check the path.") from None
    except (OSError, ValueError) as problem:
        raise CoreError(f"{path} is not a readable JSON file ({problem}).",
                        "Pick the .json file the kohya_ss GUI saved (Configuration file > Save).") from None
    if not isinstance(data, dict):
        raise CoreError(f"{path} does not hold a kohya_ss config (expected a JSON object).", "Pick another file.")
    job = _Import({}, [], set(), path.parent, str(path))
    for convert in _converters():
        convert(job, data)
    unmapped = sorted(key for key in data if key not in job.handled)
    valued = [key for key in unmapped if not _is_off(data[key])]
    for key in valued:
        job.warnings.append(f"kohya_ss key '{key}' = {data[key]!r} has no equivalent here and was not imported.")
    empty = [key for key in unmapped if key not in valued]
    if empty:
        job.warnings.append(f"{len(empty)} other kohya_ss keys were empty or off and have no equivalent here: "
                            f"{', '.join(empty)}.")
    name = project or "".join(ch if ch.isalnum() or ch in "._-" else "_"
                              for ch in str(job.values.get("output_name") or path.stem)).strip("._-") or "my_lora"
    return ReadResult(with_network_type_read(TrainingForm(name, job.values)), job.warnings, [path])
