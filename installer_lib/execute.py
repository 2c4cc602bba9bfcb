"""Carrying the plan out: run each step, say clearly what failed, print the plan and the summary."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections import deque

from installer_lib.model import PROJECT_ROOT, STATE_FILE, GpuInfo, InstallPlan, MachineFacts, ProbeReport, Step


class StepFailed(Exception):
    """A planned command exited non-zero."""

    def __init__(self, step: Step, code: int, tail: list[str]) -> None:
        super().__init__(step.title)
        self.step, self.code, self.tail = step, code, tail

    def message(self) -> str:
        """One paragraph the user can act on."""
        tail = "\n".join(f"    {line}" for line in self.tail) or "    (no output)"
        return (
            f"\nINSTALL FAILED at step '{self.step.title}' (exit code {self.code}).\n"
            f"Command: {shlex.join(self.step.argv)}\nLast lines of its output:\n{tail}\n"
            f"What to try: {self.step.hint} Rerun with --debug for full details."
        )


def run_step(step: Step) -> None:
    """Run one step, streaming its output, keeping the tail for the error message."""
    print(f"\n==> {step.title}\n    $ {shlex.join(step.argv)}", flush=True)
    tail: deque[str] = deque(maxlen=15)
    try:
        proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", cwd=PROJECT_ROOT)
    except OSError as exc:
        raise StepFailed(step, 127, [str(exc)]) from exc
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        tail.append(line.rstrip())
    if proc.wait() != 0:
        raise StepFailed(step, proc.returncode, list(tail))


def describe_plan(facts: MachineFacts, plan: InstallPlan) -> str:
    """The plan as the user reads it (also what --dry-run prints)."""
    where = ".venv" if plan.use_venv else "the running Python"
    lines = [
        f"Python:      {'.'.join(map(str, facts.python_version))} ({facts.python_path})",
        f"Install to:  {where} -> {plan.python}",
        f"  because    {plan.where_reason}",
        f"GPU:         {facts.gpu.name if facts.gpu else 'no NVIDIA GPU found (nvidia-smi)'}",
        f"torch:       {plan.torch_note}",
        f"onnxruntime: {plan.onnxruntime_note}",
        f"packages:    {plan.requirements_note}",
    ]
    if plan.browser_note:
        lines.append(f"browser:     {plan.browser_note}")
    lines += [f"WARNING: {warning}" for warning in plan.warnings]
    lines += ["Commands:"] + ([f"  $ {shlex.join(s.argv)}" for s in plan.steps] or ["  (none: already installed)"])
    return "\n".join(lines)


def summary(python: str, found: ProbeReport | None, gpu: GpuInfo | None) -> str:
    """Closing summary, from a probe of the target interpreter."""
    torch_line = found.torch.describe() if found and found.torch else "not installed"
    if gpu:
        gpu_line = f"{gpu.name}, {gpu.vram_mib} MiB VRAM" + (f" (+{gpu.count - 1} more)" if gpu.count > 1 else "")
    elif found and found.torch_gpu:
        gpu_line = f"{found.torch_gpu[0]}, {found.torch_gpu[1]} MiB VRAM"
    else:
        gpu_line = "none found (training runs on the CPU)"
    free_gib = shutil.disk_usage(PROJECT_ROOT).free / 2**30
    return "\n".join([
        "\n==== Summary ====",
        f"Python:      {found.version if found else '?'} ({found.python if found else python})",
        f"torch:       {torch_line}",
        f"GPU:         {gpu_line}",
        f"onnxruntime: {(found and found.onnxruntime) or 'not installed'}; providers: "
        f"{', '.join(found.providers if found else ()) or '-'}",
        f"Disk free:   {free_gib:.1f} GiB in {PROJECT_ROOT}",
        f"Start with:  ./jupyter.sh  (it uses this Python; recorded in {STATE_FILE.name})",
    ])


def write_state(plan: InstallPlan) -> None:
    """Record the chosen interpreter so jupyter.sh and the test runner use the same Python."""
    state = {"python": plan.python, "venv": plan.use_venv, "reason": plan.where_reason}
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    tmp.replace(STATE_FILE)


def run_tests(python: str, args: list[str]) -> int:
    """Run pytest in the target interpreter from the project root; 'no tests ran' is a failure."""
    # Paths given after --test replace the default "tests" folder, as they would for plain pytest.
    # Only path-looking words count, so a value such as `-k core` is not mistaken for a folder.
    paths = [a for a in args if not a.startswith("-") and ("/" in a or a.endswith(".py") or "::" in a)
             and (PROJECT_ROOT / a.split("::")[0]).exists()]
    argv = [python, "-m", "pytest", *([] if paths else ["tests"]), *args]
    print(f"\n==> running the tests\n    $ {shlex.join(argv)}", flush=True)
    code = subprocess.call(argv, cwd=PROJECT_ROOT)
    if code == 5:
        print("\nTESTS FAILED: pytest collected no tests (exit code 5). Check the selection passed after "
              "--test (-k / file names) and that tests/ is present.", file=sys.stderr)
        return 1
    return code
