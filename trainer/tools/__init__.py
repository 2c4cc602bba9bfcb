"""LoRA utilities run after training: each module is one function plus a ``python -m`` command.

- ``resize_lora``: SVD rank reduction of a kohya LoRA / LoCon file.
- ``lora_info``: what a LoRA file holds (architecture, algorithm, ranks, metadata).
- ``extract_lora``: a LoRA approximating the difference of two checkpoints.
- ``merge_lora``: LoRA / LoCon files merged into a base model, saved as a single-file checkpoint.
- ``convert_lora``: kohya <-> diffusers/PEFT key formats.

They work on files only and never import ``core`` or ``widgets``.
"""
