"""LyCORIS presets: which modules of the UNet and the text encoders a ``lycoris.kohya`` network wraps.

A preset is a small TOML file with the keys LyCORIS' own preset files use::

    enable_conv = true                      # wrap convolutions bigger than 1x1 (conv_dim / conv_alpha)
    unet_target_module = ["Transformer2DModel", "ResnetBlock2D"]   # every layer inside these classes
    unet_target_name = ["mid_block\\..*"]   # modules whose path matches (regular expression, from the start)
    text_encoder_target_module = ["CLIPAttention", "CLIPMLP"]
    text_encoder_target_name = []
    exclude_name = []                       # paths never wrapped, same matching rule
    use_fnmatch = false                     # true: names are globs ("*.attn2.*") instead of expressions

Class names are the diffusers / transformers classes of the loaded model (the presets shipped
inside the ``lycoris`` package name classes of other code bases, such as ``CrossAttention``).
Paths are diffusers module paths (``down_blocks.1.attentions.0.proj_in``) for the UNet, SDXL
included, and ``text_model.encoder.layers.N...`` for text encoders.

The built-in presets live in ``presets/*.toml`` beside this module; ``preset=NAME`` picks one,
``preset=/path/to/file.toml`` reads a file.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError

PRESET_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_PRESET = "full"

_LIST_KEYS = ("unet_target_module", "unet_target_name", "text_encoder_target_module", "text_encoder_target_name",
              "exclude_name")
_BOOL_KEYS = ("enable_conv", "use_fnmatch")
# Keys of LyCORIS preset files this trainer does not act on; refusing them beats silently training
# something else than the file asks for.
_UNSUPPORTED = {
    "module_algo_map": "per-class algorithm overrides are not supported yet; train one algorithm per network",
    "name_algo_map": "per-name algorithm overrides are not supported yet; train one algorithm per network",
    "target_module": "use unet_target_module / text_encoder_target_module instead",
    "target_name": "use unet_target_name / text_encoder_target_name instead",
    "lora_prefix": "key prefixes are fixed by the Kohya format (lora_unet, lora_te, lora_te1, lora_te2)",
}


@dataclass(frozen=True)
class LycorisPreset:
    """Which modules to wrap. ``name`` is the built-in name or the file path it came from."""

    name: str
    enable_conv: bool
    unet_target_module: tuple[str, ...]
    unet_target_name: tuple[str, ...]
    text_encoder_target_module: tuple[str, ...]
    text_encoder_target_name: tuple[str, ...]
    exclude_name: tuple[str, ...] = ()
    use_fnmatch: bool = False

    @property
    def has_text_encoder_targets(self) -> bool:
        """Whether this preset wraps anything in the text encoders."""
        return bool(self.text_encoder_target_module or self.text_encoder_target_name)

    @property
    def has_unet_targets(self) -> bool:
        """Whether this preset wraps anything in the UNet."""
        return bool(self.unet_target_module or self.unet_target_name)


def builtin_presets() -> tuple[str, ...]:
    """The names of the presets shipped with the trainer, sorted."""
    return tuple(sorted(path.stem for path in PRESET_DIR.glob("*.toml")))


def load_preset(value: str | None) -> LycorisPreset:
    """The preset named ``value`` (a built-in name, or a TOML file path); ``None`` gives ``full``.

    Raises :class:`TrainerError` (option ``network_args``) for an unknown name, a missing or
    unreadable file, an unknown or unsupported key, or a value of the wrong type.
    """
    value = (value or DEFAULT_PRESET).strip()
    builtin = PRESET_DIR / f"{value}.toml"
    if "/" not in value and "\\" not in value and builtin.is_file():
        return _read(builtin, value)
    path = Path(value).expanduser()
    if path.is_file():
        return _read(path, str(path))
    shown = ", ".join(builtin_presets())
    raise TrainerError(
        f"network_args preset={value!r} is neither a built-in preset nor an existing file.",
        hint=f"Use one of {shown}, or the path of a preset .toml file (an absolute path is safest).",
        option="network_args",
    )


def _read(path: Path, name: str) -> LycorisPreset:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as problem:
        raise TrainerError(f"The LyCORIS preset file {path} cannot be read: {problem}",
                           hint="Fix the TOML syntax, or use a built-in preset such as preset=full.",
                           option="network_args") from problem
    return preset_from_dict(data, name)


def preset_from_dict(data: dict[str, Any], name: str) -> LycorisPreset:
    """Check a preset's keys and types; ``name`` is used in messages."""
    for key in data:
        if key in _UNSUPPORTED:
            raise TrainerError(f"LyCORIS preset {name}: key {key!r} is not supported.",
                               hint=f"Remove it: {_UNSUPPORTED[key]}.", option="network_args")
        if key not in _LIST_KEYS and key not in _BOOL_KEYS:
            raise TrainerError(f"LyCORIS preset {name}: unknown key {key!r}.",
                               hint="Known keys: " + ", ".join(_BOOL_KEYS + _LIST_KEYS) + ".", option="network_args")
    values: dict[str, Any] = {}
    for key in _LIST_KEYS:
        raw = data.get(key, [])
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise TrainerError(f"LyCORIS preset {name}: {key} must be a list of strings, got {raw!r}.",
                               hint=f'For example {key} = ["Transformer2DModel"].', option="network_args")
        values[key] = tuple(raw)
    for key in _BOOL_KEYS:
        raw = data.get(key, key == "enable_conv")  # lycoris wraps convolutions unless told not to
        if not isinstance(raw, bool):
            raise TrainerError(f"LyCORIS preset {name}: {key} must be true or false, got {raw!r}.",
                               hint=f"{key} = true", option="network_args")
        values[key] = raw
    preset = LycorisPreset(name=name, **values)
    if not preset.has_unet_targets and not preset.has_text_encoder_targets:
        raise TrainerError(f"LyCORIS preset {name} names no module to train.",
                           hint="Give unet_target_module or text_encoder_target_module (class names), or "
                                "*_target_name (module paths).", option="network_args")
    return preset
