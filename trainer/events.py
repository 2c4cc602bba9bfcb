"""Progress events as JSON lines: what the notebook's monitor reads instead of console text.

One object per line, flushed at once, each with ``type`` and ``time`` (seconds since the epoch).
Types: start, skipped_image, step, epoch, checkpoint, state, resumed, sample, validation_set,
validation, warning, error, stopped, done. A previous run's file is moved aside, never overwritten.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, TextIO


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN/inf are not valid JSON; keep them readable
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def move_aside(path: Path) -> Path | None:
    """Rename an existing file to ``<stem>.<n><suffix>`` (first free n); return the new name."""
    if not path.exists():
        return None
    number = 1
    while True:
        candidate = path.with_name(f"{path.stem}.{number}{path.suffix}")
        if not candidate.exists():
            path.rename(candidate)
            return candidate
        number += 1


class EventWriter:
    """Appends events to one file. ``enabled`` False (non-main processes) writes nothing."""

    def __init__(self, path: Path | None, enabled: bool = True) -> None:
        self.path = Path(path) if path else None
        self._handle: TextIO | None = None
        if enabled and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            move_aside(self.path)
            self._handle = self.path.open("a", encoding="utf-8")

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """Write one event and return it."""
        event = {"type": event_type, "time": round(time.time(), 3), **_jsonable(fields)}
        if self._handle is not None:
            self._handle.write(json.dumps(event, ensure_ascii=False) + "\n")
            self._handle.flush()
        return event

    def close(self) -> None:
        """Close the file; later emits are dropped."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete event in ``path`` (a half-written last line is skipped)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
