"""The training metadata stored in a LoRA file's safetensors header, as sd-scripts names it.

Civitai, A1111/Forge and the LoRA browsers read these keys: ``ss_*`` (sd-scripts' training
record, including the tag frequencies users browse) and ``modelspec.*`` (Stability's model spec:
architecture, title, resolution, trigger phrase). Every value is a string, as the safetensors
header requires.

The builder only sees :class:`LoraMetadataInput`: whatever the trainer does not put there cannot
reach the file, so no token, environment variable or full user path can leak into a shared LoRA.
Folder paths are reduced to their last component, as sd-scripts does.

As in sd-scripts, every ``ss_*`` key is written even when its value is unknown (``"None"``),
except ``ss_new_sd_model_hash``, written only when known; optional ``modelspec.*`` fields are
left out when not given.
"""
from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from trainer.errors import TrainerError

SAI_MODEL_SPEC_VERSION = "1.0.0"
STABILITY_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


@dataclass(frozen=True)
class _Family:
    """What the files say about one base-model family."""

    architecture: str  # modelspec.architecture before "/lora"
    version: str  # ss_base_model_version (without the v-prediction suffix)
    implementation: str  # modelspec.implementation of a LoRA for it
    default_resolution: int


# sd-scripts names SD1/SD2 LoRAs as diffusers-implemented (diffusers module paths in the keys)
# and SDXL LoRAs as Stability-implemented (SGM paths).
_FAMILIES: dict[str, _Family] = {
    "sd1": _Family("stable-diffusion-v1", "sd_v1", "diffusers", 512),
    "sd2": _Family("stable-diffusion-v2-512", "sd_v2", "diffusers", 512),
    "sdxl": _Family("stable-diffusion-xl-v1-base", "sdxl_base_v1-0", STABILITY_IMPLEMENTATION, 1024),
}
_SD2_V_ARCHITECTURE = "stable-diffusion-v2-768-v"

# The keys kept when the user asks for no metadata: what a loader needs to use the file.
MINIMAL_SS_KEYS = (
    "ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args",
)


@dataclass(frozen=True)
class SubsetInfo:
    """One image folder of a dataset as the metadata records it.

    ``image_dir`` may be a full path: only its last component is stored. ``settings`` holds any
    further JSON-able subset options the trainer wants to record (flip_aug, keep_tokens, ...).
    """

    image_dir: str
    num_repeats: int
    img_count: int
    class_tokens: str | None = None
    is_reg: bool = False
    tag_frequency: Mapping[str, int] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dir_name(self) -> str:
        """The folder's own name, e.g. ``10_mychar``: what ss_dataset_dirs and ss_tag_frequency key on."""
        return PurePath(self.image_dir.replace("\\", "/")).name or self.image_dir


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset (a group of subsets sharing resolution and batch size)."""

    subsets: Sequence[SubsetInfo]
    resolution: tuple[int, int]
    batch_size: int = 1
    enable_bucket: bool = False
    min_bucket_reso: int | None = None
    max_bucket_reso: int | None = None
    bucket_info: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LoraMetadataInput:
    """Everything the metadata may say, filled by the trainer from the config and the dataset scan.

    ``family`` is ``sd1``, ``sd2`` or ``sdxl``. Times are Unix timestamps (``time.time()``);
    ``training_finished_at`` is the time of this save and also gives ``modelspec.date``.
    ``text_encoder_lr`` is one value or one per encoder. ``sd_model_name`` should be the model's
    file or repo name; an absolute path is cut to its last component. ``trigger_phrase``
    defaults to the class tokens of the training (non-regularisation) subsets.
    """

    family: str
    output_name: str
    network_dim: int
    network_alpha: float
    learning_rate: float
    training_started_at: float
    training_finished_at: float
    v_parameterization: bool = False
    network_module: str = "networks.lora"
    network_args: Mapping[str, str] = field(default_factory=dict)
    network_dropout: float | None = None
    unet_lr: float | None = None
    text_encoder_lr: float | Sequence[float] | None = None
    optimizer: str = "AdamW"
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    num_epochs: int | None = None
    max_train_steps: int | None = None
    steps: int = 0
    epoch: int = 0
    num_train_images: int = 0
    num_reg_images: int = 0
    num_batches_per_epoch: int | None = None
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = None
    seed: int | None = None
    clip_skip: int | None = None
    mixed_precision: str = "no"
    noise_offset: float | None = None
    min_snr_gamma: float | None = None
    sd_model_name: str = ""
    sd_model_hash: str | None = None  # sha256 of the base model file, when known
    vae_name: str | None = None
    resolution: tuple[int, int] | None = None
    datasets: Sequence[DatasetInfo] = ()
    training_comment: str | None = None
    title: str | None = None
    author: str | None = None
    description: str | None = None
    license: str | None = None
    tags: str | None = None
    trigger_phrase: str | None = None


def _family(info: LoraMetadataInput) -> _Family:
    try:
        return _FAMILIES[info.family]
    except KeyError:
        raise TrainerError(
            f"Unknown model family {info.family!r} for the LoRA metadata.",
            hint=f"Use one of {', '.join(_FAMILIES)}.",
        ) from None


def _text(value: Any) -> str:
    # sd-scripts writes str() of every value, so None becomes "None" and floats keep Python's spelling.
    return str(value)


def _lr_text(value: float | Sequence[float] | None) -> str:
    if value is None or isinstance(value, (int, float)):
        return _text(value)
    values = [float(v) for v in value]
    return _text(values[0]) if len(values) == 1 else _text(values)


def _base_model_version(info: LoraMetadataInput, family: _Family) -> str:
    return family.version + ("_v" if info.v_parameterization and info.family != "sdxl" else "")


def _architecture(info: LoraMetadataInput, family: _Family) -> str:
    if info.family == "sd2" and info.v_parameterization:
        return _SD2_V_ARCHITECTURE
    return family.architecture


def _model_name(name: str) -> str:
    path = PurePath(name.replace("\\", "/"))
    # A drive letter or a leading slash means a local path: keep only the file or folder name.
    return path.name if path.is_absolute() or re.match(r"^[A-Za-z]:/", str(path)) else name


def _dataset_json(dataset: DatasetInfo) -> dict[str, Any]:
    train_subsets = [s for s in dataset.subsets if not s.is_reg]
    return {
        "is_dreambooth": True,
        "batch_size_per_device": dataset.batch_size,
        "num_train_images": sum(s.img_count * s.num_repeats for s in train_subsets),
        "num_reg_images": sum(s.img_count * s.num_repeats for s in dataset.subsets if s.is_reg),
        "resolution": list(dataset.resolution),
        "enable_bucket": dataset.enable_bucket,
        "min_bucket_reso": dataset.min_bucket_reso,
        "max_bucket_reso": dataset.max_bucket_reso,
        "tag_frequency": {s.dir_name: dict(s.tag_frequency) for s in dataset.subsets},
        "bucket_info": dict(dataset.bucket_info) if dataset.bucket_info is not None else None,
        "subsets": [
            {
                **dict(s.settings),
                "img_count": s.img_count,
                "num_repeats": s.num_repeats,
                "image_dir": s.dir_name,
                "class_tokens": s.class_tokens,
                "is_reg": s.is_reg,
            }
            for s in dataset.subsets
        ],
    }


def _dataset_keys(datasets: Sequence[DatasetInfo]) -> dict[str, str]:
    dirs: dict[str, dict[str, int]] = {}
    tags: dict[str, dict[str, int]] = {}
    for dataset in datasets:
        for subset in dataset.subsets:
            dirs[subset.dir_name] = {"n_repeats": subset.num_repeats, "img_count": subset.img_count}
            # Two folders with one name (in different datasets) share one entry, so add up their counts.
            counts = tags.setdefault(subset.dir_name, {})
            for tag, count in subset.tag_frequency.items():
                counts[tag] = counts.get(tag, 0) + int(count)
    return {
        "ss_datasets": json.dumps([_dataset_json(d) for d in datasets]),
        "ss_dataset_dirs": json.dumps(dirs),
        "ss_tag_frequency": json.dumps(tags),
    }


def _default_trigger(datasets: Sequence[DatasetInfo]) -> str | None:
    tokens = [s.class_tokens for d in datasets for s in d.subsets if s.class_tokens and not s.is_reg]
    return ", ".join(dict.fromkeys(tokens)) or None


def _modelspec(info: LoraMetadataInput, family: _Family) -> dict[str, str]:
    width, height = info.resolution or (family.default_resolution, family.default_resolution)
    date = datetime.datetime.fromtimestamp(int(info.training_finished_at)).isoformat()
    out = {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC_VERSION,
        "modelspec.architecture": f"{_architecture(info, family)}/lora",
        "modelspec.implementation": family.implementation,
        "modelspec.title": info.title or info.output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": date,
        "modelspec.prediction_type": "v" if info.v_parameterization else "epsilon",
    }
    optional = {
        "modelspec.author": info.author,
        "modelspec.description": info.description,
        "modelspec.license": info.license,
        "modelspec.tags": info.tags,
        "modelspec.trigger_phrase": info.trigger_phrase or _default_trigger(info.datasets),
        "modelspec.encoder_layer": info.clip_skip,
    }
    out.update({key: _text(value) for key, value in optional.items() if value is not None})
    return out


def build_metadata(info: LoraMetadataInput, minimal: bool = False) -> dict[str, str]:
    """The header metadata for one save; ``minimal`` (the ``no_metadata`` option) keeps only what loaders need.

    The ``sshs_*`` hashes are not here: :func:`trainer.saving.lora_file.save_lora_file` adds them
    because they depend on the tensors as written.
    """
    family = _family(info)
    width, height = info.resolution or (family.default_resolution, family.default_resolution)
    ss: dict[str, Any] = {
        "ss_v2": info.family == "sd2",
        "ss_base_model_version": _base_model_version(info, family),
        "ss_network_module": info.network_module,
        "ss_network_dim": int(info.network_dim),
        "ss_network_alpha": float(info.network_alpha),
        "ss_network_args": json.dumps({str(k): str(v) for k, v in info.network_args.items()}),
        "ss_network_dropout": info.network_dropout,
        "ss_output_name": info.output_name,
        "ss_learning_rate": info.learning_rate,
        "ss_unet_lr": info.unet_lr,
        "ss_text_encoder_lr": _lr_text(info.text_encoder_lr),
        "ss_optimizer": info.optimizer,
        "ss_lr_scheduler": info.lr_scheduler,
        "ss_lr_warmup_steps": info.lr_warmup_steps,
        "ss_num_epochs": info.num_epochs,
        "ss_steps": info.steps,
        "ss_epoch": info.epoch,
        "ss_max_train_steps": info.max_train_steps,
        "ss_num_train_images": info.num_train_images,
        "ss_num_reg_images": info.num_reg_images,
        "ss_num_batches_per_epoch": info.num_batches_per_epoch,
        "ss_gradient_checkpointing": info.gradient_checkpointing,
        "ss_gradient_accumulation_steps": info.gradient_accumulation_steps,
        "ss_max_grad_norm": info.max_grad_norm,
        "ss_seed": info.seed,
        "ss_clip_skip": info.clip_skip,
        "ss_mixed_precision": info.mixed_precision,
        "ss_noise_offset": info.noise_offset,
        "ss_min_snr_gamma": info.min_snr_gamma,
        "ss_resolution": (width, height),
        "ss_training_started_at": info.training_started_at,
        "ss_training_finished_at": info.training_finished_at,
        "ss_sd_model_name": _model_name(info.sd_model_name),
        "ss_vae_name": _model_name(info.vae_name) if info.vae_name else None,
        "ss_training_comment": info.training_comment,
    }
    if info.sd_model_hash:
        ss["ss_new_sd_model_hash"] = info.sd_model_hash
    metadata = {key: _text(value) for key, value in ss.items()}
    metadata.update(_dataset_keys(info.datasets))
    if minimal:
        metadata = {key: metadata[key] for key in MINIMAL_SS_KEYS}
    metadata.update(_modelspec(info, family))
    return metadata
