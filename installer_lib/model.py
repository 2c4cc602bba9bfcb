"""Paths, pins and the dataclasses the installer's parts hand to each other.

Nothing here touches the machine, so tests can build every value by hand.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Derived from this file, not the working directory: the installer runs from anywhere.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = PROJECT_ROOT / ".venv"
STATE_FILE = PROJECT_ROOT / ".installer_state.json"
REQUIREMENTS = "requirements.txt"
GPU_REQUIREMENTS = "requirements-gpu.txt"  # NVIDIA machines only (bitsandbytes)
DEV_REQUIREMENTS = "requirements-dev.txt"
TORCH_PIN = "torch==2.13.0"
SUPPORTED_PYTHON = ((3, 10), (3, 12))
KERNEL_NAME = "lora-easy-training"
KERNEL_DISPLAY_NAME = "Python 3 (LoRA Easy Training)"
TORCH_HELP_URL = "https://pytorch.org/get-started/locally/"
# Only ever suggested to the user, never used by default: the default source is PyPI.
TORCH_CPU_INDEX_URL = "https://download.pytorch.org/whl/cpu"


def venv_python(venv: Path = VENV_DIR) -> Path:
    """Path of the interpreter inside a venv on this platform."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirement_files(dev: bool, gpu: bool) -> list[str]:
    """The requirement files to install, in order; both the planner and the "already satisfied" check use it."""
    # bitsandbytes is useless without an NVIDIA GPU, and importing it there makes diffusers print errors.
    return [REQUIREMENTS] + ([GPU_REQUIREMENTS] if gpu else []) + ([DEV_REQUIREMENTS] if dev else [])


@dataclass(frozen=True)
class TorchInfo:
    """The torch installed in the target interpreter, as seen by importing it there."""

    version: str
    cuda: str | None = None  # torch.version.cuda; None on CPU builds
    hip: str | None = None  # torch.version.hip; set on ROCm builds
    error: str | None = None  # why ``import torch`` failed, if it did

    @property
    def gpu_build(self) -> bool:
        """True for CUDA or ROCm builds."""
        return bool(self.cuda or self.hip)

    def describe(self) -> str:
        """Short human label such as ``2.13.0+cu128 (CUDA 12.8)``."""
        if self.error:
            return f"{self.version} (fails to import: {self.error})"
        kind = f"CUDA {self.cuda}" if self.cuda else f"ROCm {self.hip}" if self.hip else "CPU build"
        return f"{self.version} ({kind})"


@dataclass(frozen=True)
class GpuInfo:
    """The first NVIDIA GPU that ``nvidia-smi`` lists."""

    name: str
    vram_mib: int | None = None
    count: int = 1


@dataclass(frozen=True)
class MachineFacts:
    """Everything the planner needs to know, gathered once; tests build these by hand."""

    python_version: tuple[int, int, int]
    python_path: str
    in_env: bool = False  # running inside a venv or conda env
    in_project_venv: bool = False
    externally_managed: bool = False  # PEP 668 marker in the stdlib dir
    writable: bool = True  # can this user write the running Python's site-packages?
    venv_exists: bool = False
    host_has_torch: bool = False  # the running (not target) Python has torch installed
    torch: TorchInfo | None = None  # in the target interpreter
    gpu: GpuInfo | None = None
    onnxruntime: str | None = None  # installed flavour, e.g. "onnxruntime-gpu 1.22.0"
    unmet_requirements: tuple[str, ...] | None = None  # None: unknown (target not there yet)
    kernel_python: str | None = None  # interpreter of the registered lora-easy-training kernel
    platform: str = sys.platform
    # For --dev (the real-browser test): the Chromium found, $CHROMIUM_PATH as given, and how apt can run.
    chromium: str | None = None
    chromium_setting: str = ""
    apt_get: bool = False
    is_root: bool = False
    sudo: bool = False


@dataclass(frozen=True)
class Options:
    """What the user asked for on the command line."""

    venv: bool | None = None  # True: --venv, False: --no-venv, None: decide
    dev: bool = False
    reinstall_torch: bool = False
    torch_index_url: str | None = None
    full: bool = False  # run pip even when the requirements are already satisfied


@dataclass(frozen=True)
class Target:
    """Where to install: the project's .venv or the running Python, and why (or why not at all)."""

    use_venv: bool
    reason: str = ""
    error: str | None = None  # set when the options contradict the machine


@dataclass(frozen=True)
class Step:
    """One command the executor runs, with what to tell the user if it fails."""

    title: str
    argv: list[str]
    hint: str


@dataclass
class InstallPlan:
    """The outcome of planning: where to install, what to do about torch, and the commands."""

    error: str | None = None
    use_venv: bool = False
    where_reason: str = ""
    python: str = ""
    torch_action: str = "keep"  # keep | install | reinstall
    torch_note: str = ""
    onnxruntime_note: str = ""
    requirements_note: str = ""
    browser_note: str = ""  # --dev only: the Chromium of the browser test
    warnings: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)


@dataclass(frozen=True)
class ProbeReport:
    """What the target interpreter reported about itself (see ``target_probe``)."""

    python: str
    version: str
    torch_dist: str | None = None  # torch's installed version from its metadata, without importing it
    torch: TorchInfo | None = None  # from importing torch; only when the probe was asked to import
    torch_gpu: tuple[str, int] | None = None  # (name, MiB) of the first device torch sees
    onnxruntime: str | None = None  # installed flavour and version, e.g. "onnxruntime 1.31.1"
    providers: tuple[str, ...] = ()
    unmet: tuple[str, ...] = ()  # requirement lines the target does not satisfy
    exact: bool = False  # False: packaging was missing, so only names were checked, not versions
    kernel_python: str | None = None

    @classmethod
    def from_json(cls, data: dict) -> ProbeReport:
        """Build from the JSON object the probe script printed."""
        gpu = data.get("torch_gpu")
        return cls(
            python=data["python"], version=data["version"], torch_dist=data.get("torch_dist"),
            torch=TorchInfo(**data["torch"]) if data.get("torch") else None,
            torch_gpu=(str(gpu[0]), int(gpu[1])) if gpu else None,
            onnxruntime=data.get("onnxruntime"), providers=tuple(data.get("providers") or ()),
            unmet=tuple(data.get("unmet") or ()), exact=bool(data.get("exact")),
            kernel_python=data.get("kernel_python"),
        )

    @property
    def ready(self) -> bool:
        """torch, onnxruntime and every checked requirement are installed (versions verified)."""
        return bool(self.torch_dist and self.onnxruntime and self.exact and not self.unmet)
