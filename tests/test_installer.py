"""installer.py and installer_lib/: the pure planner for every branch, the probe, and the command line."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import installer
from installer_lib import probe
from installer_lib.model import (
    GPU_REQUIREMENTS, TORCH_CPU_INDEX_URL, TORCH_PIN, VENV_DIR, GpuInfo, InstallPlan, MachineFacts, Options,
    TorchInfo, venv_python,
)
from installer_lib.plan import plan_install

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTALLER = PROJECT_ROOT / "installer.py"
GPU = GpuInfo(name="NVIDIA GeForce RTX 4090", vram_mib=24564)
CUDA_TORCH = TorchInfo(version="2.5.1+cu124", cuda="12.4")
CPU_TORCH = TorchInfo(version="2.13.0+cpu")


def facts(**changes: object) -> MachineFacts:
    """A plain writable Python 3.11 with nothing installed (but Chromium), changed where a test says so."""
    base = MachineFacts(python_version=(3, 11, 7), python_path="/usr/bin/python3", chromium="/usr/bin/chromium")
    return replace(base, **changes)  # type: ignore[arg-type]


def argvs(plan: InstallPlan) -> list[str]:
    """Every planned command as one string, for easy matching."""
    return [" ".join(step.argv) for step in plan.steps]


def torch_steps(plan: InstallPlan) -> list[str]:
    """Planned commands that install or remove torch itself (not the requirements step's pin)."""
    return [a for a in argvs(plan) if " -r " not in a and (a.endswith(TORCH_PIN) or " uninstall " in a)]


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            script: Path = INSTALLER, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installer the way a user does, from any folder."""
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------- torch and onnxruntime decisions

def test_cuda_torch_is_kept_and_pinned_for_the_requirements() -> None:
    plan = plan_install(facts(torch=CUDA_TORCH, gpu=GPU, onnxruntime="onnxruntime-gpu 1.22.0"), Options())
    assert plan.error is None and plan.torch_action == "keep"
    assert torch_steps(plan) == []
    assert "keep torch 2.5.1+cu124 (CUDA 12.4)" in plan.torch_note
    # The requirements step names the kept build so pip cannot swap it for another torch.
    assert argvs(plan)[-1].endswith("torch==2.5.1+cu124")
    assert plan.warnings == []


def test_cuda_torch_is_kept_even_with_reinstall_flag_alone() -> None:
    plan = plan_install(facts(torch=CUDA_TORCH, gpu=GPU), Options(reinstall_torch=True))
    assert plan.torch_action == "keep" and torch_steps(plan) == []
    assert "ignored" in plan.torch_note


def test_cuda_torch_switches_cuda_version_with_reinstall_and_index() -> None:
    url = "https://download.pytorch.org/whl/cu118"
    plan = plan_install(facts(torch=CUDA_TORCH, gpu=GPU), Options(reinstall_torch=True, torch_index_url=url))
    assert plan.torch_action == "reinstall"
    steps = torch_steps(plan)
    assert "pip uninstall --disable-pip-version-check -y torch" in steps[0]
    assert f"--index-url {url} torch==2.13.0" in steps[1]


def test_no_torch_with_gpu_installs_cuda_torch_and_onnxruntime_gpu() -> None:
    plan = plan_install(facts(gpu=GPU), Options())
    assert plan.torch_action == "install"
    assert "CUDA build" in plan.torch_note
    commands = argvs(plan)
    assert commands[0] == "/usr/bin/python3 -m pip install --disable-pip-version-check torch==2.13.0"
    assert commands[1].endswith("pip install --disable-pip-version-check onnxruntime-gpu")
    assert "-r" in commands[2].split() and commands[2].endswith("torch==2.13.0")


def test_torch_index_url_is_used_for_torch_only() -> None:
    url = "https://download.pytorch.org/whl/cu126"
    plan = plan_install(facts(gpu=GPU), Options(torch_index_url=url))
    commands = argvs(plan)
    assert f"--index-url {url} torch==2.13.0" in commands[0]
    assert all("--index-url" not in c for c in commands[1:])


def test_no_torch_no_gpu_installs_pinned_torch_and_onnxruntime() -> None:
    plan = plan_install(facts(platform="linux"), Options())
    commands = argvs(plan)
    assert commands[0].endswith("pip install --disable-pip-version-check torch==2.13.0")
    assert commands[1].endswith("pip install --disable-pip-version-check onnxruntime")
    assert plan.onnxruntime_note == "install onnxruntime"
    # The default reaches PyPI only; the small CPU build's index is named as advice, never used.
    assert all("--index-url" not in c for c in commands)
    assert "multi-GB CUDA build" in plan.torch_note and f"--torch-index-url {TORCH_CPU_INDEX_URL}" in plan.torch_note
    assert TORCH_CPU_INDEX_URL in plan.steps[0].hint  # also in the message if the big download fails


@pytest.mark.parametrize("platform,index", [("darwin", None), ("win32", None), ("linux", TORCH_CPU_INDEX_URL)])
def test_cpu_index_advice_only_where_pypi_serves_cuda(platform: str, index: str | None) -> None:
    plan = plan_install(facts(platform=platform), Options(torch_index_url=index))
    assert "runs on the CPU" in plan.torch_note and "multi-GB" not in plan.torch_note
    expected = f"--index-url {index} torch==2.13.0" if index else "--disable-pip-version-check torch==2.13.0"
    assert argvs(plan)[0].endswith(expected)


def test_cpu_torch_with_gpu_warns_loudly_and_does_not_reinstall() -> None:
    plan = plan_install(facts(torch=CPU_TORCH, gpu=GPU, onnxruntime="onnxruntime 1.31.1"), Options())
    assert plan.torch_action == "keep" and torch_steps(plan) == []
    assert len(plan.warnings) == 1
    warning = plan.warnings[0]
    assert "CPU build" in warning and GPU.name in warning
    assert "python3 installer.py --reinstall-torch" in warning


def test_cpu_torch_with_gpu_and_reinstall_flag_switches_to_cuda() -> None:
    plan = plan_install(facts(torch=CPU_TORCH, gpu=GPU), Options(reinstall_torch=True))
    assert plan.torch_action == "reinstall"
    steps = torch_steps(plan)
    assert len(steps) == 2 and " uninstall " in steps[0] and steps[1].endswith("torch==2.13.0")
    assert plan.warnings == []


def test_cpu_torch_without_gpu_is_kept_quietly() -> None:
    plan = plan_install(facts(torch=CPU_TORCH), Options(reinstall_torch=True))
    assert plan.torch_action == "keep" and torch_steps(plan) == [] and plan.warnings == []


def test_broken_torch_warns_and_reinstall_fixes() -> None:
    broken = TorchInfo(version="2.13.0", error="OSError: libcudart.so.12: cannot open shared object file")
    kept = plan_install(facts(torch=broken), Options())
    assert torch_steps(kept) == [] and "fails to import" in kept.warnings[0]
    assert "--reinstall-torch" in kept.warnings[0]
    assert plan_install(facts(torch=broken), Options(reinstall_torch=True)).torch_action == "reinstall"


@pytest.mark.parametrize("gpu", [None, GPU])
def test_existing_onnxruntime_gpu_is_kept(gpu: GpuInfo | None) -> None:
    plan = plan_install(facts(torch=CUDA_TORCH, gpu=gpu, onnxruntime="onnxruntime-gpu 1.22.0"), Options())
    assert plan.onnxruntime_note.startswith("keep onnxruntime-gpu 1.22.0")
    assert not any("onnxruntime" in c for c in argvs(plan))


def test_existing_cpu_onnxruntime_on_gpu_machine_is_kept_with_a_hint() -> None:
    plan = plan_install(facts(torch=CUDA_TORCH, gpu=GPU, onnxruntime="onnxruntime 1.31.1"), Options())
    assert not any("onnxruntime" in c for c in argvs(plan))
    assert "pip install onnxruntime-gpu" in plan.onnxruntime_note


def test_windows_gpu_without_index_url_explains_cpu_only_wheels() -> None:
    plan = plan_install(facts(gpu=GPU, platform="win32"), Options())
    assert any("--torch-index-url" in w for w in plan.warnings)


# ---------------------------------------------------------------- bitsandbytes: GPU machines only

def test_requirements_gpu_file_pins_bitsandbytes_only() -> None:
    lines = probe.read_requirements([GPU_REQUIREMENTS])
    assert lines == ["bitsandbytes>=0.45,<1"]
    assert not any("bitsandbytes" in line for line in probe.read_requirements(["requirements.txt"]))


@pytest.mark.parametrize("case", [facts(gpu=GPU), facts(torch=CUDA_TORCH, gpu=GPU, onnxruntime="onnxruntime-gpu 1.22.0",
                                                       unmet_requirements=("bitsandbytes>=0.45,<1",))])
def test_gpu_plan_installs_requirements_gpu(case: MachineFacts) -> None:
    plan = plan_install(case, Options(dev=True))
    command = argvs(plan)[-1]
    assert f"-r {PROJECT_ROOT / GPU_REQUIREMENTS}" in command and "requirements-dev.txt" in command
    assert GPU_REQUIREMENTS in plan.requirements_note


@pytest.mark.parametrize("case", [facts(), facts(torch=CPU_TORCH, onnxruntime="onnxruntime 1.31.1",
                                                unmet_requirements=("diffusers>=0.35,<0.43",))])
def test_cpu_plan_never_installs_requirements_gpu(case: MachineFacts) -> None:
    for options in (Options(), Options(dev=True, full=True, reinstall_torch=True)):
        plan = plan_install(case, options)
        assert plan.steps and not any(GPU_REQUIREMENTS in c or "bitsandbytes" in c for c in argvs(plan))
        assert GPU_REQUIREMENTS not in plan.requirements_note


def test_satisfied_gpu_machine_names_requirements_gpu() -> None:
    ready = facts(torch=CUDA_TORCH, gpu=GPU, onnxruntime="onnxruntime-gpu 1.22.0", unmet_requirements=())
    plan = plan_install(ready, Options())
    assert plan.steps == [] and GPU_REQUIREMENTS in plan.requirements_note


@pytest.mark.parametrize("gpu", [None, GPU])
def test_already_satisfied_check_reads_requirements_gpu_only_with_a_gpu(
        gpu: GpuInfo | None, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []

    def fake_probe(python: str, requirements: list[str], import_modules: bool) -> probe.ProbeReport:
        asked.append(requirements)
        return probe.ProbeReport(python=python, version="3.11.7", exact=True)

    monkeypatch.setattr(probe, "detect_gpu", lambda: gpu)
    monkeypatch.setattr(probe, "probe_target", fake_probe)
    found_facts, _ = probe.gather_facts(Options(venv=False))
    assert found_facts.gpu == gpu
    assert ("bitsandbytes>=0.45,<1" in asked[0]) is (gpu is not None)


def test_check_fails_on_a_gpu_machine_without_bitsandbytes(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    assert installer.check(Options(dev=True)) == 0  # no GPU here: bitsandbytes is not needed
    monkeypatch.setattr(probe, "detect_gpu", lambda: GPU)
    assert installer.check(Options(dev=True)) == 1  # jupyter.sh then runs the installer


# ---------------------------------------------------------------- where to install

def test_externally_managed_python_gets_a_project_venv_and_a_kernel() -> None:
    plan = plan_install(facts(externally_managed=True), Options())
    assert plan.use_venv and "externally managed" in plan.where_reason
    assert plan.python == str(venv_python())
    commands = argvs(plan)
    assert commands[0] == f"/usr/bin/python3 -m venv {VENV_DIR}"
    assert all(c.startswith(plan.python) for c in commands[1:])
    assert "ipykernel install --user --name lora-easy-training" in commands[-1]


def test_externally_managed_with_no_venv_is_an_error_that_says_what_to_do() -> None:
    plan = plan_install(facts(externally_managed=True), Options(venv=False))
    assert plan.error and "--no-venv" in plan.error and "venv or conda" in plan.error
    assert plan.steps == []


def test_externally_managed_marker_is_ignored_inside_an_env() -> None:
    plan = plan_install(facts(externally_managed=True, in_env=True), Options())
    assert not plan.use_venv and "virtual or conda" in plan.where_reason
    assert not any("ipykernel" in c for c in argvs(plan))


def test_venv_flag_beats_an_active_env() -> None:
    plan = plan_install(facts(in_env=True), Options(venv=True))
    assert plan.use_venv and "--venv given" in plan.where_reason


def test_existing_venv_is_reused_without_recreating_it() -> None:
    plan = plan_install(facts(venv_exists=True), Options())
    assert plan.use_venv and "reusing" in plan.where_reason
    assert not any(" -m venv " in c for c in argvs(plan))


def test_running_inside_project_venv_uses_it() -> None:
    plan = plan_install(facts(in_env=True, in_project_venv=True), Options())
    assert plan.use_venv and not any(" -m venv " in c for c in argvs(plan))


def test_unwritable_python_gets_a_venv_and_no_venv_flag_is_honoured() -> None:
    assert plan_install(facts(writable=False), Options()).use_venv
    assert not plan_install(facts(writable=False), Options(venv=False)).use_venv


def test_new_venv_shares_an_image_torch_instead_of_downloading_it() -> None:
    plan = plan_install(facts(externally_managed=True, host_has_torch=True, torch=CUDA_TORCH, gpu=GPU,
                              onnxruntime="onnxruntime-gpu 1.22.0"), Options())
    assert argvs(plan)[0] == f"/usr/bin/python3 -m venv --system-site-packages {VENV_DIR}"
    assert plan.torch_action == "keep" and torch_steps(plan) == []


def test_registered_kernel_is_not_registered_again() -> None:
    python = str(venv_python())
    plan = plan_install(facts(venv_exists=True, kernel_python=python), Options())
    assert not any("ipykernel" in c for c in argvs(plan))


@pytest.mark.parametrize("version", [(3, 9, 18), (3, 13, 1)])
def test_unsupported_python_is_refused_with_advice(version: tuple[int, int, int]) -> None:
    plan = plan_install(facts(python_version=version), Options())
    assert plan.steps == []
    assert plan.error is not None
    assert f"Python {'.'.join(map(str, version))}" in plan.error
    assert "3.10 to 3.12" in plan.error and "pyenv install 3.11" in plan.error and "conda" in plan.error


@pytest.mark.parametrize("version", [(3, 10, 0), (3, 12, 9)])
def test_supported_edges_are_accepted(version: tuple[int, int, int]) -> None:
    assert plan_install(facts(python_version=version), Options()).error is None


# ---------------------------------------------------------------- requirements and idempotence

def test_satisfied_requirements_skip_pip_unless_full() -> None:
    ready = facts(torch=CPU_TORCH, onnxruntime="onnxruntime 1.31.1", unmet_requirements=())
    assert plan_install(ready, Options(dev=True)).steps == []
    full = argvs(plan_install(ready, Options(dev=True, full=True)))
    assert len(full) == 1
    assert f"-r {PROJECT_ROOT / 'requirements.txt'} -r {PROJECT_ROOT / 'requirements-dev.txt'}" in full[0]


def test_unmet_requirements_run_pip_without_dev_file_unless_asked() -> None:
    plan = plan_install(facts(torch=CPU_TORCH, onnxruntime="onnxruntime 1.31.1",
                              unmet_requirements=("diffusers>=0.35,<0.43",)), Options())
    (command,) = argvs(plan)
    assert "requirements.txt" in command and "requirements-dev.txt" not in command


@pytest.mark.parametrize("case", [
    facts(), facts(gpu=GPU), facts(torch=CPU_TORCH, gpu=GPU), facts(externally_managed=True, gpu=GPU),
    facts(torch=CUDA_TORCH, gpu=GPU, onnxruntime="onnxruntime 1.31.1"),
])
def test_no_plan_uses_apt_symlinks_or_onnxruntime_pins(case: MachineFacts) -> None:
    for options in (Options(), Options(reinstall_torch=True, dev=True)):
        for step in plan_install(case, options).steps:
            text = " ".join(step.argv)
            assert "apt" not in step.argv[0] and step.argv[0] not in ("ln", "sudo")
            assert "onnxruntime==" not in text and "onnxruntime-gpu==" not in text
            assert not ("pip uninstall" in text and "onnxruntime" in text)


# ---------------------------------------------------------------- probing the target interpreter

def fake_python(tmp_path: Path, body: str) -> str:
    """A stand-in interpreter: a shell script that runs ``body``."""
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_probe_reports_this_interpreter() -> None:
    found = probe.probe_target(sys.executable, ["pytest>=8", "surely-not-installed-xyz>=1"], False)
    assert found.python and found.exact is True
    assert found.unmet == ("surely-not-installed-xyz>=1",)


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as a fake interpreter")
def test_probe_survives_an_import_that_kills_python(tmp_path: Path) -> None:
    # Mimics a torch whose CUDA libraries segfault on import: only the importing probe dies.
    python = fake_python(tmp_path, f'case "$3" in *\'"import": true\'*) kill -SEGV $$;; esac\n'
                                   f'exec "{sys.executable}" "$@"')
    found = probe.probe_target(python, [], True)
    if not found.torch_dist:
        pytest.skip("torch is not installed here")
    assert found.torch is not None and "crashed" in str(found.torch.error)
    facts = MachineFacts((3, 11, 7), python, torch=found.torch, gpu=GPU)
    assert torch_steps(plan_install(facts, Options())) == []  # never replaced on a guess


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as a fake interpreter")
def test_unreadable_target_stops_instead_of_guessing(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "echo 'boom' >&2; exit 3")
    with pytest.raises(probe.ProbeFailed, match="exited with 3.*boom"):
        probe.probe_target(python, [], True)


# ---------------------------------------------------------------- the command line

def test_dry_run_from_another_folder_prints_the_plan(tmp_path: Path) -> None:
    done = run_cli("--dry-run", "--dev", "--full", "--test", "-x", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for label in ("Python:", "Install to:", "because", "torch:", "onnxruntime:", "packages:", "Commands:"):
        assert label in out
    # The project root comes from installer.py's own path, not from the working folder.
    assert str(PROJECT_ROOT / "requirements.txt") in out and str(PROJECT_ROOT / "requirements-dev.txt") in out
    assert str(tmp_path) not in out
    assert "Then the tests (pytest) run" in out
    assert "==== Summary ====" not in out  # nothing was executed


def test_dry_run_with_a_fake_gpu_warns_about_the_cpu_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.version.cuda:
        pytest.skip("this machine has a CUDA torch; the warning is for CPU builds")
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA Test GPU, 12288'\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    done = run_cli("--dry-run", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "GPU:         NVIDIA Test GPU" in done.stdout
    assert "is a CPU build" in done.stdout and "--reinstall-torch" in done.stdout
    assert "-y torch" not in done.stdout
    if importlib.util.find_spec("bitsandbytes") is not None:
        assert "Commands:\n  (none: already installed)" in done.stdout
    else:  # the GPU brings requirements-gpu.txt, and only that is missing here
        commands = done.stdout.split("Commands:\n", 1)[1].splitlines()
        assert len(commands) == 1 and str(PROJECT_ROOT / GPU_REQUIREMENTS) in commands[0]
        assert commands[0].endswith(f"torch=={torch.__version__}")  # the CPU build is pinned, not replaced


def test_help_explains_the_small_cpu_build_and_the_gpu_extras() -> None:
    done = run_cli("--help", cwd=Path("/"))
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert f"--torch-index-url {TORCH_CPU_INDEX_URL}" in text and "multi-GB CUDA build" in text
    assert "small CPU build" in text and GPU_REQUIREMENTS in text and "bitsandbytes" in text


def other_pythons(*versions: str) -> list[Path]:
    """Unsupported interpreters that pyenv happens to have here (none on most machines)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    return [python for v in versions for python in sorted(root.glob(f"{v}.*/bin/python"))[:1]]


@pytest.mark.parametrize("version", ["3.7", "3.9", "3.13"])
def test_real_unsupported_python_gets_the_message(version: str, tmp_path: Path) -> None:
    found = other_pythons(version)
    if not found:
        pytest.skip(f"no Python {version} on this machine")
    done = subprocess.run([str(found[0]), str(INSTALLER), "--dry-run"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"Python {version}." in done.stderr and "pyenv install 3.11" in done.stderr
    check = subprocess.run([str(found[0]), str(INSTALLER), "--check"], capture_output=True, timeout=120)
    assert check.returncode == 1 and check.stdout == b""


def test_check_passes_here_and_prints_nothing() -> None:
    done = run_cli("--check", "--dev")
    assert done.returncode == 0, "environment should be installed: " + done.stderr
    assert done.stdout == "" and done.stderr == ""


def make_project(tmp_path: Path, requirements: str) -> Path:
    """A throwaway project folder holding a copy of the installer, to exercise it in isolation."""
    shutil.copy(INSTALLER, tmp_path / "installer.py")
    shutil.copytree(PROJECT_ROOT / "installer_lib", tmp_path / "installer_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "requirements.txt").write_text(requirements)
    (tmp_path / "requirements-dev.txt").write_text("")
    (tmp_path / GPU_REQUIREMENTS).write_text("")
    return tmp_path / "installer.py"


def test_check_fails_quietly_when_a_requirement_is_missing(tmp_path: Path) -> None:
    script = make_project(tmp_path, "pytest>=8\nsurely-not-an-installed-package-xyz>=1\n")
    done = run_cli("--check", script=script, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""


def test_check_fails_when_a_version_does_not_fit(tmp_path: Path) -> None:
    script = make_project(tmp_path, "pytest<1\n")
    assert run_cli("--check", script=script).returncode == 1


def test_test_flag_turns_no_tests_ran_into_a_failure(tmp_path: Path) -> None:
    script = make_project(tmp_path, "pytest>=8\n")
    (tmp_path / "tests").mkdir()
    done = run_cli("--no-venv", "--test", "-p", "no:cacheprovider", script=script, cwd=Path("/"))
    assert "==== Summary ====" in done.stdout  # the (empty) install ran first
    assert done.returncode == 1
    assert "collected no tests (exit code 5)" in done.stderr
    assert (tmp_path / ".installer_state.json").exists()


def test_real_install_is_fast_and_idempotent() -> None:
    """The real `installer.py --dev`, twice; only when it has nothing to install, so no test downloads."""
    if run_cli("--check", "--dev").returncode != 0:
        pytest.skip("environment not complete: the real installer would download packages")
    timings = []
    for _ in range(2):
        started = time.monotonic()
        done = run_cli("--dev")
        timings.append(time.monotonic() - started)
        assert done.returncode == 0, done.stderr
        assert "==== Summary ====" in done.stdout and "Disk free:" in done.stdout
    assert "Commands:\n  (none: already installed)" in done.stdout
    assert timings[1] < 30, timings
