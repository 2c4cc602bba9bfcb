"""Run records: a small JSON file per training run, so a new kernel can find a run still going.

``<paths.logs>/runs/<run_id>.json`` holds the process ids, the start time and where the run's
config, events and log are. A record is never deleted: when its process is gone it is marked
``finished`` (with the exit code when known), which keeps a history of the runs.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RUNNING, FINISHED = "running", "finished"
TRAINER_MODULE = "trainer.train_network"


@dataclass
class RunRecord:
    """What is known about one training run, as stored in its JSON file."""

    run_id: str
    pid: int
    pgid: int
    started: float
    config_file: str
    events_file: str
    log_file: str
    output_dir: str
    output_name: str
    command: list[str] = field(default_factory=list)
    num_processes: int = 1
    process_start: int | None = None  # kernel start tick of the pid, to tell a reused pid apart
    status: str = RUNNING
    ended: float | None = None
    exit_code: int | None = None
    note: str = ""
    record_file: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("record_file")
        return json.dumps(data, indent=2, ensure_ascii=False)

    @classmethod
    def from_file(cls, path: Path) -> "RunRecord":
        """Read one record; raises ValueError when the file is not a run record."""
        data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a run record")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data and name != "record_file"}
        try:
            return cls(**known, record_file=str(path))
        except TypeError as problem:  # a missing required field
            raise ValueError(f"{path} is not a run record: {problem}") from problem


def runs_folder(logs: Path) -> Path:
    """Where the records live: ``<logs>/runs``."""
    return Path(logs) / "runs"


def write_record(record: RunRecord, folder: Path | None = None) -> Path:
    """Write (or rewrite) a record atomically; returns its file."""
    path = Path(record.record_file) if record.record_file else Path(folder or ".") / f"{record.run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(record.to_json() + "\n", encoding="utf-8")
    os.replace(partial, path)  # a reader never sees half a record
    record.record_file = str(path)
    return path


def read_records(logs: Path) -> list[RunRecord]:
    """Every readable record under ``<logs>/runs``, oldest first (unreadable files are skipped)."""
    records = []
    for path in sorted(runs_folder(logs).glob("*.json")):
        try:
            records.append(RunRecord.from_file(path))
        except (OSError, ValueError):
            continue
    return sorted(records, key=lambda record: record.started)


def mark_finished(record: RunRecord, exit_code: int | None = None, note: str = "") -> None:
    """Record that the run's process is gone (idempotent: the first end time is kept)."""
    if record.status == FINISHED:
        return
    if record.record_file:
        try:
            stored = RunRecord.from_file(Path(record.record_file))
        except (OSError, ValueError):
            stored = None
        if stored is not None and stored.status == FINISHED and (stored.exit_code is not None or exit_code is None):
            # Another reader (often the kernel that owns the process, which knows the exit code) was first.
            record.status, record.ended, record.exit_code, record.note = (
                FINISHED, stored.ended, stored.exit_code, stored.note)
            return
    record.status = FINISHED
    record.ended = time.time()
    record.exit_code = exit_code
    record.note = note or record.note
    write_record(record)


def process_start_tick(pid: int) -> int | None:
    """The pid's start time in clock ticks since boot (Linux ``/proc``), or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after its last ")" are plain.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[0] if fields else None


def is_our_trainer(pid: int, process_start: int | None = None) -> bool:
    """True when ``pid`` is alive and is our trainer (not a zombie, not a reused pid).

    Without ``/proc`` (not Linux) only "is some process with this pid alive" can be checked.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else: /proc decides below
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return True
    if _process_state(pid) in (None, "Z", "X"):
        return False  # gone, or exited and waiting to be reaped
    try:
        arguments = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not any(TRAINER_MODULE.encode() in argument for argument in arguments):
        return False
    return process_start is None or process_start_tick(pid) == process_start
