"""Saved training state: everything needed to continue a run exactly where it stopped.

A state folder holds the network weights, the optimizer and scheduler states, every random
number generator the run draws from, and the loop's counters (step, epoch, batches already
used in the current epoch). The data order needs no saving: an epoch's batches follow from
(seed, epoch) alone. So N steps straight and N/2 + resume + N/2 give the same weights.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from trainer.errors import TrainerError

STATE_FORMAT = 1
_COUNTERS = "train_state.json"
_NETWORK = "network.safetensors"
_OPTIMIZER = "optimizer.pt"
_SCHEDULER = "scheduler.pt"
_RNG = "rng.pt"


@dataclass(frozen=True)
class Counters:
    """Where the run was: updates done, the epoch it was in, and batches of that epoch already used."""

    step: int
    epoch: int
    batches_in_epoch: int
    total_steps: int
    seed: int
    network_module: str
    network_dim: int
    format: int = STATE_FORMAT


def state_folder(output_dir: Path, output_name: str, step: int | None = None, epoch: int | None = None) -> Path:
    """sd-scripts' names: ``NAME-000003-state`` (epoch), ``NAME-step00000100-state`` (step), ``NAME-state`` (end)."""
    if epoch is not None:
        return output_dir / f"{output_name}-{epoch:06d}-state"
    if step is not None:
        return output_dir / f"{output_name}-step{step:08d}-state"
    return output_dir / f"{output_name}-state"


def _rng_states(generator: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "loop": generator.get_state(),
    }


def save_state(folder: Path, network: torch.nn.Module, optimizer: Any, scheduler: Any,
               generator: torch.Generator, counters: Counters) -> Path:
    """Write a state folder (replacing one of the same name from this run) and return it."""
    temporary = folder.with_name(folder.name + ".partial")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    save_file({key: value.detach().contiguous().cpu() for key, value in network.state_dict().items()},
              str(temporary / _NETWORK))
    torch.save(optimizer.state_dict(), temporary / _OPTIMIZER)
    torch.save(scheduler.state_dict(), temporary / _SCHEDULER)
    torch.save(_rng_states(generator), temporary / _RNG)
    (temporary / _COUNTERS).write_text(json.dumps(asdict(counters), indent=2), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    temporary.rename(folder)  # the folder appears complete or not at all
    return folder


def read_counters(folder: Path) -> Counters:
    """The counters of a state folder, with errors that say what is wrong with it."""
    folder = Path(folder)
    path = folder / _COUNTERS
    if not path.is_file():
        raise TrainerError(
            f"{folder} is not a saved training state (no {_COUNTERS}).",
            hint="resume takes a folder written by save_state, named like mylora-000004-state.", option="resume",
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != STATE_FORMAT:
        raise TrainerError(f"{folder} was saved in state format {data.get('format')}, this trainer reads {STATE_FORMAT}.",
                           hint="Resume it with the version that saved it, or start again.", option="resume")
    return Counters(**data)


def load_state(folder: Path, network: torch.nn.Module, optimizer: Any, scheduler: Any,
               generator: torch.Generator, expected: Counters) -> Counters:
    """Restore a state folder into the objects of a freshly prepared run; returns its counters."""
    counters = read_counters(folder)
    for name in ("network_module", "network_dim", "seed"):
        if getattr(counters, name) != getattr(expected, name):
            raise TrainerError(
                f"The state in {folder} was saved with {name} = {getattr(counters, name)!r}, this run has "
                f"{getattr(expected, name)!r}.",
                hint=f"Resume with the same {name} as the run that saved the state.", option="resume",
            )
    try:
        weights = load_file(str(Path(folder) / _NETWORK))
        missing, unexpected = network.load_state_dict(weights, strict=False)
    except (OSError, RuntimeError) as problem:
        raise TrainerError(f"The network weights in {folder} cannot be loaded: {problem}",
                           hint="The state does not match this network's settings.", option="resume") from problem
    if missing or unexpected:
        raise TrainerError(f"The network in {folder} does not match this run ({len(missing)} missing, "
                           f"{len(unexpected)} unexpected tensors).",
                           hint="Resume with the same network settings.", option="resume")
    optimizer.load_state_dict(torch.load(Path(folder) / _OPTIMIZER, weights_only=False))
    scheduler.load_state_dict(torch.load(Path(folder) / _SCHEDULER, weights_only=False))
    rng = torch.load(Path(folder) / _RNG, weights_only=False)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    generator.set_state(rng["loop"])
    return counters


def prune_states(saved: dict[int, Path], keep_last: int | None) -> list[Path]:
    """Remove this run's older epoch states beyond the last ``keep_last``; returns what was removed."""
    if not keep_last or len(saved) <= keep_last:
        return []
    removed = []
    for number in sorted(saved)[:-keep_last]:
        shutil.rmtree(saved[number], ignore_errors=True)
        removed.append(saved.pop(number))
    return removed
