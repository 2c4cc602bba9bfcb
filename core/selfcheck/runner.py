"""Run every stage of "check my setup" in a scratch folder and collect a :class:`SelfCheckReport`."""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from core.paths import ProjectPaths
from core.selfcheck.report import FAILED, OK, RUNNING, SKIPPED, STAGES, SelfCheckReport, StageResult
from core.selfcheck.stages import STAGE_FUNCTIONS, STAGE_HINTS, CheckState, StageFailure

DEFAULT_STEPS = 4
FOLDER_NAME = "self_check"
# Everything a run writes in its folder; only these are removed before the next run, so anything
# else a user put there survives.
OWN_ENTRIES = ("model", "tagger", "dataset", "output", "self_check.toml")

Progress = Callable[[StageResult], None]


def scratch_folder(paths: ProjectPaths) -> Path:
    """Where the check works: ``<cache>/self_check``."""
    return Path(paths.cache) / FOLDER_NAME


def clean_own_files(folder: Path) -> None:
    """Remove what an earlier check wrote in ``folder`` (symlinks are unlinked, never followed)."""
    for name in OWN_ENTRIES:
        entry = folder / name
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
        elif entry.is_dir():
            shutil.rmtree(entry)


def _error_text(error: BaseException, key: str) -> tuple[str, str]:
    """Message and hint for an unexpected error: the layers' own errors carry both."""
    message = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
    hint = getattr(error, "hint", None) or STAGE_HINTS[key]
    return str(message), str(hint)


def run_self_check(paths: ProjectPaths, progress: Progress | None = None,
                   steps: int = DEFAULT_STEPS) -> SelfCheckReport:
    """Build a tiny model and sample images, tag them, train a tiny LoRA and check the file, offline.

    ``progress(stage)`` is called whenever a stage starts, reports live detail, or ends. A failed
    stage stops the run; the stages after it are marked skipped. Never raises for a failed stage:
    the report says what broke and what to do.
    """
    notify = progress or (lambda stage: None)
    folder = scratch_folder(paths)
    folder.mkdir(parents=True, exist_ok=True)
    clean_own_files(folder)
    report = SelfCheckReport(folder=folder, stages=[StageResult(key, title) for key, title in STAGES])
    current: list[StageResult] = []

    def detail(message: str) -> None:
        if current:
            current[0].message = message
            notify(current[0])

    state = CheckState(folder=folder, steps=steps, detail=detail)
    broken = False
    for stage in report.stages:
        if broken:
            stage.status, stage.message = SKIPPED, "skipped: an earlier stage failed"
            notify(stage)
            continue
        current[:] = [stage]
        stage.status, stage.message = RUNNING, "running"
        notify(stage)
        started = time.perf_counter()
        try:
            stage.message = STAGE_FUNCTIONS[stage.key](state)
            stage.status = OK
        except StageFailure as failure:
            stage.status, stage.message, stage.hint = FAILED, failure.message, failure.hint
        except Exception as error:  # noqa: BLE001 - any breakage is the answer the user asked for
            stage.status = FAILED
            stage.message, stage.hint = _error_text(error, stage.key)
        stage.seconds = time.perf_counter() - started
        broken = stage.status == FAILED
        notify(stage)
    current.clear()
    report.lora_path = state.lora_path
    return report


def main() -> int:
    """``python -m core.selfcheck``: run the check and print each stage."""
    report = run_self_check(ProjectPaths.resolve(),
                            progress=lambda stage: print(stage.line(), flush=True) if stage.status in (OK, FAILED) else None)
    print(report.summary_lines()[-1])
    return 0 if report.ok else 1
