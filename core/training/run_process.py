"""Starting the trainer as a subprocess, stopping it, and finding it again after a kernel restart.

The trainer runs as ``python -m trainer.train_network --config_file X`` (or under
``accelerate launch`` for several GPUs) in its own process group, with the project folder as
its working directory. Its console output goes to a log file beside its events file; the
notebook reads the events file, never the console. A JSON run record in ``<logs>/runs/`` lets
a new kernel re-attach (``find_active_runs``). Stopping is a signal: SIGINT asks the trainer
to finish the current step and save a numbered LoRA and its state.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import CoreError
from core.paths import PROJECT_ROOT, ProjectPaths
from core.training.run_records import (
    FINISHED,
    RUNNING,
    RunRecord,
    is_our_trainer,
    mark_finished,
    process_start_tick,
    read_records,
    runs_folder,
    write_record,
)

# Environment variables the trainer has no use for and that must not reach its process (and so
# its log or a crash dump). HF_TOKEN stays when set: the trainer may fetch a gated base model.
DROPPED_VARIABLES = ("CIVITAI_TOKEN", "CIVITAI_API_KEY", "JUPYTER_TOKEN", "JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN")
LOG_TAIL_BYTES = 16 * 1024


@dataclass(frozen=True)
class RunFiles:
    """Where one run writes: its output folder and name, its events file and its console log."""

    output_dir: Path
    output_name: str
    events_file: Path
    log_file: Path


def run_files(config_file: Path, extra_args: Sequence[str] = ()) -> RunFiles:
    """Read the config (as the trainer will) to learn where the run's files go."""
    from trainer.config import load_training_config, parse_cli_overrides
    from trainer.errors import TrainerError

    try:
        config = load_training_config(Path(config_file), parse_cli_overrides(list(extra_args)), cwd=PROJECT_ROOT)
    except TrainerError as problem:
        raise CoreError(f"{config_file}: {problem.message}", problem.hint) from problem
    if not config.output_dir:
        raise CoreError(f"{config_file} has no output_dir, so the run's progress could not be followed.",
                        "Set output_dir (the training panel writes it for you), then start again.")
    name = str(config.output_name or "last")
    # The trainer's own file naming (trainer/session.py events_path), repeated here because importing
    # trainer.session would load torch into the notebook kernel.
    name = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
    output_dir = Path(config.output_dir)
    events = Path(config.events_file) if config.events_file else output_dir / f"{name}_events.jsonl"
    return RunFiles(output_dir, name, events, events.with_name(f"{name}_train.log"))


def trainer_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The trainer's environment: ours minus tokens it does not need, unbuffered output."""
    env = {key: value for key, value in (os.environ if environ is None else environ).items()
           if key not in DROPPED_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"  # the log shows what happened up to a crash, not a lost buffer
    return env


def trainer_command(config_file: Path, num_processes: int = 1, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line that runs the trainer (through accelerate's launcher when num_processes > 1)."""
    tail = ["-m", "trainer.train_network", "--config_file", str(config_file), *extra_args]
    if num_processes <= 1:
        return [sys.executable, *tail]
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
            "--num_machines", "1", "--multi_gpu", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), *tail]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunHandle:
    """One training run: the process (when this kernel started it) and its run record."""

    def __init__(self, record: RunRecord, process: subprocess.Popen | None = None) -> None:
        self.record = record
        self.process = process
        self.stop_requested = False
        self._returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.record.pid

    @property
    def events_file(self) -> Path:
        return Path(self.record.events_file)

    @property
    def log_file(self) -> Path:
        return Path(self.record.log_file)

    @property
    def output_dir(self) -> Path:
        return Path(self.record.output_dir)

    @property
    def attached(self) -> bool:
        """True when this handle was found again (another kernel started the run)."""
        return self.process is None

    def poll(self) -> int | None:
        """None while the trainer runs; afterwards its exit code (None too when not ours to know)."""
        if not self.is_running:
            return self._returncode
        return None

    @property
    def returncode(self) -> int | None:
        """The exit code once ended; a re-attached run's code cannot be known (None)."""
        self.poll()
        return self._returncode

    @property
    def is_running(self) -> bool:
        """Whether the trainer process is still going; marks the record finished once it is not."""
        if self.process is not None:  # ours: the process object knows best, and reaps it
            code = self.process.poll()
            if code is None:
                return True
            self._returncode = code
            if self.record.status == FINISHED and self.record.exit_code is None:
                self.record.exit_code = code  # another reader marked it first, without the code
                write_record(self.record)
        elif self.record.status == FINISHED or is_our_trainer(self.pid, self.record.process_start):
            return self.record.status != FINISHED
        mark_finished(self.record, self._returncode)
        return False

    def stop(self) -> bool:
        """Ask for a clean stop (SIGINT to the process group): the trainer saves a LoRA and its state.

        Returns False when the run had already ended.
        """
        if not self.is_running:
            return False
        self.stop_requested = True
        return self._signal(signal.SIGINT)

    def kill(self) -> bool:
        """End the run at once (SIGKILL to the whole group): nothing more is saved. Last resort."""
        if not self.is_running:
            return False
        return self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> bool:
        try:
            os.killpg(self.record.pgid, number)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the process ends; True when it has ended, False when ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return not self.is_running
        while self.is_running:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        return True

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the console log (progress-bar redraws collapsed to their last state)."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - LOG_TAIL_BYTES))
                data = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        # splitlines would also split on tqdm's "\r" redraws; split on "\n" and keep each line's last redraw.
        shown = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in data.split("\n")]
        return "\n".join([line for line in shown if line.strip()][-lines:])

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.record.run_id!r}, pid={self.pid}, status={self.record.status!r})"


def find_active_runs(paths: ProjectPaths) -> list[RunHandle]:
    """Runs whose trainer is still going, oldest first. Stale records are marked finished, never deleted."""
    active = []
    for record in read_records(paths.logs):
        if record.status != RUNNING:
            continue
        if is_our_trainer(record.pid, record.process_start):
            active.append(RunHandle(record))
        else:
            mark_finished(record, note="the process had ended when the records were next read")
    return active


def start_run(config_file: Path, project_root: Path = PROJECT_ROOT, *, paths: ProjectPaths | None = None,
              num_processes: int = 1, extra_args: Sequence[str] = (),
              environ: Mapping[str, str] | None = None) -> RunHandle:
    """Start the trainer on ``config_file`` in the background and return its handle.

    Refuses (CoreError) while another run recorded under ``paths.logs`` is still going. An events
    file or log of an earlier run under the same name is moved aside first, never overwritten.
    """
    from trainer.events import move_aside

    paths = paths or ProjectPaths.resolve()
    config_file = Path(config_file).expanduser().resolve()
    if not config_file.is_file():
        raise CoreError(f"The training config {config_file} does not exist.",
                        "Save the config in the training panel first (or pick an existing .toml file).")
    running = find_active_runs(paths)
    if running:
        other = running[-1].record
        raise CoreError(f"A training run is already going ({other.output_name}, pid {other.pid}, "
                        f"config {other.config_file}).",
                        "Wait for it to finish, or stop it with the Stop button, then start again.")
    files = run_files(config_file, extra_args)
    files.events_file.parent.mkdir(parents=True, exist_ok=True)
    move_aside(files.events_file)  # the follower must never read the previous run's lines as this run's
    move_aside(files.log_file)
    command = trainer_command(config_file, num_processes, extra_args)
    started = time.time()
    try:
        with files.log_file.open("wb") as log:
            process = subprocess.Popen(command, cwd=str(project_root), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       env=trainer_environment(environ))
    except OSError as problem:
        raise CoreError(f"The trainer could not be started: {problem}.",
                        f"Check that {files.log_file.parent} is writable and that {project_root} holds the "
                        "project (trainer/ folder).") from problem
    record = RunRecord(
        run_id=f"{files.output_name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}-{process.pid}",
        pid=process.pid, pgid=process.pid,  # start_new_session: the child leads its own group
        started=started, config_file=str(config_file), events_file=str(files.events_file),
        log_file=str(files.log_file), output_dir=str(files.output_dir), output_name=files.output_name,
        command=command, num_processes=num_processes, process_start=process_start_tick(process.pid),
    )
    write_record(record, runs_folder(paths.logs))
    return RunHandle(record, process)
