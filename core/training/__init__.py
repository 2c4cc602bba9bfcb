"""Training from the notebook: the config side (presets, TOML) and the run side (start, follow, stop).

Run side: ``start_run`` launches the trainer as a subprocess and returns a ``RunHandle``;
``find_active_runs`` finds runs still going after a kernel restart; ``RunMonitor`` (process +
``EventFollower`` + ``RunProgress``) is what the monitor panel polls.
"""
from core.training.follow_events import EventFollower
from core.training.run_monitor import RunMonitor
from core.training.run_process import RunHandle, find_active_runs, start_run
from core.training.run_progress import LossPoint, RunMessage, RunProgress, SampleSet
from core.training.run_text import format_duration, format_rate

__all__ = [
    "EventFollower",
    "LossPoint",
    "RunHandle",
    "RunMessage",
    "RunMonitor",
    "RunProgress",
    "SampleSet",
    "find_active_runs",
    "format_duration",
    "format_rate",
    "start_run",
]
