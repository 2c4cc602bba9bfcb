#!/usr/bin/env python3
"""Install LoRA Easy Training into the right Python, with the torch build that fits this machine.

Run ``python3 installer.py --help`` for the options. This file is only the command line; the work is
done by the modules in ``installer_lib/`` next to it (planning, probing, executing). Standard library
only: it runs before anything else is installed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Found next to this file whatever the working directory, and even under `python -I` / `-P`, which
# leave the script's folder off sys.path.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from installer_lib.execute import StepFailed, describe_plan, run_step, run_tests, summary, write_state  # noqa: E402
from installer_lib.model import (  # noqa: E402
    GPU_REQUIREMENTS, TORCH_CPU_INDEX_URL, TORCH_HELP_URL, TORCH_PIN, Options, venv_python,
)
from installer_lib.plan import choose_target, plan_install, version_error  # noqa: E402
from installer_lib.probe import ProbeFailed, gather_facts, probe_target  # noqa: E402

EPILOG = f"""\
torch:
  An installed torch is kept (see --reinstall-torch). Without one, {TORCH_PIN} is installed from
  PyPI; no other host is contacted unless you give --torch-index-url.
  - With an NVIDIA GPU (nvidia-smi lists one): PyPI's CUDA build (on Linux), onnxruntime-gpu,
    and {GPU_REQUIREMENTS} (bitsandbytes, for the 8-bit optimizers).
  - Without one: onnxruntime, and no bitsandbytes. On Linux PyPI's torch is still the multi-GB
    CUDA build (it runs on the CPU too); for the small CPU-only build run
      python3 installer.py --torch-index-url {TORCH_CPU_INDEX_URL}
  If your NVIDIA driver needs another CUDA version, give its index instead, e.g.
  --torch-index-url https://download.pytorch.org/whl/cu126 (or set TORCH_INDEX_URL).
  See {TORCH_HELP_URL}.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line interface."""
    parser = argparse.ArgumentParser(
        description="Install LoRA Easy Training into the right Python with the torch build for this\n"
                    "machine. Safe to run again: finished work is skipped.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--venv", action="store_const", const=True, dest="venv",
                       help="use the project's .venv (created if missing) and register a Jupyter kernel")
    where.add_argument("--no-venv", action="store_const", const=False, dest="venv",
                       help="never use a .venv: install into the running Python")
    add("--dev", action="store_true", help="also install requirements-dev.txt (tests) and, when missing, Debian's "
        "chromium with apt-get (the real-browser test; CHROMIUM_PATH names another browser)")
    add("--reinstall-torch", action="store_true", help="replace a CPU or broken torch with the CUDA build "
        "(with --torch-index-url: also switch a CUDA build to another CUDA version)")
    add("--torch-index-url", default=os.environ.get("TORCH_INDEX_URL") or None, metavar="URL",
        help=f"package index for torch only (default: $TORCH_INDEX_URL, else PyPI); {TORCH_CPU_INDEX_URL} "
             "gets the small CPU build on Linux without an NVIDIA GPU")
    add("--full", action="store_true", help="run pip even when every requirement is already installed")
    add("--dry-run", action="store_true", help="print the plan, install nothing")
    add("--check", action="store_true", help="exit 0 if the environment is ready, else 1; prints nothing")
    add("--debug", action="store_true", help="show tracebacks")
    add("--test", nargs=argparse.REMAINDER, metavar="PYTEST_ARGS",
        help="after installing, run pytest on tests/; must come last, what follows goes to pytest")
    return parser.parse_args(argv)


def check(options: Options) -> int:
    """0 when torch, onnxruntime and every requirement are installed in the target Python (and, with --dev,
    Chromium is found), else 1."""
    if version_error(tuple(sys.version_info[:3]), sys.executable):  # type: ignore[arg-type]
        return 1
    try:
        facts, found = gather_facts(options, import_modules=False)
    except ProbeFailed:
        return 1
    if found is None or (choose_target(facts, options).use_venv and not venv_python().exists()):
        return 1  # found may describe the Python a new .venv would share, not the .venv itself
    if options.dev and not facts.chromium:
        return 1  # the browser test's Chromium
    return 0 if found.ready else 1


def install(args: argparse.Namespace, options: Options) -> int:
    """Plan, print, execute, summarise; returns the exit code."""
    early = version_error(tuple(sys.version_info[:3]), sys.executable)  # type: ignore[arg-type]
    if early:  # before any probing, which needs a supported Python
        print(f"ERROR: {early}", file=sys.stderr)
        return 2
    facts, found = gather_facts(options)
    plan = plan_install(facts, options)
    if plan.error:
        print(f"ERROR: {plan.error}", file=sys.stderr)
        return 2
    print(describe_plan(facts, plan), flush=True)
    if args.dry_run:
        if args.test is not None:
            print("Then the tests (pytest) run with the installed Python.")
        return 0
    try:
        for step in plan.steps:
            run_step(step)
    except StepFailed as failure:
        if args.debug:
            raise
        print(failure.message(), file=sys.stderr)
        return 1
    write_state(plan)
    if plan.steps:  # something changed: look again for the summary
        found = probe_target(plan.python, [], True)
    print(summary(plan.python, found, facts.gpu))
    for warning in plan.warnings:
        print(f"WARNING: {warning}")
    if args.test is not None:
        return run_tests(plan.python, args.test)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    options = Options(venv=args.venv, dev=args.dev, reinstall_torch=args.reinstall_torch,
                      torch_index_url=args.torch_index_url, full=args.full)
    try:
        return check(options) if args.check else install(args, options)
    except ProbeFailed as exc:
        if args.debug:
            raise
        print(f"ERROR: {exc}. The installer stops rather than guess what is installed there. Check that "
              "this Python starts (run it by hand), or pick another one with --venv / another python3.",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - turn surprises into a readable message
        if args.debug:
            raise
        print(f"\nINSTALLER ERROR: {type(exc).__name__}: {exc}. Rerun with --debug for the traceback, and "
              "include it when you report the problem.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
