"""Environment detection: platforms from their own variables, nvidia-smi parsing, warnings, paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.environment import (
    EnvWarning,
    GpuInfo,
    Platform,
    build_warnings,
    detect_environment,
    detect_platform,
    parse_nvidia_smi_cuda,
    parse_nvidia_smi_gpus,
    probe_nvidia_smi,
)
from core.managers import SetupManager
from core.paths import ProjectPaths

NO_DOCKER = Path("/nonexistent/.dockerenv")

SMI_QUERY_TWO_GPUS = "NVIDIA GeForce RTX 4090, 24564, 8.9, 550.54.15\nTesla T4, 15360, 7.5, 550.54.15\n"
SMI_BANNER = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
+-----------------------------------------------------------------------------------------+
"""


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"VAST_CONTAINERLABEL": "C.123456"}, Platform.VASTAI),
        ({"VAST_TCP_PORT_22": "40022"}, Platform.VASTAI),
        ({"RUNPOD_POD_ID": "abc123"}, Platform.RUNPOD),
        ({"COLAB_RELEASE_TAG": "release-colab_20240101"}, Platform.COLAB),
        ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, Platform.KAGGLE),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, Platform.KUBERNETES),
        ({"container": "podman"}, Platform.DOCKER),
        ({}, Platform.LOCAL),
        # A VastAI box is also a Docker container; the specific platform wins.
        ({"VAST_CONTAINERLABEL": "C.1", "KUBERNETES_SERVICE_HOST": "x", "container": "docker"}, Platform.VASTAI),
        # An empty variable is not a signal.
        ({"RUNPOD_POD_ID": ""}, Platform.LOCAL),
    ],
)
def test_platform_is_judged_by_its_own_variables(environ: dict[str, str], expected: Platform) -> None:
    assert detect_platform(environ, dockerenv=NO_DOCKER) is expected


def test_workspace_folder_alone_does_not_mean_vastai(tmp_path: Path) -> None:
    # The seed project said "VastAI" whenever /workspace existed; a laptop with such a folder is local.
    (tmp_path / "workspace").mkdir()
    report = detect_environment(
        environ={"HOME": str(tmp_path)}, work_dir=tmp_path / "workspace", gpu_probe=lambda: ((), None), dockerenv=NO_DOCKER
    )
    assert report.platform is Platform.LOCAL


def test_docker_marker_file_means_docker(tmp_path: Path) -> None:
    marker = tmp_path / ".dockerenv"
    marker.touch()
    assert detect_platform({}, dockerenv=marker) is Platform.DOCKER


def test_parse_nvidia_smi_query_output() -> None:
    gpus = parse_nvidia_smi_gpus(SMI_QUERY_TWO_GPUS)
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090", "Tesla T4"]
    assert gpus[0].vram_gb == pytest.approx(23.99, abs=0.01)
    assert gpus[0].compute_capability == (8, 9) and gpus[0].bf16_supported
    assert gpus[1].compute_capability == (7, 5) and not gpus[1].bf16_supported
    assert gpus[1].driver_version == "550.54.15"
    assert parse_nvidia_smi_cuda(SMI_BANNER) == "12.4"
    assert parse_nvidia_smi_cuda("no banner here") is None


def test_probe_uses_nvidia_smi_answers() -> None:
    answers = {
        "--query-gpu=name,memory.total,compute_cap,driver_version": SMI_QUERY_TWO_GPUS,
        None: SMI_BANNER,
    }

    def fake_run(command: list[str]) -> str | None:
        return answers[command[1] if len(command) > 1 else None]

    gpus, cuda = probe_nvidia_smi(run=fake_run)
    assert len(gpus) == 2 and cuda == "12.4"
    assert probe_nvidia_smi(run=lambda command: None) == ((), None)


def test_faked_vastai_gpu_box_report(tmp_path: Path) -> None:
    gpu = GpuInfo(name="NVIDIA RTX A4000", vram_gb=16.0, compute_capability=(8, 6), driver_version="535.1")
    report = detect_environment(
        environ={"VAST_CONTAINERLABEL": "C.42"},
        work_dir=tmp_path,
        gpu_probe=lambda: ((gpu,), "12.2"),
        dockerenv=NO_DOCKER,
    )
    assert report.platform is Platform.VASTAI
    assert report.gpu_name == "NVIDIA RTX A4000"
    assert report.vram_gb == 16.0
    assert report.compute_capability == (8, 6)
    assert report.bf16_supported is True
    assert report.cuda_version == "12.2"
    assert report.driver_version == "535.1"
    assert report.disk_free_gb > 0
    assert report.ram_total_gb and report.ram_total_gb > 0
    text = "\n".join(report.summary_lines())
    assert "VastAI" in text and "NVIDIA RTX A4000" in text and "bf16 yes" in text


def test_cpu_only_machine_warns_with_reason(tmp_path: Path) -> None:
    report = detect_environment(environ={}, work_dir=tmp_path, gpu_probe=lambda: ((), None), dockerenv=NO_DOCKER)
    codes = {w.code for w in report.warnings}
    assert "cpu_only" in codes
    assert report.gpu is None and report.bf16_supported is False
    assert "CPU only" in "\n".join(report.summary_lines())


def _codes(**kwargs) -> set[str]:
    defaults = dict(gpus=(), disk_free_gb=100.0, ram_total_gb=64.0, torch_version="2.5.1+cu124", torch_cuda="12.4")
    defaults.update(kwargs)
    return {w.code for w in build_warnings(**defaults)}


def test_warnings_for_low_vram_disk_ram_and_old_gpus() -> None:
    t4 = GpuInfo("Tesla T4", 15.0, (7, 5), "535")
    gtx = GpuInfo("GTX 1060", 6.0 - 0.1, (6, 1), "535")
    a3060 = GpuInfo("RTX 3060", 12.0, (8, 6), "535")
    rtx8 = GpuInfo("RTX 3070", 8.0, (8, 6), "535")
    assert _codes(gpus=(a3060,)) == set()
    assert _codes(gpus=(rtx8,)) == {"low_vram_sdxl"}
    assert _codes(gpus=(gtx,)) == {"low_vram", "no_bf16"}
    assert _codes(gpus=(t4,)) == {"no_bf16"}
    assert _codes(gpus=(a3060,), disk_free_gb=5.0) == {"low_disk"}
    assert _codes(gpus=(a3060,), ram_total_gb=8.0) == {"low_ram"}
    assert _codes(gpus=(a3060,), torch_cuda=None) == {"cpu_torch_with_gpu"}
    assert _codes(gpus=(a3060,), torch_version=None, torch_cuda=None) == {"no_torch"}


def _levels(**kwargs) -> dict[str, str]:
    defaults = dict(gpus=(), disk_free_gb=100.0, ram_total_gb=64.0, torch_version="2.5.1+cu124", torch_cuda="12.4")
    defaults.update(kwargs)
    return {w.code: w.level for w in build_warnings(**defaults)}


def test_warning_levels_are_decided_where_the_warning_is_made() -> None:
    a3060 = GpuInfo("RTX 3060", 12.0, (8, 6), "535")
    gtx = GpuInfo("GTX 1060", 5.9, (6, 1), "535")
    # Nothing can train: errors.
    assert _levels(gpus=(a3060,), torch_version=None, torch_cuda=None) == {"no_torch": "error"}
    assert _levels(gpus=(a3060,), torch_cuda=None) == {"cpu_torch_with_gpu": "error"}
    assert _levels(gpus=(), torch_version=None, torch_cuda=None) == {"no_torch": "error", "cpu_only": "warning"}
    # A CPU build on a machine without a GPU is what that machine can run: only the GPU warning.
    assert _levels(gpus=(), torch_cuda=None) == {"cpu_only": "warning"}
    # Trains, with limits or advice.
    assert _levels(gpus=(gtx,), disk_free_gb=5.0, ram_total_gb=8.0) == {
        "low_vram": "warning", "no_bf16": "info", "low_disk": "warning", "low_ram": "warning"}


def test_report_lines_say_each_warnings_level(tmp_path: Path, monkeypatch) -> None:
    import core.environment as environment

    monkeypatch.setattr(environment, "_torch_versions", lambda: (None, None))  # a Python without torch
    gpu = GpuInfo("RTX 3060", 12.0, (8, 6), "535")
    report = detect_environment(environ={}, work_dir=tmp_path, gpu_probe=lambda: ((gpu,), "12.4"), dockerenv=NO_DOCKER)
    assert [(w.code, w.level) for w in report.warnings if w.code == "no_torch"] == [("no_torch", "error")]
    assert any(line.startswith("Error: PyTorch is not installed") for line in report.summary_lines())
    with pytest.raises(ValueError, match="level 'fatal'"):
        EnvWarning("x", "y", "fatal")


def test_missing_work_dir_reports_disk_of_nearest_existing_parent(tmp_path: Path) -> None:
    report = detect_environment(
        environ={}, work_dir=tmp_path / "not" / "yet", gpu_probe=lambda: ((), None), dockerenv=NO_DOCKER
    )
    assert report.disk_free_gb > 0
    assert report.work_dir == (tmp_path / "not" / "yet").resolve()


def test_project_paths_defaults_and_overrides(tmp_path: Path) -> None:
    default = ProjectPaths.resolve(environ={}, work_dir=tmp_path)
    assert default.datasets == tmp_path.resolve() / "datasets"
    assert default.models == tmp_path.resolve() / "models"
    assert all(Path(value).is_absolute() for value in vars(default).values())

    moved = ProjectPaths.resolve(
        environ={"LORA_WORK_DIR": str(tmp_path / "ws"), "LORA_MODELS_DIR": "/srv/models", "LORA_DATASETS_DIR": "data"}
    )
    assert moved.work_dir == (tmp_path / "ws").resolve()
    assert moved.models == Path("/srv/models")
    assert moved.datasets == (tmp_path / "ws" / "data").resolve()
    assert moved.outputs == (tmp_path / "ws" / "outputs").resolve()


def test_setup_manager_creates_folders_under_work_dir(tmp_path: Path) -> None:
    manager = SetupManager(paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path), environ={})
    paths = manager.prepare_folders()
    for name in ("datasets", "models", "vae", "outputs", "logs", "training_configs", "cache"):
        assert (tmp_path / name).is_dir(), name
    assert paths.work_dir == tmp_path.resolve()
    assert "Disk:" in manager.report_text()
