"""Load a base model for LoRA training: a diffusers folder, a Hub repo id, or one original-layout file.

:func:`load_model` returns every part frozen and in eval mode, plus the training noise scheduler
and the family adapter. Single files go through diffusers' ``from_single_file`` with a local
config folder (``model_config``, or the configs bundled with the trainer plus tokenizer files
fetched once), so loading stays offline whenever the tokenizer files are cached.

Precision: the UNet and text encoders get the requested dtype. The VAE stays float32 when
``no_half_vae`` is set, and also for SDXL in float16 when its config says ``force_upcast``
(the stock SDXL VAE overflows to NaN in fp16; the fp16-fix VAE's config clears the flag, so a
``vae`` folder holding it is used in fp16). A VAE read from a single file inherits the base
config's flag, so it stays float32 there: safe, at the cost of some memory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import TrainerError
from trainer.maths import make_noise_scheduler
from trainer.models.bundled import BundledConfigs, bundled_kind
from trainer.models.detect import (
    Architecture,
    JsonReader,
    detect_architecture,
    detect_diffusers,
    folder_json_reader,
    read_keys_and_shapes,
)
from trainer.models.family import FamilyAdapter
from trainer.models.family_sd import StableDiffusionAdapter
from trainer.models.family_sdxl import StableDiffusionXLAdapter
from trainer.models.vae import VaeConfigSource, load_vae, looks_like_repo_id, require_complete

if TYPE_CHECKING:
    import torch

    from trainer.config import TrainingConfig

MODEL_OPTION = "pretrained_model_name_or_path"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class ModelSpec:
    """The model options, typed: what to load and how."""

    pretrained_model_name_or_path: str
    model_config: str | None = None
    v2: bool = False
    v_parameterization: bool = False
    zero_terminal_snr: bool = False
    vae: str | None = None
    no_half_vae: bool = False
    clip_skip: int | None = None
    max_token_length: int | None = None

    @classmethod
    def from_config(cls, config: "TrainingConfig") -> "ModelSpec":
        """Take the model options out of a validated training config."""
        value = config["pretrained_model_name_or_path"]
        if not value:
            raise TrainerError("No base model is set.", hint="Set pretrained_model_name_or_path.", option=MODEL_OPTION)
        return cls(
            pretrained_model_name_or_path=str(value),
            model_config=config["model_config"] or None,
            v2=bool(config["v2"]),
            v_parameterization=bool(config["v_parameterization"]),
            zero_terminal_snr=bool(config["zero_terminal_snr"]),
            vae=config["vae"] or None,
            no_half_vae=bool(config["no_half_vae"]),
            clip_skip=config["clip_skip"],
            max_token_length=config["max_token_length"],
        )


@dataclass(frozen=True)
class ModelSource:
    """Where the base model is: ``kind`` is single_file, diffusers_folder or hub_repo."""

    kind: str
    location: str

    @property
    def name(self) -> str:
        """The file or folder name (or the repo id), as ``ss_sd_model_name`` records it."""
        return self.location if self.kind == "hub_repo" else Path(self.location).name


@dataclass(eq=False)
class LoadedModel:
    """A base model ready for training: frozen parts, noise scheduler and family adapter."""

    family: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    noise_scheduler: Any
    v_parameterization: bool
    model_name: str
    architecture: Architecture
    adapter: FamilyAdapter
    vae_name: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def resolve_source(value: str) -> ModelSource:
    """Decide whether ``value`` is a local file, a local diffusers folder or a Hub repo id."""
    if not value or not str(value).strip():
        raise TrainerError("No base model is set.", hint="Set pretrained_model_name_or_path.", option=MODEL_OPTION)
    path = Path(value).expanduser()
    if path.is_file():
        return ModelSource("single_file", str(path))
    if path.is_dir():
        return ModelSource("diffusers_folder", str(path))
    if looks_like_repo_id(str(value)):
        return ModelSource("hub_repo", str(value))
    raise TrainerError(
        f"Base model not found: {value}",
        hint="Give an existing .safetensors/.ckpt file, a diffusers folder, or a Hugging Face repo id (owner/name).",
        option=MODEL_OPTION,
    )


def hub_json_reader(repo_id: str) -> JsonReader:
    """Read a JSON file of a Hub repo through huggingface_hub's cache; None when the repo lacks it."""

    def read(relative: str) -> dict[str, Any] | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            path = hf_hub_download(repo_id, relative)
        except LocalEntryNotFoundError as problem:
            raise _hub_error(repo_id, problem) from problem
        except EntryNotFoundError:
            return None
        except Exception as problem:  # unknown repo, HTTP errors, offline mode
            raise _hub_error(repo_id, problem) from problem
        return json.loads(Path(path).read_text(encoding="utf-8"))

    return read


def _hub_error(repo_id: str, problem: Exception) -> TrainerError:
    return TrainerError(
        f"Could not load the Hugging Face repo {repo_id} ({type(problem).__name__}: {problem}).",
        hint="Check the repo id and your connection (offline, only repos already in the Hub cache load), or give "
             "a local diffusers folder or .safetensors file instead.",
        option=MODEL_OPTION,
    )


def detect_source(source: ModelSource) -> Architecture:
    """The architecture of a resolved source, read from keys/shapes or JSON configs only."""
    if source.kind == "single_file":
        return detect_architecture(read_keys_and_shapes(Path(source.location)), source.location)
    if source.kind == "diffusers_folder":
        return detect_diffusers(folder_json_reader(Path(source.location)), source.location)
    return detect_diffusers(hub_json_reader(source.location), source.location, "hub_repo")


def load_model(
    spec: ModelSpec,
    device: "torch.device | str" = "cpu",
    dtype: "torch.dtype | None" = None,
    *,
    bundled: BundledConfigs | None = None,
) -> LoadedModel:
    """Load, freeze and place every part of the base model named by ``spec``.

    ``bundled`` says where the bundled configs and their tokenizers come from when a single
    file is loaded without ``model_config`` (tests pass their own; the default fetches from the Hub).
    """
    import torch

    dtype = dtype or torch.float32
    source = resolve_source(spec.pretrained_model_name_or_path)
    architecture = detect_source(source)
    warnings = _check_flags(spec, source, architecture)
    if source.kind == "single_file":
        parts, vae_config = _load_single_file(spec, source, architecture, bundled or BundledConfigs())
    else:
        parts, vae_config = _load_diffusers(spec, source, architecture)
    if spec.vae:
        parts["vae"] = load_vae(spec.vae, vae_config)

    text_encoders = [parts["text_encoder"]] + ([parts["text_encoder_2"]] if architecture.is_sdxl else [])
    tokenizers = [parts["tokenizer"]] + ([parts["tokenizer_2"]] if architecture.is_sdxl else [])
    for module in [parts["unet"], *text_encoders]:
        _freeze(module, device, dtype)
    vae = parts["vae"]
    keep_vae_fp32 = spec.no_half_vae or (
        architecture.is_sdxl and dtype == torch.float16 and bool(vae.config.get("force_upcast", True))
    )
    _freeze(vae, device, torch.float32 if keep_vae_fp32 else dtype)

    return LoadedModel(
        family=architecture.family,
        unet=parts["unet"],
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=tokenizers,
        noise_scheduler=make_noise_scheduler(spec.v_parameterization, spec.zero_terminal_snr),
        v_parameterization=spec.v_parameterization,
        model_name=source.name,
        architecture=architecture,
        adapter=make_adapter(architecture.family, parts["unet"], vae, text_encoders, tokenizers, spec.v_parameterization),
        vae_name=Path(spec.vae).name if spec.vae else None,
        warnings=tuple(warnings),
    )


def make_adapter(
    family: str, unet: Any, vae: Any, text_encoders: list[Any], tokenizers: list[Any], v_parameterization: bool
) -> FamilyAdapter:
    """The family adapter over already-loaded parts."""
    if family == "sdxl":
        return StableDiffusionXLAdapter(text_encoders, tokenizers, dict(unet.config), dict(vae.config), v_parameterization)
    return StableDiffusionAdapter(family, text_encoders[0], tokenizers[0], dict(vae.config), v_parameterization)


def _freeze(module: Any, device: "torch.device | str", dtype: "torch.dtype") -> None:
    module.requires_grad_(False)
    module.eval()
    module.to(device=device)
    # Only cast when needed: diffusers warns on every dtype cast, even a no-op one.
    if any(parameter.dtype != dtype for parameter in module.parameters()):
        module.to(dtype=dtype)


def _check_flags(spec: ModelSpec, source: ModelSource, architecture: Architecture) -> list[str]:
    """Warnings where the options and the model disagree; the weights win."""
    warnings = []
    if spec.v2 and architecture.family != "sd2":
        warnings.append(f"v2 is set but the model is {architecture.family} ({architecture.evidence}); v2 is ignored.")
    predicted = architecture.prediction_type
    if predicted == "v_prediction" and not spec.v_parameterization:
        warnings.append("The model's scheduler config says v_prediction but v_parameterization is off: "
                        "training as epsilon-prediction. Set v_parameterization = true if the model is v-pred.")
    if predicted == "epsilon" and spec.v_parameterization:
        warnings.append("v_parameterization is on but the model's scheduler config says epsilon; "
                        "check that the model really is v-pred.")
    if spec.model_config and source.kind != "single_file":
        warnings.append("model_config is only used for single-file models; ignored for this diffusers model.")
    return warnings


# ---------------------------------------------------------------- diffusers folders and repos


def _load_diffusers(spec: ModelSpec, source: ModelSource, architecture: Architecture) -> tuple[dict[str, Any], VaeConfigSource]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    local = source.kind == "diffusers_folder"
    classes: dict[str, Any] = {
        "unet": UNet2DConditionModel, "text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer,
    }
    if not spec.vae:  # a replacement VAE makes loading the model's own pointless
        classes["vae"] = AutoencoderKL
    if architecture.is_sdxl:
        classes.update(text_encoder_2=CLIPTextModelWithProjection, tokenizer_2=CLIPTokenizer)
    parts = {}
    for name, cls in classes.items():
        try:
            parts[name] = cls.from_pretrained(source.location, subfolder=name, local_files_only=local)
        except Exception as problem:
            raise TrainerError(
                f"Could not load {name} from {source.location}: {type(problem).__name__}: {problem}",
                hint="The folder is incomplete or damaged (re-download it)" if local else
                     "Check the repo id and your connection (offline, only repos already cached load).",
                option=MODEL_OPTION,
            ) from problem
    return parts, VaeConfigSource(source.location, "vae", local)


# ---------------------------------------------------------------- single files


def _single_file_config(spec: ModelSpec, architecture: Architecture, bundled: BundledConfigs) -> tuple[str, bool]:
    """The config folder (or repo id) for ``from_single_file``, and whether it is local."""
    if not spec.model_config:
        return str(bundled.prepare(bundled_kind(architecture.family, spec.v_parameterization))), True
    folder = Path(spec.model_config).expanduser()
    if folder.is_dir():
        configured = detect_diffusers(folder_json_reader(folder), str(folder))
        if configured.family != architecture.family:
            raise TrainerError(
                f"model_config {folder} describes a {configured.family} model, but {spec.pretrained_model_name_or_path} "
                f"is {architecture.family} ({architecture.evidence}).",
                hint="Use a config folder of the same family, or leave model_config empty for the bundled configs.",
                option="model_config",
            )
        tokenizers = ["tokenizer", "tokenizer_2"] if architecture.is_sdxl else ["tokenizer"]
        missing = [name for name in tokenizers if not (folder / name).is_dir()]
        if missing:
            raise TrainerError(
                f"model_config {folder} has no {' or '.join(missing)} folder.",
                hint="Use a complete diffusers folder (configs and tokenizer files; the weights are not needed).",
                option="model_config",
            )
        return str(folder), True
    if looks_like_repo_id(spec.model_config):
        return spec.model_config, False
    raise TrainerError(f"model_config not found: {spec.model_config}",
                       hint="Give a local diffusers folder, a repo id, or leave it empty.", option="model_config")


def _load_single_file(
    spec: ModelSpec, source: ModelSource, architecture: Architecture, bundled: BundledConfigs
) -> tuple[dict[str, Any], VaeConfigSource]:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if not architecture.has_vae and not spec.vae:
        raise TrainerError(
            f"{source.location} holds no VAE weights (first_stage_model.*).",
            hint="Set the vae option to a VAE file or folder for this model family.", option="vae",
        )
    config, local = _single_file_config(spec, architecture, bundled)
    vae_config = VaeConfigSource(config, "vae", local)
    overrides: dict[str, Any] = {}
    if spec.vae:
        # Load the replacement first and hand it over, so the built-in VAE is never converted.
        overrides["vae"] = load_vae(spec.vae, vae_config)
    if architecture.is_sdxl:
        pipeline_class = StableDiffusionXLPipeline
    else:
        pipeline_class = StableDiffusionPipeline
        overrides.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        pipe = pipeline_class.from_single_file(source.location, config=config, local_files_only=local, **overrides)
    except Exception as problem:
        raise TrainerError(
            f"Could not load {source.location} ({architecture.family}) with the configs in {config}: "
            f"{type(problem).__name__}: {problem}",
            hint="model_config must describe the same architecture as the checkpoint (leave it empty for the bundled "
                 "configs of the real models); a damaged file also ends here: download it again.",
            option=MODEL_OPTION,
        ) from problem
    names = ["unet", "vae", "text_encoder", "tokenizer"] + (["text_encoder_2", "tokenizer_2"] if architecture.is_sdxl else [])
    parts = {name: getattr(pipe, name) for name in names}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name in parts:
            require_complete(parts[name], f"{name} of {source.location}", MODEL_OPTION)
    return parts, vae_config
