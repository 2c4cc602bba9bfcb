"""One run's process and events, read together: what the monitor panel polls.

``RunMonitor.refresh()`` checks the process first and reads the events after, so when it sees
the process gone it has also read every event the process wrote. A run that ends without a
done, stopped or error event is reported as failed, with the end of its log.
"""
from __future__ import annotations

from typing import Any

from core.training.follow_events import EventFollower
from core.training.run_process import RunHandle
from core.training.run_progress import STOPPED, RunMessage, RunProgress

# Events may carry a time a little before the record's (clock rounding); a second is plenty.
CLOCK_SLACK_S = 1.0
# Exit codes of a trainer interrupted before its stop handler was set: main() returns 130, an interrupt
# during Python's own start-up ends the process by the signal (-2); None when re-attached (unknown).
CLEAN_STOP_CODES = (0, 130, -2, None)


class RunMonitor:
    """Follows one ``RunHandle``: ``refresh()`` folds new events into ``progress``."""

    def __init__(self, handle: RunHandle) -> None:
        self.handle = handle
        self.follower = EventFollower(handle.events_file, since=handle.record.started - CLOCK_SLACK_S)
        self.progress = RunProgress()
        self.ended = False  # the process is gone and every event it wrote has been read

    def refresh(self) -> list[dict[str, Any]]:
        """Read what is new; returns the new events (already folded into ``progress``)."""
        if self.ended:
            return []
        exited = not self.handle.is_running
        events = self.follower.read_all_available()
        self.progress.apply_all(events)
        if exited:
            self._close()
        return events

    def stop(self) -> bool:
        """Ask the trainer for a clean stop; False when it had already ended."""
        return self.handle.stop()

    def _close(self) -> None:
        self.ended = True
        code = self.handle.returncode
        if self.progress.finished:
            self.progress.exit_code = code
        elif self.handle.stop_requested and code in CLEAN_STOP_CODES and not self.progress.losses:
            # Stopped while the model was still loading: nothing was trained, so nothing was saved.
            self.progress.status = STOPPED
            self.progress.exit_code = code
            self.progress.warnings.append(RunMessage(
                "The run was stopped before its first step; no LoRA or state was saved."))
        else:
            self.progress.mark_exited(code, self.handle.log_tail())
