"""The browser the real-browser test drives (``--dev`` only): Debian's Chromium, installed with apt-get.

Playwright is told to use this system Chromium (``executable_path``); it never downloads a browser of
its own. Only ``--dev`` asks for it, because only the test suite needs a browser: a user's install never
calls apt. ``CHROMIUM_PATH`` points the test at another Chromium or Chrome binary (macOS, Fedora, a
snap), in which case nothing is installed.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from installer_lib.model import InstallPlan, MachineFacts, Options, Step

CHROMIUM_ENV = "CHROMIUM_PATH"
APT_PACKAGE = "chromium"
APT_HINT = ("Check the internet connection and the free disk space (Chromium needs about 500 MB), and that no "
            "other apt-get is running, then rerun.")


def find_chromium(environ: Mapping[str, str] | None = None) -> str | None:
    """Path of the Chromium the browser test will use: ``$CHROMIUM_PATH`` if set and executable, else ``chromium`` on PATH."""
    env = os.environ if environ is None else environ
    chosen = env.get(CHROMIUM_ENV, "")
    if chosen:
        return chosen if os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None
    return shutil.which("chromium")


def _manual_install_message(reason: str) -> str:
    """What a developer must do by hand when the installer cannot install Chromium itself."""
    return (
        f"--dev needs a Chromium browser for the real-browser test (tests/test_browser.py), and {reason}. "
        f"Install it yourself: on Debian `sudo apt-get install chromium`; elsewhere install Chromium or Google "
        f"Chrome and set {CHROMIUM_ENV}=/path/to/the/browser (on Ubuntu: `sudo snap install chromium` and "
        f"{CHROMIUM_ENV}=/snap/bin/chromium). Then rerun `python3 installer.py --dev`. Playwright's own browser "
        "download (`playwright install`) is not used."
    )


def plan_browser(facts: MachineFacts, options: Options, plan: InstallPlan) -> None:
    """With ``--dev`` and no Chromium found, add the apt-get steps (root, else sudo) or set ``plan.error``."""
    if not options.dev:
        return
    if facts.chromium:
        plan.browser_note = f"keep {facts.chromium}"
        return
    if facts.chromium_setting:
        plan.error = _manual_install_message(f"{CHROMIUM_ENV}={facts.chromium_setting} is not an executable file")
        return
    if not facts.apt_get:
        plan.error = _manual_install_message("this system has no apt-get, so the installer cannot add it")
        return
    if facts.is_root:
        prefix: list[str] = []
    elif facts.sudo:
        prefix = ["sudo"]
    else:
        plan.error = _manual_install_message("you are not root and sudo is not installed")
        return
    plan.browser_note = f"install Debian's {APT_PACKAGE} with apt-get{' (through sudo)' if prefix else ''}"
    # Fresh machines often have no package lists yet; install finds nothing without them.
    plan.steps.append(Step("update the apt package lists", [*prefix, "apt-get", "update"], APT_HINT))
    plan.steps.append(Step(
        f"install {APT_PACKAGE} (the browser of the real-browser test)",
        [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", APT_PACKAGE], APT_HINT,
    ))
