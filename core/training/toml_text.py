"""Write the small TOML files the trainer reads, readable by a person: one value per line, lists inline.

The training config is sectioned by the options table's groups (the trainer ignores section
names); the dataset config uses ``[general]``, ``[[datasets]]`` and ``[[datasets.subsets]]``.
Every file written here is parsed back by tests, so the text is valid TOML.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


def toml_value(value: Any) -> str:
    """One TOML value: booleans, numbers, strings (JSON escaping is valid TOML) and flat lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"TOML cannot hold {value}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _lines(values: Mapping[str, Any]) -> list[str]:
    return [f"{key} = {toml_value(value)}" for key, value in values.items() if value is not None]


def sections_text(header: str, sections: Mapping[str, Mapping[str, Any]]) -> str:
    """``# header`` comment lines, then one ``[section]`` per non-empty mapping."""
    parts = [_comment(header)]
    for name, values in sections.items():
        lines = _lines(values)
        if lines:
            parts.append(f"[{name}]\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def dataset_text(header: str, general: Mapping[str, Any], datasets: Sequence[Mapping[str, Any]]) -> str:
    """A dataset config: ``[general]``, then each dataset with its ``[[datasets.subsets]]``."""
    parts = [_comment(header)]
    if general:
        parts.append("[general]\n" + "\n".join(_lines(general)) + "\n")
    for dataset in datasets:
        own = {key: value for key, value in dataset.items() if key != "subsets"}
        parts.append("\n".join(["[[datasets]]", *_lines(own)]) + "\n")
        for subset in dataset.get("subsets", ()):
            parts.append("\n".join(["[[datasets.subsets]]", *_lines(subset)]) + "\n")
    return "\n".join(parts)


def _comment(text: str) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in text.splitlines())
