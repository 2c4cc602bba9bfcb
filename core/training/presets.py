"""Training presets (``core/training_presets.toml``): sane starting values per model family.

A preset is data: a label, the family it suits, and option values. Picking a base model suggests
the preset that fits it, from the model presets it was downloaded as, or from its detected family
and its file name.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import CoreError
from core.training.network_types import NETWORK_TYPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TRAINING_PRESETS_FILE = Path(__file__).resolve().parent.parent / "training_presets.toml"

# File-name hints for models downloaded by hand (no model preset to match). Checked in order:
# the first family word found in the lower-cased name decides.
_NAME_HINTS = (
    (("noob",), ("pred",), "noobai_vpred"),
    (("noob",), (), "noobai"),
    (("pony",), (), "pony"),
    (("illustrious", "ilxl"), (), "illustrious"),
)


@dataclass(frozen=True)
class TrainingPreset:
    """One table of the presets file."""

    key: str
    label: str
    base: str  # "sd15" or "sdxl"
    v_prediction: bool
    description: str
    values: dict[str, Any] = field(default_factory=dict)
    model_presets: tuple[str, ...] = ()
    network_type: str | None = None  # a key of core.training.network_types.NETWORK_TYPES; None: keep the form's


def load_training_presets(path: Path = TRAINING_PRESETS_FILE) -> dict[str, TrainingPreset]:
    """Every preset in ``path``, keyed by its table name, in file order."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as problem:
        raise CoreError(f"Cannot read the training presets {path}: {problem}",
                        "Restore the file from the repository.") from None
    presets = {}
    for key, row in data.items():
        try:
            presets[key] = TrainingPreset(
                key=key, label=str(row["label"]), base=str(row["base"]), v_prediction=bool(row["v_prediction"]),
                description=str(row.get("description", "")), values=dict(row.get("values", {})),
                model_presets=tuple(row.get("model_presets", ())), network_type=row.get("network_type"),
            )
        except (KeyError, TypeError):
            raise CoreError(f"Preset [{key}] in {path} lacks label, base or v_prediction.",
                            "Add the missing field.") from None
        if presets[key].network_type is not None and presets[key].network_type not in NETWORK_TYPES:
            raise CoreError(f"Preset [{key}] in {path} has network_type = {presets[key].network_type!r}, which is "
                            "not a network type.", "Use one of: " + ", ".join(NETWORK_TYPES) + ".")
    return presets


def preset_for_model_preset(model_preset_key: str, presets: dict[str, TrainingPreset]) -> str | None:
    """The training preset listed for a ``core/model_presets.toml`` key, if any."""
    for key, preset in presets.items():
        if model_preset_key in preset.model_presets:
            return key
    return None


def suggest_preset(model_path: str | Path, family: str | None, v_prediction: bool | None,
                   presets: dict[str, TrainingPreset], model_preset_key: str | None = None) -> str | None:
    """The preset that suits a base model, or None when nothing is known about it.

    Order: the model preset it was downloaded as; its file name (pony, illustrious, noobai...);
    its detected family (``sd1``/``sd2`` -> sd15, ``sdxl`` -> sdxl, v-pred SDXL -> noobai_vpred).
    """
    if model_preset_key:
        key = preset_for_model_preset(model_preset_key, presets)
        if key:
            return key
    name = Path(str(model_path)).name.lower()
    if family in (None, "sdxl"):
        for words, also, key in _NAME_HINTS:
            if any(word in name for word in words) and all(word in name for word in also) and key in presets:
                if key == "noobai" and v_prediction:
                    return "noobai_vpred" if "noobai_vpred" in presets else key
                return key
    if family == "sdxl":
        wanted = "noobai_vpred" if v_prediction else "sdxl"
        return wanted if wanted in presets else None
    if family in ("sd1", "sd2"):
        return "sd15" if "sd15" in presets else None
    return None
