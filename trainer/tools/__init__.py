"""LoRA utilities run after training: each module is one function plus a ``python -m`` command.

- ``resize_lora``: SVD rank reduction of a kohya LoRA / LoCon file.
- ``lora_info``: what a LoRA file holds (architecture, algorithm, ranks, metadata).
- ``extract_lora``: a LoRA approximating the difference of two checkpoints.
- ``merge_lora``: LoRA / LoCon files merged into a base model, saved as a single-file checkpoint.
- ``convert_lora``: kohya <-> diffusers/PEFT key formats.

They work on files only and never import ``core`` or ``widgets``.
"""
from __future__ import annotations

import sys

from trainer.errors import TrainerError


def report_error(error: TrainerError, debug: bool) -> int:
    """The tools' shared error exit: the message and hint on stderr, exit code 2; ``--debug`` re-raises."""
    if debug:
        raise error
    print(f"error: {error}", file=sys.stderr)
    return 2
