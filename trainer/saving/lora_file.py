"""Writing LoRA files: precision, the sd-scripts hashes, atomic writes, file names and pruning.

File names follow sd-scripts, so users find their epochs where they expect them:
``<output_name>.safetensors`` for the final save, ``<output_name>-000001.safetensors`` (six
digits) for epoch saves and ``<output_name>-step00000100.safetensors`` (eight digits) for step saves.

The two hashes A1111's additional-networks extension (and tools after it) index LoRAs by:

- ``sshs_model_hash``: sha256 of everything after the safetensors header, i.e. of the tensor data;
- ``sshs_legacy_hash``: the first 8 hex digits of the sha256 of the 0x10000 bytes at offset
  0x100000 of the file (empty for files under 1 MiB, which still hashes).

Both are taken over the bytes safetensors would write for these tensors with only the ``ss_*``
metadata, because that is how sd-scripts defines them (so other keys can be edited later
without changing the hashes).
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch

from trainer.errors import TrainerError

EXTENSION = ".safetensors"
SAVE_DTYPES: dict[str | None, torch.dtype] = {
    None: torch.float32,  # empty saves in float, as the save_precision option documents
    "float": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
_LEGACY_OFFSET, _LEGACY_LENGTH = 0x100000, 0x10000

SaveKind = Literal["epoch", "step"]


@dataclass(frozen=True)
class SavedFile:
    """Where a LoRA was written and the hashes stored in it."""

    path: Path
    model_hash: str
    legacy_hash: str


def safetensors_hashes(data: bytes) -> tuple[str, str]:
    """``(sshs_model_hash, sshs_legacy_hash)`` of serialized safetensors bytes."""
    header_length = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_length :]).hexdigest()
    legacy_hash = hashlib.sha256(data[_LEGACY_OFFSET : _LEGACY_OFFSET + _LEGACY_LENGTH]).hexdigest()[:8]
    return model_hash, legacy_hash


def cast_tensors(tensors: Mapping[str, torch.Tensor], save_precision: str | None) -> dict[str, torch.Tensor]:
    """Floating tensors cast to the save precision, on the CPU and contiguous (as safetensors needs)."""
    if save_precision not in SAVE_DTYPES:
        raise TrainerError(
            f"save_precision {save_precision!r} is not known.",
            hint="Use fp16, bf16, float, or leave it empty.",
            option="save_precision",
        )
    dtype = SAVE_DTYPES[save_precision]
    out = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().to("cpu")
        out[key] = (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()
    return out


def save_lora_file(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None,
    save_precision: str | None = None,
) -> SavedFile:
    """Cast, hash and write a LoRA file atomically; returns the path and the hashes written.

    The file appears complete or not at all: it is written to a temporary file in the same
    folder and moved over ``path``. Metadata values must be strings.
    """
    path = Path(path)
    metadata = dict(metadata or {})
    bad = [key for key, value in metadata.items() if not isinstance(value, str)]
    if bad:
        raise TypeError(f"metadata values must be strings; not so for {bad}")
    tensors = cast_tensors(tensors, save_precision)
    # The full serialization is held in memory once, for the hashes; a LoRA is small next to the model.
    ss_only = {key: value for key, value in metadata.items() if key.startswith("ss_")}
    model_hash, legacy_hash = safetensors_hashes(safetensors.torch.save(tensors, metadata=ss_only))
    metadata["sshs_model_hash"] = model_hash
    metadata["sshs_legacy_hash"] = legacy_hash
    _write_atomically(path, tensors, metadata)
    return SavedFile(path, model_hash, legacy_hash)


def _write_atomically(path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        safetensors.torch.save_file(dict(tensors), temp_name, metadata=metadata)
        with open(temp_name, "rb") as written:
            os.fsync(written.fileno())  # the rename must not land before the data does
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and header metadata of a ``.safetensors`` file."""
    with safetensors.safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return tensors, metadata


@dataclass(frozen=True)
class OutputPaths:
    """The file names one run writes under ``output_dir``."""

    output_dir: Path
    output_name: str

    @property
    def final(self) -> Path:
        """``<output_name>.safetensors``."""
        return self.output_dir / f"{self.output_name}{EXTENSION}"

    def epoch(self, number: int) -> Path:
        """``<output_name>-000001.safetensors`` for epoch 1."""
        return self.output_dir / f"{self.output_name}-{number:06d}{EXTENSION}"

    def step(self, number: int) -> Path:
        """``<output_name>-step00000100.safetensors`` for step 100."""
        return self.output_dir / f"{self.output_name}-step{number:08d}{EXTENSION}"

    def numbered_pattern(self, kind: SaveKind) -> re.Pattern[str]:
        """Matches the file names of this run's numbered saves of one kind; group 1 is the number."""
        digits = r"(\d{6})" if kind == "epoch" else r"step(\d{8})"
        return re.compile(re.escape(self.output_name) + "-" + digits + re.escape(EXTENSION))

    def existing(self) -> list[Path]:
        """Files from an earlier run that this run could overwrite: the final file and numbered saves."""
        if not self.output_dir.is_dir():
            return []
        patterns = [self.numbered_pattern("epoch"), self.numbered_pattern("step")]
        found = [p for p in self.output_dir.iterdir() if any(pat.fullmatch(p.name) for pat in patterns)]
        if self.final.exists():
            found.append(self.final)
        return sorted(found)


def output_paths(output_dir: str | Path, output_name: str) -> OutputPaths:
    """The run's file names; ``output_name`` must be a plain file name without extension."""
    if not output_name or output_name != output_name.strip() or re.search(r"[\\/:*?\"<>|]", output_name):
        raise TrainerError(
            f"output_name {output_name!r} cannot be used as a file name.",
            hint="Use letters, digits, '-', '_' or '.', without slashes or surrounding spaces.",
            option="output_name",
        )
    if output_name.endswith(EXTENSION):
        output_name = output_name[: -len(EXTENSION)]
    return OutputPaths(Path(output_dir), output_name)


def check_no_overwrite(paths: OutputPaths, allow: bool) -> None:
    """Raise before training when files of an earlier run with this name would be overwritten."""
    if allow:
        return
    existing = paths.existing()
    if existing:
        shown = ", ".join(p.name for p in existing[:3]) + (f" (+{len(existing) - 3} more)" if len(existing) > 3 else "")
        raise TrainerError(
            f"{paths.output_dir} already holds LoRA files named {paths.output_name!r}: {shown}.",
            hint="Choose another output_name, or set overwrite_output = true to replace them.",
            option="output_name",
        )


def prune_old_saves(kind: SaveKind, keep_last_n: int | None, saved_this_run: Mapping[int, Path]) -> list[Path]:
    """Delete this run's older numbered saves; returns their paths (drop them from your record).

    ``saved_this_run`` maps epoch or step numbers to the files this run wrote; nothing else is
    ever deleted (not the final file, not files of earlier runs). For epochs ``keep_last_n``
    counts saves (save_last_n_epochs); for steps it is a number of steps (save_last_n_steps):
    saves more than that many steps before the latest one go.
    """
    if not keep_last_n or not saved_this_run:
        return []
    numbers = sorted(saved_this_run)
    if kind == "epoch":
        doomed = numbers[:-keep_last_n]
    elif kind == "step":
        doomed = [n for n in numbers if n <= numbers[-1] - keep_last_n]
    else:
        raise ValueError(f"kind must be 'epoch' or 'step', got {kind!r}")
    removed = []
    for number in doomed:
        path = Path(saved_this_run[number])
        # Only numbered saves of this kind: a caller mix-up must never delete the final LoRA.
        if not re.fullmatch(r".+-" + (r"\d{6}" if kind == "epoch" else r"step\d{8}") + re.escape(EXTENSION), path.name):
            raise ValueError(f"{path} is not a numbered {kind} save")
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
