"""What machine are we on? GPU, memory, disk and hosting platform, as one dataclass.

Detection is cheap on purpose: it asks ``nvidia-smi`` rather than importing torch (which costs
seconds and would slow the notebook's first cell), reads torch's version from package metadata,
and judges the platform only by each platform's own environment variables. The mere existence
of a ``/workspace`` folder says nothing: plenty of machines have one.
"""
from __future__ import annotations

import os
import platform as _platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib import metadata
from pathlib import Path


class Platform(str, Enum):
    """Where the notebooks run; the value is what the setup panel shows."""

    VASTAI = "VastAI"
    RUNPOD = "RunPod"
    COLAB = "Google Colab"
    KAGGLE = "Kaggle"
    KUBERNETES = "Kubernetes"
    DOCKER = "Docker container"
    LOCAL = "local machine"


# Each platform by the variables it sets in every container it starts. Order matters: VastAI and
# RunPod run Docker too, so the generic container checks come last.
_PLATFORM_VARIABLES: tuple[tuple[Platform, tuple[str, ...]], ...] = (
    (Platform.VASTAI, ("VAST_CONTAINERLABEL", "VAST_TCP_PORT_22", "VAST_CONTAINER_LABEL")),
    (Platform.RUNPOD, ("RUNPOD_POD_ID", "RUNPOD_POD_HOSTNAME")),
    (Platform.COLAB, ("COLAB_RELEASE_TAG", "COLAB_GPU", "COLAB_BACKEND_VERSION")),
    (Platform.KAGGLE, ("KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE")),
    (Platform.KUBERNETES, ("KUBERNETES_SERVICE_HOST",)),
)

# Thresholds behind the warnings, with the reason each exists.
SDXL_MIN_VRAM_GB = 12.0  # SDXL LoRA at 1024 px with gradient checkpointing and cached TE outputs
SD15_MIN_VRAM_GB = 6.0  # SD1.5 LoRA at 512 px, batch 1, with gradient checkpointing
MIN_FREE_DISK_GB = 20.0  # one SDXL checkpoint (~7 GB) + latents cache + a few saved LoRAs
MIN_RAM_GB = 12.0  # loading an SDXL single-file checkpoint peaks around 10 GB of system RAM


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as ``nvidia-smi`` reports it."""

    name: str
    vram_gb: float
    compute_capability: tuple[int, int] | None
    driver_version: str

    @property
    def bf16_supported(self) -> bool:
        """bf16 needs Ampere (compute capability 8.0) or newer."""
        return self.compute_capability is not None and self.compute_capability >= (8, 0)


# How bad a warning is; the setup panel colours by it. "error": nothing will train as it is.
ERROR, WARNING, INFO = "error", "warning", "info"
LEVELS = (ERROR, WARNING, INFO)


@dataclass(frozen=True)
class EnvWarning:
    """A plain-language warning with a stable code to test on and a level (``LEVELS``) to colour by."""

    code: str
    message: str
    level: str = WARNING

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"EnvWarning level {self.level!r} is not one of {LEVELS}")


@dataclass(frozen=True)
class EnvironmentReport:
    """Everything the setup panel shows about the machine."""

    platform: Platform
    python_version: str
    torch_version: str | None
    torch_cuda: str | None
    gpus: tuple[GpuInfo, ...]
    cuda_version: str | None
    ram_total_gb: float | None
    ram_available_gb: float | None
    disk_free_gb: float
    work_dir: Path
    warnings: tuple[EnvWarning, ...] = field(default_factory=tuple)

    @property
    def gpu(self) -> GpuInfo | None:
        """The first GPU, the one training uses unless told otherwise."""
        return self.gpus[0] if self.gpus else None

    @property
    def gpu_name(self) -> str | None:
        return self.gpu.name if self.gpu else None

    @property
    def vram_gb(self) -> float | None:
        return self.gpu.vram_gb if self.gpu else None

    @property
    def compute_capability(self) -> tuple[int, int] | None:
        return self.gpu.compute_capability if self.gpu else None

    @property
    def bf16_supported(self) -> bool:
        return bool(self.gpu and self.gpu.bf16_supported)

    @property
    def driver_version(self) -> str | None:
        return self.gpu.driver_version if self.gpu else None

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the setup panel and the command line."""
        gpu = self.gpu
        lines = [
            f"Platform: {self.platform.value}",
            f"Python: {self.python_version}",
            f"torch: {self.torch_version or 'not installed'}"
            + (f" (CUDA {self.torch_cuda})" if self.torch_cuda else " (CPU build)" if self.torch_version else ""),
        ]
        if gpu:
            cc = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "?"
            lines.append(
                f"GPU: {gpu.name}, {gpu.vram_gb:.1f} GB VRAM, compute {cc}, "
                f"bf16 {'yes' if gpu.bf16_supported else 'no'}"
            )
            lines.append(f"Driver {gpu.driver_version}, CUDA {self.cuda_version or '?'}")
            if len(self.gpus) > 1:
                lines.append(f"{len(self.gpus)} GPUs in all")
        else:
            lines.append("GPU: none found (CPU only)")
        if self.ram_total_gb is not None:
            lines.append(f"RAM: {self.ram_available_gb:.1f} GB free of {self.ram_total_gb:.1f} GB")
        lines.append(f"Disk: {self.disk_free_gb:.1f} GB free under {self.work_dir}")
        lines.extend(f"{w.level.capitalize()}: {w.message}" for w in self.warnings)
        return lines


def detect_platform(environ: Mapping[str, str], dockerenv: Path = Path("/.dockerenv")) -> Platform:
    """Name the hosting platform from its environment variables (Docker from its marker file)."""
    for platform_, variables in _PLATFORM_VARIABLES:
        if any(environ.get(name) for name in variables):
            return platform_
    if dockerenv.exists() or environ.get("container"):
        return Platform.DOCKER
    return Platform.LOCAL


def parse_nvidia_smi_gpus(csv_text: str) -> tuple[GpuInfo, ...]:
    """Parse ``nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv,noheader,nounits``."""
    gpus = []
    for line in csv_text.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 4 or not parts[0]:
            continue
        name, memory_mib, compute, driver = parts[:4]
        try:
            vram_gb = float(memory_mib) / 1024.0
        except ValueError:
            vram_gb = 0.0
        capability = None
        if "." in compute:
            major, minor = compute.split(".", 1)
            if major.isdigit() and minor.isdigit():
                capability = (int(major), int(minor))
        gpus.append(GpuInfo(name=name, vram_gb=round(vram_gb, 2), compute_capability=capability, driver_version=driver))
    return tuple(gpus)


def parse_nvidia_smi_cuda(banner: str) -> str | None:
    """Pull the driver's CUDA version out of plain ``nvidia-smi`` output ("CUDA Version: 12.4")."""
    marker = "CUDA Version:"
    if marker not in banner:
        return None
    tail = banner.split(marker, 1)[1].strip()
    return tail.split()[0] if tail else None


def _run_quietly(command: list[str]) -> str | None:
    """Run a probe command; None when it is missing, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def probe_nvidia_smi(run: Callable[[list[str]], str | None] = _run_quietly) -> tuple[tuple[GpuInfo, ...], str | None]:
    """Ask nvidia-smi for the GPUs and the driver's CUDA version; empty when there is none."""
    query = run(
        ["nvidia-smi", "--query-gpu=name,memory.total,compute_cap,driver_version", "--format=csv,noheader,nounits"]
    )
    if not query:
        return (), None
    banner = run(["nvidia-smi"]) or ""
    return parse_nvidia_smi_gpus(query), parse_nvidia_smi_cuda(banner)


def _torch_versions() -> tuple[str | None, str | None]:
    """torch's version from metadata; its CUDA version only if torch is already imported."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None, None
    torch = sys.modules.get("torch")
    cuda = getattr(getattr(torch, "version", None), "cuda", None) if torch else None
    if cuda is None and "+cu" in version:
        # Wheels from the PyTorch index carry the CUDA tag in the local version, e.g. 2.5.1+cu124.
        tag = version.split("+cu", 1)[1]
        cuda = f"{tag[:-1]}.{tag[-1]}" if tag.isdigit() and len(tag) >= 3 else None
    return version, cuda


def _memory_gb() -> tuple[float | None, float | None]:
    """Total and available RAM in GB, from /proc/meminfo (Linux) or psutil elsewhere."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        values: dict[str, float] = {}
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            number = rest.strip().split(" ")[0]
            if number.isdigit():
                values[key] = int(number) / 1024 / 1024  # kB -> GB
        if "MemTotal" in values:
            return round(values["MemTotal"], 2), round(values.get("MemAvailable", values["MemTotal"]), 2)
    try:
        import psutil
    except ImportError:
        return None, None
    memory = psutil.virtual_memory()
    return round(memory.total / 1024**3, 2), round(memory.available / 1024**3, 2)


def build_warnings(
    gpus: tuple[GpuInfo, ...],
    disk_free_gb: float,
    ram_total_gb: float | None,
    torch_version: str | None,
    torch_cuda: str | None,
) -> tuple[EnvWarning, ...]:
    """Turn the raw facts into warnings that say what happens and what to do."""
    found: list[EnvWarning] = []
    gpu = gpus[0] if gpus else None
    if torch_version is None:
        found.append(EnvWarning(
            "no_torch",
            "PyTorch is not installed in this Python, so nothing can train yet. Run `python3 installer.py`.",
            level=ERROR,
        ))
    if gpu is None:
        found.append(EnvWarning(
            "cpu_only",
            "No NVIDIA GPU found. Training a real model on the CPU would take days; the 'check my setup' "
            "run works, but rent or use a machine with an NVIDIA GPU for real training.",
            level=WARNING,
        ))
    else:
        if gpu.vram_gb < SD15_MIN_VRAM_GB:
            found.append(EnvWarning(
                "low_vram",
                f"{gpu.name} has {gpu.vram_gb:.1f} GB of VRAM; even SD1.5 LoRA training needs about "
                f"{SD15_MIN_VRAM_GB:.0f} GB. Expect out-of-memory errors.",
                level=WARNING,
            ))
        elif gpu.vram_gb < SDXL_MIN_VRAM_GB:
            found.append(EnvWarning(
                "low_vram_sdxl",
                f"{gpu.name} has {gpu.vram_gb:.1f} GB of VRAM. SD1.5 trains fine; SDXL-based models (Pony, "
                f"Illustrious, NoobAI) need about {SDXL_MIN_VRAM_GB:.0f} GB with gradient checkpointing and "
                "cached text-encoder outputs, so expect slow training or out-of-memory errors with them.",
                level=WARNING,
            ))
        if not gpu.bf16_supported:
            found.append(EnvWarning(
                "no_bf16",
                f"{gpu.name} cannot train in bf16. Use fp16 mixed precision, and with SDXL use the fp16-fix "
                "VAE: the stock SDXL VAE gives NaN (black) results in fp16.",
                level=INFO,
            ))
        if torch_version is not None and torch_cuda is None:
            found.append(EnvWarning(
                "cpu_torch_with_gpu",
                "A GPU is present but the installed torch is a CPU build, so training would ignore the GPU. "
                "Run `python3 installer.py --reinstall-torch` to install the CUDA build.",
                level=ERROR,
            ))
    if disk_free_gb < MIN_FREE_DISK_GB:
        found.append(EnvWarning(
            "low_disk",
            f"Only {disk_free_gb:.1f} GB of disk is free. An SDXL base model alone is about 7 GB; free space "
            f"or move the work folders to a bigger disk (LORA_WORK_DIR) before downloading models.",
            level=WARNING,
        ))
    if ram_total_gb is not None and ram_total_gb < MIN_RAM_GB:
        found.append(EnvWarning(
            "low_ram",
            f"The machine has {ram_total_gb:.1f} GB of RAM; loading an SDXL checkpoint needs about "
            f"{MIN_RAM_GB:.0f} GB and may be killed by the system.",
            level=WARNING,
        ))
    return tuple(found)


def detect_environment(
    environ: Mapping[str, str] | None = None,
    work_dir: Path | None = None,
    gpu_probe: Callable[[], tuple[tuple[GpuInfo, ...], str | None]] = probe_nvidia_smi,
    dockerenv: Path = Path("/.dockerenv"),
) -> EnvironmentReport:
    """Describe this machine. Every source can be replaced, which is how the tests fake a VastAI box."""
    env = os.environ if environ is None else environ
    folder = Path(work_dir or Path.cwd()).resolve()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    disk_free_gb = round(shutil.disk_usage(existing).free / 1024**3, 2)
    gpus, driver_cuda = gpu_probe()
    torch_version, torch_cuda = _torch_versions()
    ram_total, ram_available = _memory_gb()
    return EnvironmentReport(
        platform=detect_platform(env, dockerenv),
        python_version=_platform.python_version(),
        torch_version=torch_version,
        torch_cuda=torch_cuda,
        gpus=gpus,
        cuda_version=driver_cuda or torch_cuda,
        ram_total_gb=ram_total,
        ram_available_gb=ram_available,
        disk_free_gb=disk_free_gb,
        work_dir=folder,
        warnings=build_warnings(gpus, disk_free_gb, ram_total, torch_version, torch_cuda),
    )
