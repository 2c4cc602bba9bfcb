"""What "check my setup" found: one result per stage, in order, with timings."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PENDING, RUNNING, OK, FAILED, SKIPPED = "pending", "running", "ok", "failed", "skipped"

# (key, what the user sees), in the order the stages run.
STAGES: tuple[tuple[str, str], ...] = (
    ("packages", "Python packages importable"),
    ("device", "PyTorch device works"),
    ("model", "Build a tiny model"),
    ("images", "Build sample images"),
    ("tagging", "Tag them with a tiny WD14 tagger"),
    ("training", "Train a tiny LoRA (trainer subprocess)"),
    ("lora", "Load the LoRA file and check its keys"),
)


@dataclass
class StageResult:
    """One stage: its status, a plain-language message, what to do when it failed, and how long it took."""

    key: str
    title: str
    status: str = PENDING
    message: str = ""
    hint: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == OK

    def line(self) -> str:
        """One line of text for logs and the command line."""
        took = f" ({self.seconds:.1f} s)" if self.status in (OK, FAILED) else ""
        text = f"[{self.status:7s}] {self.title}{took}: {self.message}"
        return text + (f"\n          What to do: {self.hint}" if self.hint else "")


@dataclass
class SelfCheckReport:
    """Every stage of one run, where it worked, and the LoRA it trained (when it got that far)."""

    folder: Path
    stages: list[StageResult] = field(default_factory=list)
    lora_path: Path | None = None

    @property
    def ok(self) -> bool:
        """True only when every stage passed."""
        return bool(self.stages) and all(stage.ok for stage in self.stages)

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    def stage(self, key: str) -> StageResult:
        """The result of the stage called ``key``."""
        return next(stage for stage in self.stages if stage.key == key)

    def summary_lines(self) -> list[str]:
        """The whole run as text lines, last line the verdict."""
        lines = [stage.line() for stage in self.stages]
        verdict = "Everything works" if self.ok else "Something is broken (see the failed stage)"
        lines.append(f"{verdict}: {self.seconds:.1f} s in all, files in {self.folder}")
        return lines
