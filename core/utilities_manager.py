"""The utilities panel's entry point: inspect, resize, merge, extract, upload, and finding the latest LoRA.

Command line (uploads; the token comes from ``HF_TOKEN`` or a saved ``hf auth login``, never
from the command line, where it would land in the shell history)::

    python -m core.utilities_manager upload-lora LORA --repo NAME [--public] [--samples]
        [--images A.png ...] [--base-model HUB_ID] [--trigger WORD ...]
    python -m core.utilities_manager upload-dataset FOLDER --repo NAME [--public]

The other utilities have their own commands in ``trainer.tools``.

Each function checks its paths first (a missing input or an existing output is a
:class:`CoreError` naming the file), then calls the file tools in ``trainer.tools`` or the Hub
upload in ``core.hub``, and returns a small dataclass the panel shows. Outputs never replace an
existing file unless ``overwrite=True``; when no output name is given, a free one is chosen
beside the input (``name_r8.safetensors``, then ``name_r8_2.safetensors``...).

Heavy imports (torch, the trainer's tools, huggingface_hub) happen inside the functions, so the
panel that imports this module opens fast.
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import CoreError, cli_error
from core.hub.upload import UploadResult, upload_dataset, upload_lora

__all__ = [
    "ExtractOutcome", "LoraSummary", "MergeOutcome", "ResizeOutcome", "UploadResult", "extract", "find_sample_images",
    "inspect_lora", "latest_lora", "list_loras", "merge", "resize", "upload_dataset", "upload_lora",
]


@dataclass(frozen=True)
class LoraSummary:
    """What the Inspect tab shows about one LoRA file."""

    path: Path
    size_bytes: int
    architecture: str
    architecture_source: str
    algorithms: list[str]
    module_count: int
    groups: list[tuple[str, str, int, float, int]]  # (part, kind, rank, alpha, count)
    base_model: str
    trigger_words: list[str]
    top_tags: list[tuple[str, int]]
    settings: dict[str, str]
    report: str  # the text lora_info prints

    @property
    def ranks(self) -> list[int]:
        """Distinct ranks, smallest first."""
        return sorted({group[2] for group in self.groups})


@dataclass(frozen=True)
class ResizeOutcome:
    """A resized LoRA: where it went, and the per-module summary line."""

    path: Path
    summary: str
    module_count: int
    new_ranks: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class MergeOutcome:
    """A merge result: a checkpoint (``kind="checkpoint"``) or one LoRA (``kind="lora"``)."""

    path: Path
    kind: str
    merged: dict[str, int]  # LoRA file -> modules merged


@dataclass(frozen=True)
class ExtractOutcome:
    """An extracted LoRA and which model parts it covers."""

    path: Path
    parts: list[str]
    skipped_parts: list[str]
    module_count: int


@contextmanager
def _as_core_error() -> Iterator[None]:
    """The tools raise TrainerError; the panel expects CoreError, with the same message and hint."""
    from trainer.errors import TrainerError

    try:
        yield
    except TrainerError as error:
        raise CoreError(error.message, error.hint) from None


def _input_file(path: str | Path | None, what: str) -> Path:
    if path is None or not str(path).strip():
        raise CoreError(f"No {what} chosen.", f"Pick the {what} (a path on the server).")
    found = Path(str(path).strip()).expanduser()
    if not found.exists():
        raise CoreError(f"The {what} {found} does not exist.", "Check the path; paths are on the server, not your PC.")
    return found.resolve()


def _output_file(save_to: str | Path | None, default: Path, overwrite: bool, inputs: Sequence[Path]) -> Path:
    """The output path: the given one (refused if it exists, unless overwrite) or a free default."""
    if save_to is None or not str(save_to).strip():
        candidate, number = default, 2
        while candidate.exists():
            candidate = default.with_name(f"{default.stem}_{number}{default.suffix}")
            number += 1
        return candidate
    path = Path(str(save_to).strip()).expanduser().resolve()
    if path.suffix.lower() != ".safetensors":
        raise CoreError(f"Output {path.name} must end in .safetensors.", "Add .safetensors to the output name.")
    if path in {p.resolve() for p in inputs}:
        raise CoreError(f"Output {path} is one of the inputs; inputs are never overwritten.",
                        "Choose another output name.")
    if path.exists() and not overwrite:
        raise CoreError(f"Output {path} already exists.", "Choose another name, or tick 'overwrite' to replace it.")
    return path


def inspect_lora(path: str | Path, top_tags: int = 15) -> LoraSummary:
    """Architecture, ranks, metadata and trigger words of a LoRA file."""
    from trainer.tools.lora_info import format_info, lora_info

    lora = _input_file(path, "LoRA file")
    with _as_core_error():
        info = lora_info(lora, top_tags=top_tags)
    groups = [(g.part, g.kind, g.rank, g.alpha, g.count) for g in info.groups]
    return LoraSummary(lora, lora.stat().st_size, info.architecture, info.architecture_source, info.algorithms,
                       info.module_count, groups, info.base_model, info.trigger_words, info.top_tags, info.settings,
                       format_info(info))


def resize(model: str | Path, new_rank: int, save_to: str | Path | None = None, *, new_conv_rank: int | None = None,
           dynamic_method: str | None = None, dynamic_param: float | None = None,
           save_precision: str | None = None, device: str = "cpu", overwrite: bool = False) -> ResizeOutcome:
    """Resize a LoRA to ``new_rank`` (SVD); the default output is ``<name>_r<rank>.safetensors`` beside it."""
    from trainer.tools.resize_lora import resize_lora

    source = _input_file(model, "LoRA file")
    if int(new_rank) < 1:
        raise CoreError(f"New rank {new_rank} is too small.", "Use a rank of 1 or more (e.g. 8 or 16).")
    out = _output_file(save_to, source.with_name(f"{source.stem}_r{int(new_rank)}.safetensors"), overwrite, [source])
    with _as_core_error():
        report = resize_lora(source, out, int(new_rank), new_conv_rank, dynamic_method or None, dynamic_param,
                             save_precision or None, device, overwrite)
    return ResizeOutcome(out, report.summary(), len(report.modules), sorted({m.new_rank for m in report.modules}))


def merge(models: Sequence[str | Path], ratios: Sequence[float] | None = None, save_to: str | Path | None = None, *,
          base_model: str | Path | None = None, model_config: str | None = None, concat: bool = False,
          new_rank: int | None = None, save_precision: str | None = None, overwrite: bool = False) -> MergeOutcome:
    """Merge LoRAs into ``base_model`` (a checkpoint) or, without a base, into one LoRA (concat or SVD)."""
    from trainer.tools.merge_lora import merge_lora, merge_loras

    loras = [_input_file(path, "LoRA file") for path in models]
    if not loras:
        raise CoreError("No LoRA files to merge.", "Pick at least one LoRA file.")
    ratios = [float(r) for r in ratios] if ratios else [1.0] * len(loras)
    if len(ratios) != len(loras):
        raise CoreError(f"{len(loras)} LoRA files but {len(ratios)} strengths.", "Give one strength per LoRA file.")
    first = loras[0]
    if base_model:
        base = _input_file(base_model, "base model")
        out = _output_file(save_to, first.with_name(f"{base.stem}_{first.stem}.safetensors"), overwrite,
                           [base, *loras])
        with _as_core_error():
            report = merge_lora(base, loras, out, ratios, model_config, save_precision or None, overwrite)
        return MergeOutcome(out, "checkpoint", report.merged)
    if not concat and not new_rank:
        raise CoreError("Merging LoRAs into one needs a base model, 'concat', or a new rank.",
                        "Pick a base model to bake the LoRAs in, or tick concat / give a rank to make one LoRA.")
    out = _output_file(save_to, first.with_name(f"{first.stem}_merged.safetensors"), overwrite, loras)
    with _as_core_error():
        report = merge_loras(loras, out, ratios, concat, new_rank, save_precision or None, overwrite)
    return MergeOutcome(out, "lora", report.merged)


def extract(model_org: str | Path, model_tuned: str | Path, dim: int, save_to: str | Path | None = None, *,
            conv_dim: int | None = None, model_config: str | None = None, save_precision: str | None = None,
            device: str = "cpu", overwrite: bool = False) -> ExtractOutcome:
    """A LoRA of rank ``dim`` approximating ``model_tuned - model_org``."""
    from trainer.tools.extract_lora import extract_lora

    org = _input_file(model_org, "original model")
    tuned = _input_file(model_tuned, "fine-tuned model")
    out = _output_file(save_to, tuned.with_name(f"{tuned.stem}_extracted_r{int(dim)}.safetensors"), overwrite,
                       [org, tuned])
    with _as_core_error():
        report = extract_lora(org, tuned, out, int(dim), conv_dim or None, model_config, save_precision=save_precision
                              or None, device=device, overwrite=overwrite)
    return ExtractOutcome(out, report.parts, report.skipped_parts, report.modules)


def _config_output(config_file: Path) -> tuple[Path | None, str | None]:
    """(output_dir, output_name) of a training TOML, looking one table deep too."""
    try:
        data = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None, None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({k: v for k, v in value.items() if not isinstance(v, dict)})
        else:
            flat[key] = value
    out_dir = flat.get("output_dir")
    folder = (config_file.parent / str(out_dir)).resolve() if out_dir else None
    return folder, (str(flat["output_name"]) if flat.get("output_name") else None)


def list_loras(outputs: Path | None, limit: int = 200) -> list[Path]:
    """LoRA files under ``outputs``, newest first (training states left out)."""
    if not outputs or not Path(outputs).is_dir():
        return []
    found = [p for p in Path(outputs).rglob("*.safetensors") if p.is_file() and not _in_state_folder(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)[:limit]


def latest_lora(outputs: Path | None, config_file: str | Path | None = None) -> Path | None:
    """The newest LoRA the last training wrote: from the config's output folder, else anywhere in ``outputs``."""
    candidates: list[Path] = []
    if config_file and Path(config_file).is_file():
        folder, name = _config_output(Path(config_file))
        if folder and folder.is_dir():
            candidates = [p for p in folder.glob(f"{name or ''}*.safetensors") if p.is_file()]
    if not candidates:
        candidates = list_loras(outputs, limit=1)
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


def _in_state_folder(path: Path) -> bool:
    # Saved training states hold their own .safetensors files that are not LoRAs.
    return any(part.endswith("-state") or part == "state" for part in path.parent.parts)


_SAMPLE = re.compile(r"_(\d{6})_(\d{2})(?:_\d+)?\.png$")


def find_sample_images(lora_path: str | Path, limit: int = 4) -> list[Path]:
    """The newest training samples beside a LoRA (``sample/<name>_<step>_<index>.png``), one per prompt."""
    folder = Path(lora_path).parent / "sample"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), int(m.group(2)), p) for p in folder.glob("*.png") if (m := _SAMPLE.search(p.name))]
    if not found:
        return []
    last = max(step for step, _, _ in found)
    per_prompt: dict[int, Path] = {}
    # "_2", "_3" variants are later runs with the same names: sorted last, so the newest wins.
    for step, index, path in sorted(found, key=lambda item: (item[1], len(item[2].name), item[2].name)):
        if step == last:
            per_prompt[index] = path
    return [per_prompt[index] for index in sorted(per_prompt)][:limit]




def main(argv: list[str] | None = None) -> int:
    """Command-line uploads; errors print as one message with a hint (exit 2), no traceback."""
    parser = argparse.ArgumentParser(prog="python -m core.utilities_manager", description="Upload to Hugging Face.")
    commands = parser.add_subparsers(dest="command", required=True)
    lora = commands.add_parser("upload-lora", help="a LoRA with a model card (and sample images)")
    lora.add_argument("lora", type=Path)
    lora.add_argument("--samples", action="store_true", help="add the latest training samples beside the LoRA")
    lora.add_argument("--images", nargs="*", type=Path, default=[], help="sample images to add")
    lora.add_argument("--base-model", help="Hub id of the base model, for the card")
    lora.add_argument("--trigger", nargs="*", help="trigger words (default: from the LoRA's metadata)")
    data = commands.add_parser("upload-dataset", help="a dataset folder (images and captions)")
    data.add_argument("folder", type=Path)
    for command in (lora, data):
        command.add_argument("--repo", required=True, help="name or user/name")
        command.add_argument("--public", action="store_true", help="make a new repo public (default: private)")
        command.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "upload-lora":
            images = [*args.images, *(find_sample_images(args.lora) if args.samples else [])]
            result = upload_lora(args.lora, args.repo, images=images, private=not args.public,
                                 base_model=args.base_model, trigger_words=args.trigger)
        else:
            result = upload_dataset(args.folder, args.repo, private=not args.public)
    except CoreError as error:
        return cli_error(error, args.debug)
    print(f"Uploaded {len(result.files)} files to {result.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
