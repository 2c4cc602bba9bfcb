"""What a LoRA file holds: architecture, algorithm, rank and alpha per module group, metadata.

Also home of the key grouping (one kohya key stem = one module) that the other tools share.

Command line::

    python -m trainer.tools.lora_info FILE [--json] [--debug]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from trainer.errors import TrainerError
from trainer.tools import report_error
from trainer.saving.lora_file import read_lora_file

# Suffix -> algorithm family, longest suffixes first so "lora_down.weight" never matches "weight".
FAMILY_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("lora_down.weight", "lora"), ("lora_up.weight", "lora"), ("lora_mid.weight", "lora_tucker"),
    ("hada_w1_a", "loha"), ("hada_w1_b", "loha"), ("hada_w2_a", "loha"), ("hada_w2_b", "loha"),
    ("hada_t1", "loha"), ("hada_t2", "loha"),
    ("lokr_w1", "lokr"), ("lokr_w1_a", "lokr"), ("lokr_w1_b", "lokr"), ("lokr_w2", "lokr"),
    ("lokr_w2_a", "lokr"), ("lokr_w2_b", "lokr"), ("lokr_t2", "lokr"),
    ("dora_scale", "dora"), ("diff_b", "full"), ("diff", "full"), ("w_norm", "norm"), ("b_norm", "norm"),
    ("oft_blocks", "oft"), ("rescale", "oft"),
    ("a1.weight", "glora"), ("a2.weight", "glora"), ("b1.weight", "glora"), ("b2.weight", "glora"),
    ("alpha", "alpha"),
)


def split_key(key: str) -> tuple[str, str]:
    """``(stem, member)`` of a tensor key, e.g. ``("lora_unet_x", "lora_down.weight")``."""
    for suffix, _ in sorted(FAMILY_SUFFIXES, key=lambda item: -len(item[0])):
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    stem, _, member = key.partition(".")
    return stem, member


def family_of(member: str) -> str:
    """The algorithm family a member name belongs to, or ``"unknown"``."""
    return dict(FAMILY_SUFFIXES).get(member, "unknown")


def group_modules(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Tensors grouped by stem, in file order: ``{stem: {member: tensor}}``."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        stem, member = split_key(key)
        modules.setdefault(stem, {})[member] = tensor
    return modules


def part_of(stem: str) -> str:
    """Which model part a stem belongs to: ``unet``, ``te``, ``te1``, ``te2`` or ``other``."""
    for prefix in ("lora_unet_", "lora_te1_", "lora_te2_", "lora_te_"):
        if stem.startswith(prefix):
            return prefix[len("lora_"):-1]
    return "other"


# ss_base_model_version / modelspec.architecture values -> our architecture names.
_BASE_VERSIONS = {"sd_v1": "SD1", "sd_v2": "SD2", "sd_v2_v": "SD2", "sdxl_base_v1-0": "SDXL"}
_MODELSPEC = (("stable-diffusion-xl", "SDXL"), ("stable-diffusion-v2", "SD2"), ("stable-diffusion-v1", "SD1"))
# Metadata keys shown as training settings, in this order.
SETTING_KEYS = (
    "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args", "ss_learning_rate",
    "ss_unet_lr", "ss_text_encoder_lr", "ss_optimizer", "ss_lr_scheduler", "ss_num_epochs", "ss_epoch",
    "ss_steps", "ss_max_train_steps", "ss_num_train_images", "ss_seed", "ss_clip_skip", "ss_mixed_precision",
    "ss_noise_offset", "ss_min_snr_gamma", "ss_resolution", "ss_training_comment",
)


@dataclass(frozen=True)
class ModuleGroup:
    """Modules of one part and layer kind that share a rank and alpha."""

    part: str  # unet / te / te1 / te2 / other
    kind: str  # linear, conv1x1 or conv3x3 (LoCon)
    rank: int
    alpha: float
    count: int


@dataclass
class LoraInfo:
    """The summary :func:`lora_info` returns; ``asdict`` gives the ``--json`` output."""

    path: str
    architecture: str  # SD1, SD2, SDXL or unknown
    architecture_source: str  # which evidence decided it
    algorithms: list[str]
    module_count: int
    groups: list[ModuleGroup] = field(default_factory=list)
    base_model: str = ""
    trigger_words: list[str] = field(default_factory=list)
    top_tags: list[tuple[str, int]] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    metadata_keys: int = 0


def detect_architecture(stems: list[str], metadata: Mapping[str, str]) -> tuple[str, str]:
    """``(architecture, source)`` from metadata first, then from key names."""
    version = metadata.get("ss_base_model_version", "")
    if version in _BASE_VERSIONS:
        return _BASE_VERSIONS[version], "ss_base_model_version"
    spec = metadata.get("modelspec.architecture", "")
    for prefix, name in _MODELSPEC:
        if spec.startswith(prefix):
            return name, "modelspec.architecture"
    # sd-scripts writes SDXL UNet stems in the original (SGM) layout, and SDXL has two text encoders.
    if any(s.startswith(("lora_unet_input_blocks_", "lora_unet_output_blocks_", "lora_unet_middle_block_"))
           for s in stems) or any(part_of(s) in ("te1", "te2") for s in stems):
        return "SDXL", "key names"
    if any(s.startswith(("lora_unet_down_blocks_", "lora_unet_up_blocks_", "lora_unet_mid_block_", "lora_te_"))
           for s in stems):
        return "SD1/SD2", "key names"
    return "unknown", "none"


def _rank_alpha_kind(members: Mapping[str, torch.Tensor]) -> tuple[int, float, str] | None:
    down = members.get("lora_down.weight")
    if down is None:
        return None
    rank = int(down.shape[0])
    alpha = float(members["alpha"]) if "alpha" in members else float(rank)
    kind = "linear" if down.dim() == 2 else ("conv1x1" if tuple(down.shape[2:]) == (1, 1) else "conv3x3")
    return rank, alpha, kind


def _json_field(metadata: Mapping[str, str], key: str) -> object:
    try:
        return json.loads(metadata.get(key, "") or "null")
    except json.JSONDecodeError:
        return None


def _trigger_words(metadata: Mapping[str, str]) -> list[str]:
    words: list[str] = []
    phrase = metadata.get("modelspec.trigger_phrase", "").strip()
    if phrase:
        words.append(phrase)
    dirs = _json_field(metadata, "ss_dataset_dirs")
    if isinstance(dirs, dict):
        for name in dirs:
            # The "N_words" folder convention: "words" is the class token users trigger with.
            match = re.fullmatch(r"\d+_(.+)", Path(str(name)).name)
            if match and match.group(1) not in words:
                words.append(match.group(1))
    return words


def _top_tags(metadata: Mapping[str, str], count: int) -> list[tuple[str, int]]:
    frequency = _json_field(metadata, "ss_tag_frequency")
    totals: Counter[str] = Counter()
    if isinstance(frequency, dict):
        for tags in frequency.values():
            if isinstance(tags, dict):
                for tag, n in tags.items():
                    if isinstance(n, (int, float)):
                        totals[str(tag).strip()] += int(n)
    return totals.most_common(count)


def lora_info(path: str | Path, top_tags: int = 10) -> LoraInfo:
    """Inspect a kohya-format LoRA file; raises :class:`TrainerError` if it cannot be read."""
    path = Path(path)
    try:
        tensors, metadata = read_lora_file(path)
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise TrainerError(f"Cannot read {path} as a .safetensors LoRA: {error}",
                           hint="Check the path; the file may be incomplete or not a safetensors file.") from error
    modules = group_modules(tensors)
    stems = list(modules)
    architecture, source = detect_architecture(stems, metadata)
    families = Counter(family_of(m) for members in modules.values() for m in members)
    algorithms = sorted(f for f in families if f not in ("alpha",))
    grouped: Counter[tuple[str, str, int, float]] = Counter()
    for stem, members in modules.items():
        found = _rank_alpha_kind(members)
        if found:
            rank, alpha, kind = found
            grouped[(part_of(stem), kind, rank, alpha)] += 1
    groups = [ModuleGroup(part, kind, rank, alpha, n) for (part, kind, rank, alpha), n in sorted(grouped.items())]
    base = metadata.get("ss_sd_model_name", "") or metadata.get("ss_base_model_version", "")
    settings = {key: metadata[key] for key in SETTING_KEYS if key in metadata}
    return LoraInfo(str(path), architecture, source, algorithms, len(modules), groups, base,
                    _trigger_words(metadata), _top_tags(metadata, top_tags), settings, len(metadata))


def format_info(info: LoraInfo) -> str:
    """The human-readable report the command prints."""
    lines = [f"file: {info.path}", f"architecture: {info.architecture} (from {info.architecture_source})",
             f"algorithm: {', '.join(info.algorithms) or 'none'}", f"modules: {info.module_count}"]
    for g in info.groups:
        lines.append(f"  {g.part:5} {g.kind:8} rank {g.rank:4} alpha {g.alpha:g}  x{g.count}")
    if info.base_model:
        lines.append(f"base model: {info.base_model}")
    if info.trigger_words:
        lines.append(f"trigger words: {', '.join(info.trigger_words)}")
    if info.top_tags:
        lines.append("top tags: " + ", ".join(f"{tag} ({n})" for tag, n in info.top_tags))
    for key, value in info.settings.items():
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; errors print without a traceback unless ``--debug``."""
    parser = argparse.ArgumentParser(prog="python -m trainer.tools.lora_info", description="Inspect a LoRA file.")
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        info = lora_info(args.file)
    except TrainerError as error:
        return report_error(error, args.debug)
    print(json.dumps(asdict(info), indent=2) if args.json else format_info(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
