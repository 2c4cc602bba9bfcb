"""installer.py --dev and the real-browser test's Chromium: found, installed with apt-get, or a clear refusal."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from installer_lib.browser import CHROMIUM_ENV, find_chromium
from installer_lib.execute import describe_plan
from installer_lib.model import InstallPlan, MachineFacts, Options, TorchInfo
from installer_lib.plan import plan_install

PROJECT_ROOT = Path(__file__).resolve().parent.parent
APT_INSTALL = "env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"


def facts(**changes: object) -> MachineFacts:
    """A Debian machine, everything installed but Chromium, changed where a test says so."""
    base = MachineFacts(python_version=(3, 11, 7), python_path="/usr/bin/python3", unmet_requirements=(),
                        torch=TorchInfo(version="2.13.0+cpu"), onnxruntime="onnxruntime 1.31.1", apt_get=True,
                        is_root=True)
    return replace(base, **changes)  # type: ignore[arg-type]


def commands(plan: InstallPlan) -> list[str]:
    return [" ".join(step.argv) for step in plan.steps]


def test_dev_as_root_installs_debian_chromium_with_apt() -> None:
    plan = plan_install(facts(), Options(dev=True))
    assert plan.error is None
    assert commands(plan) == ["apt-get update", APT_INSTALL]
    assert "install Debian's chromium with apt-get" in describe_plan(facts(), plan)


def test_dev_without_root_uses_sudo() -> None:
    plan = plan_install(facts(is_root=False, sudo=True), Options(dev=True))
    assert commands(plan) == ["sudo apt-get update", f"sudo {APT_INSTALL}"]
    assert "(through sudo)" in plan.browser_note


def test_dev_without_root_or_sudo_refuses_and_says_what_to_install() -> None:
    plan = plan_install(facts(is_root=False, sudo=False), Options(dev=True))
    assert plan.error is not None
    assert "not root and sudo is not installed" in plan.error
    assert "apt-get install chromium" in plan.error and CHROMIUM_ENV in plan.error


def test_dev_without_apt_names_the_variable_for_another_browser() -> None:
    plan = plan_install(facts(apt_get=False), Options(dev=True))
    assert plan.error is not None and "no apt-get" in plan.error and f"{CHROMIUM_ENV}=" in plan.error


def test_a_bad_chromium_path_setting_is_refused_not_overridden() -> None:
    plan = plan_install(facts(chromium_setting="/opt/nothing/chrome"), Options(dev=True))
    assert plan.error is not None and f"{CHROMIUM_ENV}=/opt/nothing/chrome is not an executable file" in plan.error


def test_found_chromium_is_kept_and_plain_installs_never_call_apt() -> None:
    kept = plan_install(facts(chromium="/usr/bin/chromium"), Options(dev=True))
    assert kept.steps == [] and kept.browser_note == "keep /usr/bin/chromium"
    for case in (facts(), facts(is_root=False, sudo=False), facts(apt_get=False)):
        plain = plan_install(case, Options())
        assert plain.error is None and plain.steps == [] and plain.browser_note == ""


def test_find_chromium_prefers_the_variable(tmp_path: Path) -> None:
    browser = tmp_path / "my-chrome"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    assert find_chromium({CHROMIUM_ENV: str(browser)}) == str(browser)
    assert find_chromium({CHROMIUM_ENV: str(tmp_path / "missing")}) is None


def test_dry_run_lists_the_browser_line() -> None:
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "installer.py"), "--dry-run", "--dev"],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
                          env={**os.environ, CHROMIUM_ENV: sys.executable})  # any executable stands in
    assert done.returncode == 0, done.stderr
    assert f"browser:     keep {sys.executable}" in done.stdout
