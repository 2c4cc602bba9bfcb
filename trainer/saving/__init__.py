"""Writing trained networks to disk: Kohya-format LoRA files, their metadata, names and pruning."""
from __future__ import annotations

from trainer.saving.lora_file import (
    OutputPaths,
    SavedFile,
    check_no_overwrite,
    output_paths,
    prune_old_saves,
    read_lora_file,
    safetensors_hashes,
    save_lora_file,
)
from trainer.saving.metadata import DatasetInfo, LoraMetadataInput, SubsetInfo, build_metadata

__all__ = [
    "DatasetInfo",
    "LoraMetadataInput",
    "OutputPaths",
    "SavedFile",
    "SubsetInfo",
    "build_metadata",
    "check_no_overwrite",
    "output_paths",
    "prune_old_saves",
    "read_lora_file",
    "safetensors_hashes",
    "save_lora_file",
]
