"""Read sd-scripts-style training configuration: TOML files plus command-line overrides.

Section headers in the training config are ignored, as sd-scripts does, so both flat sd-scripts
configs and the sectioned configs of the notebooks load. Command-line keys override the file.
Every value is checked against the options table once, here; later stages get typed values.
Relative paths resolve against the folder of the file they were written in.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError
from trainer.options import BY_NAME, IGNORED_OPTIONS, NOT_IMPLEMENTED, OPTIONS, SECRET_KEYS, TRAIN, get_option
from trainer.options.schema import PATH, Option

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Path options that may instead name a Hugging Face repo ("owner/name"): only resolved when local.
_MAYBE_REPO = {"pretrained_model_name_or_path", "model_config", "vae"}
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, with errors that name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise TrainerError(f"Config file not found: {path}", hint="Check the path; it is relative to where you run the command.")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as problem:
        raise TrainerError(
            f"{path} is not valid TOML: {problem}",
            hint='Strings need quotes (output_name = "mylora"), lists brackets (network_args = ["conv_dim=8"]).',
        ) from problem
    except UnicodeDecodeError as problem:
        raise TrainerError(f"{path} is not UTF-8 text.", hint="Save the file as UTF-8.") from problem


def flatten_sections(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Drop section headers: ``[training] max_train_epochs = 10`` is ``max_train_epochs = 10``."""
    flat: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for inner_key, inner_value in value.items():
                if isinstance(inner_value, dict):
                    raise TrainerError(
                        f"{source}: section [{key}.{inner_key}] is nested too deeply.",
                        hint="A training config has at most one level of sections; put the keys directly under a section.",
                    )
                if inner_key in flat:
                    raise TrainerError(
                        f"{source}: '{inner_key}' is set twice (in [{owners[inner_key]}] and [{key}]).",
                        hint="Keep one of them.", option=inner_key,
                    )
                flat[inner_key], owners[inner_key] = inner_value, key
        else:
            if key in flat:
                raise TrainerError(f"{source}: '{key}' is set twice.", hint="Keep one of them.", option=key)
            flat[key], owners[key] = value, "top level"
    return flat


def parse_cli_overrides(argv: Sequence[str]) -> dict[str, Any]:
    """``--key value``, ``--key v1 v2`` (lists), ``--key=value`` and bare ``--flag`` (true)."""
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or token == "--":
            raise TrainerError(f"Unexpected command-line argument {token!r}.", hint="Options look like --network_dim 16.")
        name, has_equals, inline = token[2:].partition("=")
        name = name.replace("-", "_")
        values: list[str] = [inline] if has_equals else []
        index += 1
        while not has_equals and index < len(argv) and not _looks_like_option(argv[index]):
            values.append(argv[index])
            index += 1
        if not values:
            overrides[name] = True
        elif len(values) == 1:
            overrides[name] = values[0]
        else:
            overrides[name] = values
    return overrides


def _looks_like_option(token: str) -> bool:
    return token.startswith("--") and len(token) > 2 and not token[2:3].isdigit()


def resolve_path_value(name: str, value: str, base: Path) -> str:
    """Make a relative path absolute against ``base``; leave Hub repo ids ("owner/name") alone."""
    text = str(value).strip()
    if not text:
        return text
    candidate = Path(text).expanduser()
    if candidate.is_absolute():
        return str(candidate)
    resolved = (base / candidate).resolve()
    if name in _MAYBE_REPO:
        looks_local = text.startswith((".", "~")) or text.lower().endswith(_MODEL_SUFFIXES) or resolved.exists()
        if not looks_local and text.count("/") == 1:
            return text  # a Hugging Face repo id
    return str(resolved)


@dataclass(frozen=True)
class TrainingConfig(Mapping[str, Any]):
    """Every training-config option with its typed value (the default when unset).

    Reads like a mapping (``config["network_dim"]``) and like an object (``config.network_dim``).
    ``explicit`` holds the names the user set; ``sources`` says where each came from.
    """

    values: Mapping[str, Any]
    explicit: frozenset[str] = frozenset()
    sources: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    config_dir: Path | None = None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(name)

    def is_set(self, name: str) -> bool:
        """True when the user gave ``name`` a value (in a file or on the command line)."""
        return name in self.explicit

    def replace(self, **changes: Any) -> "TrainingConfig":
        """A copy with some values changed (validated like any other value)."""
        values = dict(self.values)
        for name, raw in changes.items():
            option = get_option(name)
            values[name] = option.normalise(option.coerce(raw, "code"))
        return TrainingConfig(values, self.explicit | set(changes), self.sources, self.warnings, self.config_dir)


def _validated(option: Option, raw: Any, source: str, base: Path) -> Any:
    value = option.normalise(option.coerce(raw, source))
    if option.kind == PATH and value is not None:
        value = resolve_path_value(option.name, value, base)
    return value


def load_training_config(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> TrainingConfig:
    """Merge defaults, the config file and command-line overrides, validating every value."""
    values: dict[str, Any] = {o.name: _copy_default(o.default) for o in OPTIONS if TRAIN in o.scopes}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    layers: list[tuple[str, Path, Mapping[str, Any]]] = []
    config_dir = None
    if config_file is not None:
        config_file = Path(config_file).expanduser().resolve()
        config_dir = config_file.parent
        layers.append((str(config_file), config_dir, flatten_sections(read_toml(config_file), str(config_file))))
    if overrides:
        layers.append(("the command line", Path(cwd or Path.cwd()).resolve(), overrides))
    for source, base, layer in layers:
        for name, raw in layer.items():
            if name in IGNORED_OPTIONS and name not in BY_NAME and name not in SECRET_KEYS:
                warnings.append(f"'{name}' (in {source}) is ignored: {IGNORED_OPTIONS[name]}")
                continue
            option = get_option(name, TRAIN, source)
            values[name] = _validated(option, raw, source, base)
            sources[name] = source
    for name in sorted(sources):
        if name in NOT_IMPLEMENTED and BY_NAME[name].default != values[name]:
            warnings.append(f"'{name}' is {NOT_IMPLEMENTED[name]}; this run does not use it.")
    return TrainingConfig(values, frozenset(sources), sources, tuple(warnings), config_dir)


def _copy_default(default: Any) -> Any:
    return list(default) if isinstance(default, list) else default
