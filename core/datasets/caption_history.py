"""Snapshots of caption files taken before every bulk edit, and ``undo`` from them, byte for byte.

A snapshot lives in ``<folder>/.caption_history/<NNNN>-<UTC time>/`` (the trainer and our tools
skip dot-folders): ``before/<relative path>`` holds each changed file's exact previous bytes (BOM,
CRLF and all), and ``manifest.json`` lists every file with whether it existed and the SHA-256 of
what the edit wrote. The snapshot is complete on disk before the first caption is touched.

Undo first checks every file still holds what the edit wrote; if someone changed one since, it
stops and names them (``force`` restores anyway). Files the edit created are moved into the
snapshot's ``undone_created/``, not deleted. An undone snapshot is marked, not removed, so the
next ``undo`` goes one edit further back.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.datasets.files import atomic_write_bytes, move_without_overwrite
from core.errors import CoreError

HISTORY_DIR = ".caption_history"
_MANIFEST = "manifest.json"
_UNDONE = "undone.json"
_FOLDER = re.compile(r"^(\d{4,})-")
_LISTED = 5


@dataclass(frozen=True)
class FileChange:
    """One caption file an edit will write: its bytes before (None when it does not exist yet) and after."""

    path: Path
    before: bytes | None
    after: bytes


@dataclass(frozen=True)
class SnapshotEntry:
    """One file of a snapshot, relative to the edited folder."""

    relative: str
    existed: bool
    after_sha256: str


@dataclass(frozen=True)
class Snapshot:
    """A stored snapshot: its folder, what the edit was, and its files."""

    folder: Path  # the edited folder (the snapshot sits in its .caption_history)
    snapshot_id: str
    created: str
    description: str
    entries: tuple[SnapshotEntry, ...]
    undone: bool

    @property
    def location(self) -> Path:
        """The snapshot's own folder."""
        return self.folder / HISTORY_DIR / self.snapshot_id


@dataclass(frozen=True)
class UndoResult:
    """What undo restored (existing files) and put aside (files the edit had created)."""

    snapshot: Snapshot
    restored: tuple[Path, ...]
    removed_created: tuple[Path, ...]  # where they were; now in the snapshot's undone_created/


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _relative(folder: Path, path: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError as problem:
        raise CoreError(f"{path} is not inside {folder}.", hint="This is a bug in the caption editor; please report it.") from problem


def _next_number(history: Path) -> int:
    numbers = [int(m.group(1)) for p in history.iterdir() if (m := _FOLDER.match(p.name))] if history.is_dir() else []
    return max(numbers, default=0) + 1


def write_snapshot(folder: Path, description: str, changes: list[FileChange]) -> Snapshot:
    """Store the previous bytes of every file in ``changes`` before an edit writes them."""
    folder = Path(folder)
    history = folder / HISTORY_DIR
    history.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    entries = tuple(SnapshotEntry(_relative(folder, c.path), c.before is not None, _sha256(c.after)) for c in changes)
    # Built in a temp folder and renamed: a crash never leaves a half snapshot that undo would trust.
    staging = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=history))
    for change, entry in zip(changes, entries):
        if change.before is not None:
            stored = staging / "before" / entry.relative
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(change.before)
    manifest = {"created": created, "description": description,
                "files": [{"path": e.relative, "existed": e.existed, "after_sha256": e.after_sha256} for e in entries]}
    (staging / _MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    while True:  # two editors in the same second: take the next free number
        snapshot_id = f"{_next_number(history):04d}-{created}"
        try:
            os.rename(staging, history / snapshot_id)
            break
        except OSError:
            if not (history / snapshot_id).exists():
                raise
    return Snapshot(folder, snapshot_id, created, description, entries, undone=False)


def _load(folder: Path, location: Path) -> Snapshot | None:
    try:
        manifest = json.loads((location / _MANIFEST).read_text(encoding="utf-8"))
        entries = tuple(SnapshotEntry(f["path"], bool(f["existed"]), f["after_sha256"]) for f in manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not one of ours, or damaged: never used for undo
    return Snapshot(folder, location.name, manifest.get("created", ""), manifest.get("description", ""), entries,
                    undone=(location / _UNDONE).exists())


def list_snapshots(folder: Path) -> list[Snapshot]:
    """The snapshots of ``folder``, oldest first."""
    history = Path(folder) / HISTORY_DIR
    if not history.is_dir():
        return []
    locations = sorted((p for p in history.iterdir() if p.is_dir() and _FOLDER.match(p.name)),
                       key=lambda p: int(_FOLDER.match(p.name).group(1)))  # type: ignore[union-attr]
    return [s for s in (_load(Path(folder), p) for p in locations) if s is not None]


def _pick(folder: Path, snapshot_id: str | None) -> Snapshot:
    snapshots = list_snapshots(folder)
    if snapshot_id is not None:
        for snapshot in snapshots:
            if snapshot.snapshot_id == snapshot_id:
                if snapshot.undone:
                    raise CoreError(f"Snapshot {snapshot_id} of {folder} was already undone.", hint="Pick another one.")
                return snapshot
        raise CoreError(f"No snapshot {snapshot_id} in {folder / HISTORY_DIR}.", hint="List them with the 'history' command.")
    pending = [s for s in snapshots if not s.undone]
    if not pending:
        raise CoreError(f"Nothing to undo in {folder}: no caption edit snapshot is left.",
                        hint="Undo works on the folder the edit was made on; check the folder.")
    return pending[-1]


def undo(folder: Path, snapshot_id: str | None = None, *, force: bool = False) -> UndoResult:
    """Restore the captions of the latest not-yet-undone snapshot of ``folder`` (or ``snapshot_id``).

    Raises :class:`CoreError` naming the files changed since the edit, unless ``force``.
    """
    folder = Path(folder)
    snapshot = _pick(folder, snapshot_id)
    changed = []
    for entry in snapshot.entries:
        current = folder / entry.relative
        if not current.is_file() or _sha256(current.read_bytes()) != entry.after_sha256:
            changed.append(entry.relative)
    if changed and not force:
        shown = ", ".join(changed[:_LISTED]) + (f" and {len(changed) - _LISTED} more" if len(changed) > _LISTED else "")
        raise CoreError(f"{len(changed)} caption file(s) changed after edit {snapshot.snapshot_id} "
                        f"({snapshot.description}): {shown}. Nothing was restored.",
                        hint="Undo the later edits first, or undo with force to overwrite those changes.")
    restored, removed = [], []
    for entry in snapshot.entries:
        current = folder / entry.relative
        if entry.existed:
            atomic_write_bytes(current, (snapshot.location / "before" / entry.relative).read_bytes())
            restored.append(current)
        elif current.exists():
            move_without_overwrite(current, snapshot.location / "undone_created" / entry.relative)
            removed.append(current)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_bytes(snapshot.location / _UNDONE, json.dumps({"undone": stamp}).encode("utf-8"))
    return UndoResult(snapshot, tuple(restored), tuple(removed))
