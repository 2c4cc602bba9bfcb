"""Reading a training's events file while the trainer is still writing it.

``EventFollower.read_new()`` returns only the events completed since the last call: it keeps
its byte offset, and keeps a half-written last line for the next call instead of losing or
mis-parsing it. A file that does not exist yet is simply "no events yet"; a file that is
replaced (a new run moved the old one aside) is followed from its start.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# How much to read per call at most: a long run's file is read in bounded bites, never all at once.
CHUNK_BYTES = 4 * 1024 * 1024


class EventFollower:
    """Incremental reader of one JSON-lines events file.

    ``since`` (seconds since the epoch) drops events older than the run being followed, so a
    stale file left by an earlier run under the same name is never mistaken for this run.
    """

    def __init__(self, path: Path, since: float | None = None) -> None:
        self.path = Path(path)
        self.since = since
        self.offset = 0
        self.bad_lines = 0
        self._partial = b""
        self._inode: int | None = None

    def read_new(self) -> list[dict[str, Any]]:
        """The complete events written since the previous call (empty when there are none)."""
        try:
            with self.path.open("rb") as handle:
                status = os.fstat(handle.fileno())
                if self._inode is not None and (status.st_ino != self._inode or status.st_size < self.offset):
                    self._restart()  # replaced or truncated: this is another file now
                self._inode = status.st_ino
                handle.seek(self.offset)
                data = handle.read(CHUNK_BYTES)
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # b"" after a final newline, else the unfinished line
        return [event for event in (self._decode(line) for line in lines) if event is not None]

    def read_all_available(self) -> list[dict[str, Any]]:
        """Call ``read_new`` until nothing more is waiting (a file larger than one chunk)."""
        events: list[dict[str, Any]] = []
        while True:
            before = self.offset
            events.extend(self.read_new())
            if self.offset == before:
                return events

    def _restart(self) -> None:
        self.offset = 0
        self._partial = b""

    def _decode(self, line: bytes) -> dict[str, Any] | None:
        if not line.strip():
            return None
        try:
            event = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            self.bad_lines += 1
            return None
        if not isinstance(event, dict):
            self.bad_lines += 1
            return None
        if self.since is not None and isinstance(event.get("time"), (int, float)) and event["time"] < self.since:
            return None
        return event
