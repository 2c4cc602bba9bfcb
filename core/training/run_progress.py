"""What a training run has done so far, folded from its events (see ``trainer/events.py``).

Pure logic: ``RunProgress.apply(event)`` takes one decoded JSON event at a time, in file order,
and keeps the figures the monitor shows (step, epoch, rate, remaining time, the loss curve,
samples, saves, warnings, errors, the final file). Unknown event types are counted and ignored,
so a newer trainer never breaks an older monitor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.training.run_text import eta_seconds, format_duration, format_loss, format_rate

STARTING, RUNNING, STOPPED, DONE, FAILED = "starting", "running", "stopped", "done", "failed"
FINISHED_STATES = (STOPPED, DONE, FAILED)


@dataclass(frozen=True)
class LossPoint:
    """One step's loss and the trainer's running average at that step."""

    step: int
    loss: float
    avg_loss: float | None


@dataclass(frozen=True)
class SampleSet:
    """The preview images drawn at one step."""

    step: int
    paths: tuple[Path, ...]
    prompts: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunMessage:
    """A warning or an error, with what to do (``hint``) and the option concerned, when known."""

    message: str
    hint: str = ""
    option: str = ""


def _number(value: Any) -> float | None:
    """JSON numbers as floats; the trainer writes NaN/inf as strings ("nan"), which stay non-finite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _integer(value: Any, default: int = 0) -> int:
    number = _number(value)
    return int(number) if number is not None and math.isfinite(number) else default


@dataclass
class RunProgress:
    """The monitor's view of one run. ``status`` is one of starting, running, stopped, done, failed."""

    status: str = STARTING
    step: int = 0
    total_steps: int | None = None
    epoch: int = 0
    epochs: int | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    loss: float | None = None
    avg_loss: float | None = None
    losses: list[LossPoint] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    samples: list[SampleSet] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    saved_states: list[Path] = field(default_factory=list)
    warnings: list[RunMessage] = field(default_factory=list)
    errors: list[RunMessage] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    final_path: Path | None = None
    state_path: Path | None = None
    family: str = ""
    images: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    log_tail: str = ""
    events_seen: int = 0
    unknown_events: int = 0

    # ------------------------------------------------------------------ folding events
    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event into the progress."""
        self.events_seen += 1
        kind = str(event.get("type", ""))
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            self.unknown_events += 1
            return
        handler(event)

    def apply_all(self, events: list[dict[str, Any]]) -> None:
        """Fold several events in order."""
        for event in events:
            self.apply(event)

    def _on_start(self, event: dict[str, Any]) -> None:
        self.status = RUNNING
        self.started_at = _number(event.get("time"))
        self.total_steps = _integer(event.get("total_steps")) or None
        self.epochs = _integer(event.get("epochs")) or None
        self.family = str(event.get("family", ""))
        self.images = _integer(event.get("images"), 0)

    def _on_step(self, event: dict[str, Any]) -> None:
        if self.status == STARTING:
            self.status = RUNNING
        self.step = _integer(event.get("step"), self.step)
        self.total_steps = _integer(event.get("total_steps")) or self.total_steps
        self.epoch = _integer(event.get("epoch"), self.epoch)
        self.it_per_s = _number(event.get("it_per_s"))
        eta = _number(event.get("eta_s"))
        self.eta_s = eta if eta is not None else eta_seconds(self.step, self.total_steps, self.it_per_s)
        loss, average = _number(event.get("loss")), _number(event.get("avg_loss"))
        if loss is not None:
            self.loss, self.avg_loss = loss, average
            self.losses.append(LossPoint(self.step, loss, average))

    def _on_epoch(self, event: dict[str, Any]) -> None:
        self.epoch = _integer(event.get("epoch"), self.epoch)

    def _on_checkpoint(self, event: dict[str, Any]) -> None:
        if event.get("path"):
            self.checkpoints.append(Path(event["path"]))

    def _on_state(self, event: dict[str, Any]) -> None:
        if event.get("path"):
            self.saved_states.append(Path(event["path"]))

    def _on_sample(self, event: dict[str, Any]) -> None:
        paths = tuple(Path(item) for item in event.get("paths") or ())
        prompts = tuple(str(item) for item in event.get("prompts") or ())
        if paths:
            self.samples.append(SampleSet(_integer(event.get("step"), self.step), paths, prompts))

    def _on_validation(self, event: dict[str, Any]) -> None:
        loss = _number(event.get("loss"))
        if loss is not None:
            self.validation.append((_integer(event.get("step"), self.step), loss))

    def _on_skipped_image(self, event: dict[str, Any]) -> None:
        self.skipped_images.append(f"{event.get('path', '?')}: {event.get('reason', '')}".rstrip(": "))

    def _on_warning(self, event: dict[str, Any]) -> None:
        self.warnings.append(RunMessage(str(event.get("message", "")), str(event.get("hint") or "")))

    def _on_error(self, event: dict[str, Any]) -> None:
        self.errors.append(RunMessage(str(event.get("message", "")), str(event.get("hint") or ""),
                                      str(event.get("option") or "")))
        self.status = FAILED
        self.finished_at = _number(event.get("time"))

    def _on_stopped(self, event: dict[str, Any]) -> None:
        self.status = STOPPED
        self.step = _integer(event.get("step"), self.step)
        self.final_path = Path(event["path"]) if event.get("path") else self.final_path
        self.state_path = Path(event["state"]) if event.get("state") else None
        self.eta_s = None

    def _on_done(self, event: dict[str, Any]) -> None:
        # A stopped run also ends with "done" (stopped: true); it stays "stopped", with the numbered file.
        if event.get("stopped"):
            self.status = STOPPED
            self.final_path = self.final_path or (Path(event["path"]) if event.get("path") else None)
        else:
            self.status = DONE
            self.final_path = Path(event["path"]) if event.get("path") else self.final_path
            self.step = _integer(event.get("steps"), self.step)
        self.finished_at = _number(event.get("time"))
        self.eta_s = 0.0 if self.status == DONE else None

    # ------------------------------------------------------------------ the process side
    def mark_exited(self, exit_code: int | None, log_tail: str = "") -> None:
        """The trainer process is gone. Without a done/stopped/error event first, the run failed."""
        self.exit_code = exit_code
        if self.status in FINISHED_STATES:
            return
        self.status = FAILED
        self.log_tail = log_tail
        code = "an unknown exit code" if exit_code is None else f"exit code {exit_code}"
        self.errors.append(RunMessage(
            f"The trainer stopped without finishing ({code}) and without reporting why.",
            "Read the end of the training log shown below; it was probably killed (out of system memory, "
            "or the server stopped it)."))

    # ------------------------------------------------------------------ texts
    @property
    def finished(self) -> bool:
        """True once the run is stopped, done or failed."""
        return self.status in FINISHED_STATES

    @property
    def rate_text(self) -> str:
        return format_rate(self.it_per_s)

    @property
    def eta_text(self) -> str:
        return format_duration(self.eta_s)

    @property
    def latest_samples(self) -> SampleSet | None:
        return self.samples[-1] if self.samples else None

    @property
    def summary(self) -> str:
        """One line: ``step 3/8 · epoch 1/2 · 9.57 it/s · ETA 1s · loss 1.4397``."""
        total = self.total_steps if self.total_steps else "?"
        epochs = f"/{self.epochs}" if self.epochs else ""
        parts = [f"{self.status}", f"step {self.step}/{total}", f"epoch {self.epoch}{epochs}"]
        if self.status in (STARTING, RUNNING):
            parts += [self.rate_text, f"ETA {self.eta_text}"]
        parts.append(f"loss {format_loss(self.avg_loss if self.avg_loss is not None else self.loss)}")
        return " · ".join(parts)
