"""The self-check's tiny training run: the real trainer command, as a subprocess, read through its events.

It goes through exactly the path a real run takes (a TOML file, ``python -m trainer.train_network``,
the JSON-lines events file), so a broken CUDA library, a missing package in the subprocess's Python
or a wrong working folder shows up here rather than an hour into the user's first real run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.paths import PROJECT_ROOT

OUTPUT_NAME = "self_check"
TIMEOUT_S = 900.0  # minutes on a slow CPU; a GPU needs seconds
POLL_S = 0.25


@dataclass
class TrainingRun:
    """How the tiny run went: the LoRA it saved, or the trainer's own error message and hint."""

    lora_path: Path | None = None
    steps: int = 0
    final_loss: float | None = None
    seconds: float = 0.0
    error: str = ""
    hint: str = ""
    log_path: Path | None = None


def write_config(model_dir: Path, train_dir: Path, output_dir: Path, steps: int) -> Path:
    """The run's TOML: a tiny rank, a tiny resolution, a fixed seed, nothing downloaded."""
    import tomli_w

    settings = {
        "pretrained_model_name_or_path": str(model_dir),
        "train_data_dir": str(train_dir),
        "output_dir": str(output_dir),
        "output_name": OUTPUT_NAME,
        "resolution": 64,
        "network_dim": 4,
        "network_alpha": 4,
        "learning_rate": 1e-3,
        "max_train_steps": int(steps),
        "train_batch_size": 2,
        "seed": 1234,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    config = output_dir.parent / "self_check.toml"
    config.write_text(tomli_w.dumps(settings), encoding="utf-8")
    return config


def _read_events(path: Path) -> list[dict]:
    """Every complete line of the events file so far (a half-written last line is left for later)."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            break
    return events


def _log_error(path: Path) -> tuple[str, str]:
    """The trainer's own "Error: ... / What to do: ..." lines from its log, else the log's last lines."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "", ""
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].lower().startswith("error:"):
            hint = next((line.strip().removeprefix("What to do:").strip() for line in lines[index + 1:]
                         if line.strip().startswith("What to do:")), "")
            return lines[index].split(":", 1)[1].strip(), hint
    return " | ".join(lines[-6:]), ""


def run_tiny_training(model_dir: Path, train_dir: Path, output_dir: Path, steps: int,
                      detail: Callable[[str], None] = lambda message: None) -> TrainingRun:
    """Run the trainer on the tiny model for ``steps`` steps; report progress through ``detail``."""
    config = write_config(model_dir, train_dir, output_dir, steps)
    events_path = output_dir / f"{OUTPUT_NAME}_events.jsonl"
    log_path = output_dir / "trainer.log"
    env = dict(os.environ)
    # Offline on purpose: the check must prove the machine works without reaching any server.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    run = TrainingRun(log_path=log_path)
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, "-m", "trainer.train_network", "--config_file", str(config)],
                                   cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None:
                if time.monotonic() - started > TIMEOUT_S:
                    process.terminate()
                    process.wait(timeout=60)
                    run.error = f"The tiny training did not finish within {TIMEOUT_S / 60:.0f} minutes."
                    run.hint = f"The machine is far too slow or stuck; see {log_path}."
                    return run
                steps_seen = [event for event in _read_events(events_path) if event.get("type") == "step"]
                if steps_seen:
                    detail(f"step {steps_seen[-1]['step']}/{steps_seen[-1].get('total_steps', steps)}")
                time.sleep(POLL_S)
        except BaseException:
            process.kill()  # a stopped notebook cell must not leave a trainer running
            process.wait()
            raise
    run.seconds = time.monotonic() - started
    events = _read_events(events_path)
    done = next((event for event in events if event.get("type") == "done"), None)
    failure = next((event for event in events if event.get("type") == "error"), None)
    if process.returncode != 0 or done is None:
        if failure:
            run.error = f"The trainer stopped: {failure.get('message', '')}"
            run.hint = failure.get("hint") or f"See {log_path}."
        else:
            message, hint = _log_error(log_path)
            run.error = f"The trainer exited with code {process.returncode}: {message}"
            run.hint = hint or f"Read {log_path}; a missing package or a broken CUDA library shows there."
        return run
    run.lora_path = Path(done["path"])
    run.steps = int(done.get("steps") or 0)
    run.final_loss = done.get("final_loss")
    return run
