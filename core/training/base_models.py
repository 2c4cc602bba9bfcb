"""Base models found on disk, with their detected family, read cheaply.

A ``.safetensors`` file's header (a length and a JSON table of names and shapes) is read by hand:
no tensor data, no torch import, milliseconds per file. Diffusers folders are read from their
small JSON configs. ``.ckpt`` files would need torch to read, so they are listed as "not checked".
Whether a model predicts velocity is not in its weights; it is known from the model preset it was
downloaded as, a ``v_pred`` marker key, modelspec metadata or a diffusers scheduler config.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from trainer.errors import TrainerError

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
FAMILY_LABELS = {"sd1": "SD1.5", "sd2": "SD2.x", "sdxl": "SDXL"}
_MAX_HEADER = 100 * 1024 * 1024  # a bigger "header" means the file is not safetensors
_V_PRED_KEYS = ("v_pred",)  # marker tensors some v-pred releases carry (ComfyUI reads them too)


@dataclass(frozen=True)
class BaseModel:
    """One candidate base model. ``error`` says why it cannot be one (LoRA file, VAE, broken...)."""

    path: Path
    family: str | None  # "sd1", "sd2", "sdxl", or None when not checked
    v_prediction: bool | None = None
    model_preset: str | None = None  # key in core/model_presets.toml when it was downloaded as one
    error: str | None = None

    @property
    def usable(self) -> bool:
        """False for files that are certainly not a base model."""
        return self.error is None

    @property
    def label(self) -> str:
        """Dropdown text: name, then what it is."""
        if self.error:
            return f"{self.path.name} (not a base model)"
        kind = FAMILY_LABELS.get(self.family or "", "not checked")
        if self.v_prediction:
            kind += ", v-pred"
        return f"{self.path.name} ({kind})"


def _detect() -> ModuleType:
    """The trainer's architecture detection (standard library only: it does not load torch)."""
    from trainer.models import detect

    return detect


def read_safetensors_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor names with shapes, and the ``__metadata__`` strings, from the file's header only."""
    with Path(path).open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ValueError("file too short")
        (size,) = struct.unpack("<Q", raw)
        if size <= 0 or size > _MAX_HEADER:
            raise ValueError("not a safetensors header")
        header = json.loads(handle.read(size))
    metadata = header.pop("__metadata__", None) or {}
    shapes = {key: tuple(entry.get("shape", ())) for key, entry in header.items() if isinstance(entry, dict)}
    return shapes, {str(k): str(v) for k, v in metadata.items()}


def _preset_for(path: Path, model_presets: dict | None) -> str | None:
    for key, preset in (model_presets or {}).items():
        source_name = str(getattr(preset, "source", "")).rsplit("/", 1)[-1].lower()
        if getattr(preset, "kind", "checkpoint") != "checkpoint":
            continue
        if path.name.lower() == source_name or path.stem.lower() == key.lower():
            return key
    return None


def describe_model(path: Path, model_presets: dict | None = None) -> BaseModel:
    """What ``path`` (a model file or a diffusers folder) is, without loading it."""
    path = Path(path)
    preset_key = _preset_for(path, model_presets)
    preset_vpred = getattr((model_presets or {}).get(preset_key), "v_prediction", None) if preset_key else None
    if path.is_dir():
        try:
            detect = _detect()
            arch = detect.detect_diffusers(detect.folder_json_reader(path), str(path))
        except TrainerError as problem:
            return BaseModel(path, None, None, preset_key, problem.message)
        vpred = preset_vpred if preset_vpred is not None else (arch.prediction_type == "v_prediction" or None)
        return BaseModel(path, arch.family, vpred, preset_key)
    if path.suffix.lower() != ".safetensors":
        return BaseModel(path, None, preset_vpred, preset_key)
    try:
        shapes, metadata = read_safetensors_header(path)
        arch = _detect().detect_architecture(shapes, str(path))
    except TrainerError as problem:
        return BaseModel(path, None, None, preset_key, problem.message)
    except (OSError, ValueError) as problem:
        return BaseModel(path, None, None, preset_key, f"unreadable safetensors file ({problem})")
    vpred = preset_vpred
    if vpred is None and (any(key in shapes for key in _V_PRED_KEYS)
                          or metadata.get("modelspec.prediction_type", "").lower() in ("v", "v_prediction")):
        vpred = True
    return BaseModel(path, arch.family, vpred, preset_key)


def find_base_models(models_dir: Path, model_presets: dict | None = None, depth: int = 2) -> list[BaseModel]:
    """Model files and diffusers folders under ``models_dir`` (``depth`` levels), sorted by name."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    found: list[BaseModel] = []

    def walk(folder: Path, level: int) -> None:
        for child in sorted(folder.iterdir()):
            if child.name.startswith("."):
                continue
            if child.is_dir():
                if (child / "model_index.json").is_file():
                    found.append(describe_model(child, model_presets))
                elif level < depth:
                    walk(child, level + 1)
            elif child.suffix.lower() in MODEL_SUFFIXES and not child.name.endswith(".part"):
                found.append(describe_model(child, model_presets))

    walk(root, 1)
    return found
