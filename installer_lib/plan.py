"""The pure planning core: machine facts and options in, an ``InstallPlan`` out.

No subprocesses, no file access: every branch is tested by handing in hand-made ``MachineFacts``.
"""
from __future__ import annotations

from dataclasses import replace

from installer_lib.browser import plan_browser
from installer_lib.model import (
    KERNEL_DISPLAY_NAME, KERNEL_NAME, PROJECT_ROOT, SUPPORTED_PYTHON, TORCH_CPU_INDEX_URL, TORCH_HELP_URL,
    TORCH_PIN, VENV_DIR, InstallPlan, MachineFacts, Options, Step, Target, requirement_files, venv_python,
)

NETWORK_HINT = "Check the internet connection and the free disk space, then rerun."


def version_error(version: tuple[int, int, int], python_path: str) -> str | None:
    """A message telling the user what to do when this Python version is unsupported, else None."""
    low, high = SUPPORTED_PYTHON
    if low <= version[:2] <= high:
        return None
    shown = ".".join(map(str, version))
    return (
        f"Python {shown} ({python_path}) is not supported: LoRA Easy Training needs Python "
        f"{low[0]}.{low[1]} to {high[0]}.{high[1]} (torch and the training libraries lag behind new "
        "Python releases). Install Python 3.11 with your platform's tools (e.g. `apt install python3.11 "
        "python3.11-venv`, `brew install python@3.11`), pyenv (`pyenv install 3.11`) or conda "
        "(`conda create -n lora python=3.11`), then rerun this installer with that Python, e.g. "
        "`python3.11 installer.py`."
    )


def choose_target(facts: MachineFacts, options: Options) -> Target:
    """Decide whether to use the project .venv or the running Python."""
    if options.venv is True:
        return Target(True, "--venv given: using the project's .venv")
    if options.venv is False:
        if facts.externally_managed and not facts.in_env:
            return Target(False, error=(
                f"--no-venv was given, but {facts.python_path} is externally managed (PEP 668), so pip "
                "must not install into it. Either drop --no-venv (the installer then makes a project "
                ".venv), or activate a venv or conda environment and rerun the installer from it."
            ))
        return Target(False, "--no-venv given: installing into the running Python")
    if facts.in_project_venv:
        return Target(True, "running inside the project's .venv")
    if facts.in_env:
        return Target(False, "running inside a virtual or conda environment: installing into it")
    if facts.venv_exists:
        return Target(True, "the project's .venv exists (made by an earlier run): reusing it")
    if facts.externally_managed:
        return Target(True, "this Python is externally managed (PEP 668 EXTERNALLY-MANAGED marker), so pip "
                            "may not install into it: using a project .venv instead")
    if not facts.writable:
        return Target(True, "this Python's site-packages is not writable by you: using a project .venv instead")
    return Target(False, "a normal writable Python: installing into it")


def pip(python: str, *args: str) -> list[str]:
    """argv for running pip in the given interpreter."""
    return [python, "-m", "pip", "install", "--disable-pip-version-check", *args]


def _pypi_torch_is_cuda(facts: MachineFacts, options: Options) -> bool:
    """True when the default torch download is PyPI's Linux wheel: a multi-GB CUDA build, GPU or not."""
    return options.torch_index_url is None and facts.platform.startswith("linux")


def _plan_torch(facts: MachineFacts, options: Options, plan: InstallPlan) -> str:
    """Fill the torch part of the plan; returns the torch requirement the later pip calls must keep."""
    torch, gpu, index = facts.torch, facts.gpu, options.torch_index_url
    index_args = ["--index-url", index] if index else []
    source = f" from {index}" if index else " from PyPI"
    switch = f"python3 installer.py --reinstall-torch{' --torch-index-url ' + index if index else ''}"
    fetch_hint = (
        "Check the internet connection and the free disk space (a CUDA torch needs about 5 GB). If your "
        "NVIDIA driver is too old for PyPI's build, pass --torch-index-url with the CUDA version your "
        f"driver supports (see {TORCH_HELP_URL})."
    )
    if gpu is None and _pypi_torch_is_cuda(facts, options):
        fetch_hint += f" Without a GPU, --torch-index-url {TORCH_CPU_INDEX_URL} gets the much smaller CPU build."
    install = Step(f"install {TORCH_PIN}{source}", pip(plan.python, *index_args, TORCH_PIN), fetch_hint)
    if torch is None:
        plan.torch_action = "install"
        if gpu:
            kind = "CUDA build, for the GPU"
        elif _pypi_torch_is_cuda(facts, options):
            # The pin is PyPI's only Linux wheel, which bundles CUDA; say so before gigabytes arrive.
            kind = (f"no NVIDIA GPU found, so it runs on the CPU; PyPI's Linux wheel is the multi-GB CUDA "
                    f"build: --torch-index-url {TORCH_CPU_INDEX_URL} gets the small CPU build instead")
        else:
            kind = "no NVIDIA GPU found, so it runs on the CPU"
        plan.torch_note = f"no torch installed: install {TORCH_PIN}{source} ({kind})"
        if gpu and facts.platform == "win32" and not index:
            plan.warnings.append(
                "PyPI's torch for Windows is a CPU build: pass --torch-index-url "
                f"https://download.pytorch.org/whl/cu128 (see {TORCH_HELP_URL}) to get the CUDA build."
            )
        plan.steps.append(install)
        return TORCH_PIN
    wants_switch = bool(torch.error) or (gpu is not None and not torch.gpu_build) or (torch.gpu_build and index)
    if options.reinstall_torch and wants_switch:
        plan.torch_action = "reinstall"
        plan.torch_note = f"replace torch {torch.describe()} with {TORCH_PIN}{source} (--reinstall-torch)"
        uninstall = [plan.python, "-m", "pip", "uninstall", "--disable-pip-version-check", "-y", "torch"]
        plan.steps.append(Step("uninstall the current torch", uninstall, "Close running notebooks and retry."))
        plan.steps.append(install)
        return TORCH_PIN
    plan.torch_note = f"keep torch {torch.describe()}"
    if options.reinstall_torch:
        plan.torch_note += " (--reinstall-torch ignored: this build already fits; add --torch-index-url to switch CUDA version)"
    if torch.error:
        plan.warnings.append(
            f"torch {torch.version} is installed but fails to import ({torch.error}). Reinstall it with: {switch}"
        )
    elif gpu is not None and not torch.gpu_build:
        plan.warnings.append(
            f"!!! torch {torch.version} is a CPU build, but this machine has an NVIDIA GPU ({gpu.name}): "
            f"training would run on the CPU, extremely slowly. It was NOT replaced automatically. To switch "
            f"to the CUDA build run: {switch}"
        )
    return f"torch=={torch.version}"


def _plan_onnxruntime(facts: MachineFacts, plan: InstallPlan) -> None:
    """Keep any installed onnxruntime flavour; otherwise install the one that fits the machine."""
    if facts.onnxruntime:
        plan.onnxruntime_note = f"keep {facts.onnxruntime}"
        if facts.gpu and facts.onnxruntime.split()[0] == "onnxruntime":
            plan.onnxruntime_note += (
                " (CPU flavour: the tagger runs on the CPU; for the GPU run `pip uninstall onnxruntime` "
                "then `pip install onnxruntime-gpu` yourself)"
            )
        return
    flavour = "onnxruntime-gpu" if facts.gpu else "onnxruntime"
    plan.onnxruntime_note = f"install {flavour}"
    plan.steps.append(Step(f"install {flavour}", pip(plan.python, flavour), NETWORK_HINT))


def _plan_requirements(facts: MachineFacts, options: Options, plan: InstallPlan, torch_pin: str) -> None:
    """pip install the requirement files, unless the probe proved every line already satisfied."""
    files = requirement_files(options.dev, gpu=facts.gpu is not None)
    if facts.unmet_requirements == () and plan.torch_action == "keep" and not options.full:
        plan.requirements_note = (
            f"{' and '.join(files)}: every package already installed at a fitting version; pip not needed "
            "(--full runs it anyway)"
        )
        return
    plan.requirements_note = f"pip install -r {' -r '.join(files)}"
    req_args = [a for f in files for a in ("-r", str(PROJECT_ROOT / f))]
    # Naming the torch we keep stops pip from swapping a CUDA build for another torch as a dependency.
    plan.steps.append(Step(
        "install the requirements", pip(plan.python, *req_args, torch_pin),
        "Check the internet connection and the free disk space. If pip reports a version conflict, "
        "the lines above name the packages; rerun with --full after fixing them.",
    ))


def _plan_new_venv(facts: MachineFacts, plan: InstallPlan) -> MachineFacts:
    """Add the step that creates the .venv; returns the facts as they will hold inside it."""
    # Reuse an image's preinstalled (often CUDA) torch rather than downloading gigabytes again.
    share = ["--system-site-packages"] if facts.host_has_torch else []
    why = " with --system-site-packages, to reuse the torch already installed there" if share else ""
    plan.where_reason += f"; create it from {facts.python_path}{why}"
    plan.steps.append(Step(
        "create the project .venv", [facts.python_path, "-m", "venv", *share, str(VENV_DIR)],
        "On Debian/Ubuntu the venv module is a separate package: install python3-venv (or python3.X-venv) "
        "with your system's package manager, or use a conda/pyenv Python, then rerun the installer.",
    ))
    # A fresh venv sees only what it shares with the running Python; pip runs at least once in it.
    if share:
        return replace(facts, unmet_requirements=None)
    return replace(facts, torch=None, onnxruntime=None, unmet_requirements=None)


def plan_install(facts: MachineFacts, options: Options) -> InstallPlan:
    """Turn the machine facts and the options into an InstallPlan (``error`` set when it cannot go on)."""
    plan = InstallPlan()
    plan.error = version_error(facts.python_version, facts.python_path)
    if plan.error:
        return plan
    target = choose_target(facts, options)
    plan.use_venv, plan.where_reason, plan.error = target.use_venv, target.reason, target.error
    if plan.error:
        return plan
    plan.python = str(venv_python()) if plan.use_venv else facts.python_path
    if plan.use_venv and not facts.venv_exists and not facts.in_project_venv:
        facts = _plan_new_venv(facts, plan)
    torch_pin = _plan_torch(facts, options, plan)
    _plan_onnxruntime(facts, plan)
    _plan_requirements(facts, options, plan, torch_pin)
    if plan.use_venv and facts.kernel_python != plan.python:
        plan.steps.append(Step(
            "register the Jupyter kernel",
            [plan.python, "-m", "ipykernel", "install", "--user", "--name", KERNEL_NAME,
             "--display-name", KERNEL_DISPLAY_NAME],
            "The kernel only matters for a Jupyter started outside this project; ./jupyter.sh works without it.",
        ))
    plan_browser(facts, options, plan)  # may set plan.error: the caller then runs nothing
    return plan
