"""Gathering the facts: the running Python, the target interpreter's packages, and the NVIDIA GPU.

The target is probed in a subprocess (``target_probe.py``), because it may be another interpreter
(the project's .venv) and because importing a broken torch can kill the process that does it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import replace
from pathlib import Path

from installer_lib.browser import CHROMIUM_ENV, find_chromium
from installer_lib.model import (
    KERNEL_NAME, PROJECT_ROOT, VENV_DIR, GpuInfo, MachineFacts, Options, ProbeReport, TorchInfo,
    requirement_files, venv_python,
)
from installer_lib.plan import choose_target, version_error

PROBE_SCRIPT = Path(__file__).resolve().with_name("target_probe.py")
PROBE_MARKER = "@@installer-probe@@"


class ProbeFailed(Exception):
    """The target interpreter could not even report its installed packages."""


def probe(python: str, requirements: list[str], import_modules: bool) -> ProbeReport:
    """Run the probe script in the target interpreter and return its report; raises ProbeFailed."""
    arg = json.dumps({"requirements": requirements, "import": import_modules, "kernel": KERNEL_NAME})
    # Passed with -c, not as a file path: running the file would put installer_lib/ first on the
    # target's sys.path, where model.py or plan.py could shadow a module torch imports.
    code = PROBE_SCRIPT.read_text(encoding="utf-8")
    try:
        done = subprocess.run([python, "-c", code, arg], capture_output=True, text=True, timeout=300,
                              errors="replace", cwd=PROJECT_ROOT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeFailed(f"{python} could not be run: {exc}") from exc
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(PROBE_MARKER):
            return ProbeReport.from_json(json.loads(line[len(PROBE_MARKER):]))
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    raise ProbeFailed(f"{python} exited with {done.returncode} while reporting its packages: {tail}")


def probe_target(python: str, requirements: list[str], import_modules: bool) -> ProbeReport:
    """probe(), surviving a torch or onnxruntime import that kills the interpreter (e.g. broken CUDA libraries)."""
    try:
        return probe(python, requirements, import_modules)
    except ProbeFailed:
        if not import_modules:
            raise
    found = probe(python, requirements, False)
    if found.torch_dist:
        crashed = TorchInfo(version=found.torch_dist, error="importing torch or onnxruntime crashed Python")
        found = replace(found, torch=crashed)
    return found


def read_requirements(files: list[str]) -> list[str]:
    """Requirement lines of the project's requirement files, without comments and pip options."""
    lines: list[str] = []
    for name in files:
        for raw in (PROJECT_ROOT / name).read_text(encoding="utf-8").splitlines():
            line = raw.split(" #", 1)[0].strip()
            if line and not line.startswith(("#", "-")):
                lines.append(line)
    return lines


def detect_gpu() -> GpuInfo | None:
    """The first NVIDIA GPU from ``nvidia-smi``, or None when there is no tool, driver or GPU."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        done = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=60, errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [row for row in done.stdout.splitlines() if row.strip()] if done.returncode == 0 else []
    if not rows:
        return None
    name, _, memory = rows[0].rpartition(",") if "," in rows[0] else (rows[0], "", "")
    memory = memory.strip()
    return GpuInfo(name=name.strip(), vram_mib=int(memory) if memory.isdigit() else None, count=len(rows))


def host_facts() -> MachineFacts:
    """Facts about the running Python itself (no subprocesses)."""
    prefix = Path(sys.prefix).resolve()
    in_env = sys.prefix != sys.base_prefix or (prefix / "conda-meta").is_dir()
    import importlib.metadata  # here, not at the top: Python 3.7 lacks it and must still get the version message

    try:
        importlib.metadata.version("torch")
        host_torch = True
    except importlib.metadata.PackageNotFoundError:
        host_torch = False
    return MachineFacts(
        python_version=tuple(sys.version_info[:3]),  # type: ignore[arg-type]
        python_path=sys.executable,
        in_env=in_env,
        in_project_venv=prefix == VENV_DIR.resolve(),
        externally_managed=(Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists(),
        writable=os.access(sysconfig.get_path("purelib"), os.W_OK),
        venv_exists=venv_python().exists(),
        host_has_torch=host_torch,
        chromium=find_chromium(),
        chromium_setting=os.environ.get(CHROMIUM_ENV, ""),
        apt_get=shutil.which("apt-get") is not None,
        is_root=hasattr(os, "geteuid") and os.geteuid() == 0,
        sudo=shutil.which("sudo") is not None,
    )


def gather_facts(options: Options, import_modules: bool = True) -> tuple[MachineFacts, ProbeReport | None]:
    """Host facts plus a probe of the interpreter ``choose_target`` picks, and that probe's report.

    The report is None when there is nothing to probe yet (no .venv, unsupported Python, bad options).
    """
    # Also for --check: which requirement files must be satisfied depends on the GPU.
    facts = replace(host_facts(), gpu=detect_gpu())
    target = choose_target(facts, options)
    python = str(venv_python()) if target.use_venv else facts.python_path
    if target.use_venv and not Path(python).exists() and facts.host_has_torch:
        python = facts.python_path  # the new .venv will share these packages (--system-site-packages)
    if target.error or version_error(facts.python_version, facts.python_path) or not Path(python).exists():
        return facts, None
    files = requirement_files(options.dev, gpu=facts.gpu is not None)
    # An unreadable target must stop the run: guessing "no torch" could replace a working CUDA build.
    found = probe_target(python, read_requirements(files), import_modules)
    torch = found.torch or (TorchInfo(version=found.torch_dist) if found.torch_dist else None)
    unmet = found.unmet if found.exact else None  # a name-only check proves nothing
    facts = replace(facts, torch=torch, onnxruntime=found.onnxruntime, unmet_requirements=unmet,
                    kernel_python=found.kernel_python)
    return facts, found
