"""The stages of "check my setup", one function each.

A stage returns a plain-language message when it worked and raises :class:`StageFailure` (message
and what to do) when it did not. Heavy libraries are imported inside the stages, so importing this
module costs nothing and the "packages" stage is the one that finds a broken installation.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.selfcheck.training import TrainingRun, run_tiny_training

INSTALL_HINT = "Run `python3 installer.py` from the project folder, then restart the notebook kernel."

# (module to import, package to install) for everything training and tagging need.
REQUIRED_PACKAGES: tuple[tuple[str, str], ...] = (
    ("torch", "torch"),
    ("numpy", "numpy"),
    ("PIL", "pillow"),
    ("safetensors", "safetensors"),
    ("huggingface_hub", "huggingface_hub"),
    ("transformers", "transformers"),
    ("diffusers", "diffusers"),
    ("accelerate", "accelerate"),
    ("peft", "peft"),
    ("lycoris", "lycoris-lora"),
    ("onnxruntime", "onnxruntime"),
    ("onnx", "onnx"),
    ("tomli_w", "tomli-w"),
)


class StageFailure(Exception):
    """A stage did not work: what went wrong, and what the user can do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass
class CheckState:
    """What the stages hand to each other, all inside the scratch ``folder``."""

    folder: Path
    steps: int
    detail: Callable[[str], None] = lambda message: None  # live text for the running stage
    model: Any = None  # core.tiny_assets.sd_models.TinyModel
    samples: Any = None  # core.tiny_assets.samples.SampleImages
    captions: dict[Path, list[str]] = field(default_factory=dict)
    run: TrainingRun | None = None
    lora_path: Path | None = None


def check_packages(state: CheckState) -> str:
    """Import every package training and tagging need; name the missing or broken ones."""
    broken = []
    versions = []
    for module, package in REQUIRED_PACKAGES:
        state.detail(f"importing {module}")
        try:
            imported = importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - a broken CUDA library raises OSError, not ImportError
            broken.append(f"{package} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
            continue
        if module in ("torch", "diffusers", "transformers", "onnxruntime"):
            versions.append(f"{package} {getattr(imported, '__version__', '?')}")
    if broken:
        raise StageFailure("Cannot import: " + "; ".join(broken) + ".", INSTALL_HINT)
    return f"all {len(REQUIRED_PACKAGES)} packages import ({', '.join(versions)})"


def check_device(state: CheckState) -> str:
    """Run a small matrix product on the device training will use and compare it with the CPU."""
    import torch

    from core.environment import probe_nvidia_smi

    left = torch.arange(64.0).reshape(8, 8) / 64
    expected = left @ left.T
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        result = (left.cuda() @ left.cuda().T).cpu()
        torch.cuda.synchronize()
        if not torch.allclose(result, expected, atol=1e-3):
            raise StageFailure(f"The GPU {name} computed a wrong result.",
                               "Restart the server; if it persists, the GPU or its driver is faulty: rent another.")
        return f"CUDA works on {name} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    gpus, _ = probe_nvidia_smi()
    if gpus:
        raise StageFailure(f"nvidia-smi lists {gpus[0].name}, but PyTorch cannot use it "
                           f"(torch {torch.__version__} is {'a CPU build' if not torch.version.cuda else 'unable to start CUDA'}).",
                           "Run `python3 installer.py --reinstall-torch`, then restart the notebook kernel.")
    if not torch.allclose(left @ left.T, expected):
        raise StageFailure("PyTorch computed a wrong result on the CPU.", INSTALL_HINT)
    return (f"CPU only: torch {torch.__version__} works, no CUDA GPU (fine for this check; "
            "real training needs an NVIDIA GPU)")


def build_model(state: CheckState) -> str:
    """Build the tiny SD1.5-style model (diffusers folder and single file) offline."""
    from core.tiny_assets.sd_models import build_sd15

    state.model = build_sd15(state.folder / "model")
    size = sum(path.stat().st_size for path in state.model.diffusers_dir.rglob("*") if path.is_file())
    return f"tiny SD1.5-style model built ({size / 1e6:.1f} MB) in {state.model.diffusers_dir.parent}"


def build_images(state: CheckState) -> str:
    """Write the sample images the tiny tagger knows."""
    from core.tiny_assets.samples import build_sample_images

    state.samples = build_sample_images(state.folder / "dataset")
    return f"{len(state.samples.images)} images written to {state.samples.folder}"


def tag_images(state: CheckState) -> str:
    """Tag the samples with the tiny WD14 tagger through the real tagging pipeline (onnxruntime)."""
    from core.tiny_assets.tagger import build_tagger
    from custom.captioners.files import ExistingPolicy
    from custom.wd14.pipeline import TaggerOptions
    from custom.wd14.pipeline import tag_images as run_tagger
    from custom.wd14.postprocess import tag_key

    tagger = build_tagger(state.folder / "tagger")
    options = TaggerOptions(directory=state.samples.folder, model_dir=tagger.model_dir,
                            existing=ExistingPolicy.OVERWRITE, max_data_loader_n_workers=0)
    report = run_tagger(options, log=lambda line: None,
                        progress=lambda done, total: state.detail(f"tagged {done}/{total}"))
    if report.broken:
        path, why = report.broken[0]
        raise StageFailure(f"The tagger could not read {path.name}: {why}.", "Reinstall pillow: " + INSTALL_HINT)
    for image, wanted in state.samples.expected_tags.items():
        got = report.tags.get(image, [])
        if tag_key(wanted) not in {tag_key(tag) for tag in got}:
            raise StageFailure(f"{image.name} should be tagged '{wanted}' but got: {', '.join(got) or 'nothing'}.",
                               "The tagger's image preparation or onnxruntime is broken: " + INSTALL_HINT)
        if not image.with_suffix(".txt").is_file():
            raise StageFailure(f"No caption file was written for {image.name}.",
                               f"Check that {image.parent} is writable.")
    state.captions = dict(report.tags)
    return f"{len(report.written)} images tagged as expected ({report.provider_line.strip() or 'onnxruntime'})"


def train_lora(state: CheckState) -> str:
    """Train a few steps in a real trainer subprocess on the tiny model and the tagged samples."""
    run = run_tiny_training(state.model.diffusers_dir, state.samples.train_dir, state.folder / "output",
                            steps=state.steps, detail=state.detail)
    state.run = run
    if run.error:
        raise StageFailure(run.error, run.hint)
    state.lora_path = run.lora_path
    loss = f", last loss {run.final_loss:.3f}" if run.final_loss is not None else ""
    return f"{run.steps} steps in {run.seconds:.1f} s{loss}; saved {run.lora_path.name}"


def check_lora(state: CheckState) -> str:
    """Open the LoRA file: Kohya key names, finite weights, and up weights moved away from zero."""
    import torch
    from safetensors import safe_open

    path = state.lora_path
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in keys}
    unet = {key.split(".")[0] for key in keys if key.startswith("lora_unet_")}
    te = {key.split(".")[0] for key in keys if key.startswith("lora_te")}
    foreign = [key for key in keys if not key.startswith(("lora_unet_", "lora_te"))]
    if not unet or foreign:
        raise StageFailure(f"{path.name} does not have Kohya LoRA keys (unet modules {len(unet)}, "
                           f"unexpected {foreign[:3]}).", "This is a bug in the trainer: please report it.")
    if not all(bool(torch.isfinite(tensor).all()) for tensor in tensors.values()):
        raise StageFailure(f"{path.name} contains NaN or infinite weights.",
                           "Training is numerically broken here: " + INSTALL_HINT)
    ups = [tensor for key, tensor in tensors.items() if key.endswith("lora_up.weight")]
    if not any(float(up.abs().max()) > 0 for up in ups):
        raise StageFailure(f"{path.name} was saved but training did not change it.",
                           "This is a bug in the trainer: please report it.")
    rank = metadata.get("ss_network_dim", "?")
    return f"{len(unet)} UNet and {len(te)} text-encoder modules, rank {rank}, weights finite and trained"


# Run in this order; keys match ``report.STAGES``.
STAGE_FUNCTIONS: dict[str, Callable[[CheckState], str]] = {
    "packages": check_packages,
    "device": check_device,
    "model": build_model,
    "images": build_images,
    "tagging": tag_images,
    "training": train_lora,
    "lora": check_lora,
}

# What to do when a stage fails with an error nobody expected.
STAGE_HINTS = {
    "packages": INSTALL_HINT,
    "device": "Run `python3 installer.py --reinstall-torch`, then restart the notebook kernel.",
    "model": "diffusers or transformers is broken or too new: " + INSTALL_HINT,
    "images": "Check that the cache folder is writable and has free space (LORA_CACHE_DIR moves it).",
    "tagging": "onnxruntime is broken: " + INSTALL_HINT,
    "training": "Read the trainer log in the self-check folder and report it.",
    "lora": "This is a bug in the trainer: please report it with the self-check folder attached.",
}
