"""What one training option is, and how a raw value (from TOML or the command line) becomes a typed one.

The options table (``trainer/options/table_*.py``) is a list of :class:`Option` rows. Everything
that knows about options reads those rows: the validator here, the config writer, the widgets and
``docs/OPTIONS.md``. So adding an option is adding a row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from trainer.errors import TrainerError

# Value kinds. Kept as plain strings so the widgets and the docs can switch on them without
# importing anything from here but the table.
BOOL = "bool"
INT = "int"
FLOAT = "float"
NUMBER = "number"  # int or float, e.g. lr_warmup_steps (a count, or a ratio below 1)
STR = "str"
PATH = "path"  # a file or folder; relative values resolve against the config file's folder
CHOICE = "choice"
STR_LIST = "str_list"  # e.g. network_args = ["algo=loha", "conv_dim=8"]
FLOAT_LIST = "float_list"  # one value or a list, e.g. text_encoder_lr for SDXL's two encoders
RESOLUTION = "resolution"  # 512, "512,768" or [512, 768]
KINDS = frozenset({BOOL, INT, FLOAT, NUMBER, STR, PATH, CHOICE, STR_LIST, FLOAT_LIST, RESOLUTION})

# Where an option may appear. TRAIN is the training config (and the command line); DATASET and
# SUBSET are the levels of the dataset config ([general] takes both).
TRAIN = "train"
DATASET = "dataset"
SUBSET = "subset"

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One row of the options table.

    ``default`` None means "not set". ``choices`` holds the stored values; ``labels`` maps some
    of them to what a dropdown shows (labels are never used as values). ``implemented`` False
    marks an option we accept for compatibility but do not act on yet: it is warned about.
    ``title`` is a short plain-language name for people who never saw a TOML file ("Network size
    (dim)"); the panel shows it as the label, with ``name`` in the tooltip and the explanation.
    """

    name: str
    kind: str
    default: Any
    group: str
    help: str
    explanation: str = ""
    level: str = "advanced"
    choices: tuple[Any, ...] = ()
    labels: tuple[tuple[Any, str], ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({TRAIN}))
    implemented: bool = True
    needs_cuda: bool = False
    allow_class_path: bool = False  # a CHOICE that also takes any "module.Class" path
    title: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")
        if self.kind == CHOICE and not self.choices:
            raise ValueError(f"option {self.name}: a choice needs choices")
        if self.level not in ("basic", "advanced"):
            raise ValueError(f"option {self.name}: level must be basic or advanced")

    @property
    def display_name(self) -> str:
        """The title when there is one, else the option name."""
        return self.title or self.name

    def label_for(self, value: Any) -> str:
        """What a dropdown shows for ``value``."""
        return dict(self.labels).get(value, str(value))

    def coerce(self, raw: Any, source: str = "") -> Any:
        """Turn ``raw`` (a TOML value or command-line text) into this option's type, or raise.

        ``source`` names where the value came from, for the error message.
        """
        where = f" (in {source})" if source else ""
        if raw is None:
            return None
        try:
            value = _COERCERS[self.kind](raw)
        except (TypeError, ValueError) as problem:
            raise TrainerError(
                f"Option '{self.name}'{where} must be {_KIND_WORDS[self.kind]}, got {raw!r}.",
                hint=f"{self.help} Example: {self.name} = {_example(self)}",
                option=self.name,
            ) from problem
        self._check_range(value, where)
        return value

    def _check_range(self, value: Any, where: str) -> None:
        if self.kind == CHOICE:
            # Case-insensitive match for user convenience, but the table's spelling is stored.
            lowered = {str(choice).lower(): choice for choice in self.choices}
            if self.allow_class_path and "." in str(value).strip(".") and str(value).lower() not in lowered:
                return
            if str(value).lower() not in lowered:
                shown = ", ".join(str(choice) for choice in self.choices)
                raise TrainerError(
                    f"Option '{self.name}'{where} is {value!r}, which is not one of: {shown}.",
                    hint=self.help,
                    option=self.name,
                )
            return
        if self.choices and value not in self.choices:
            shown = ", ".join(str(choice) for choice in self.choices)
            raise TrainerError(
                f"Option '{self.name}'{where} is {value!r}, which is not one of: {shown}.",
                hint=self.help,
                option=self.name,
            )
        numbers = value if isinstance(value, list) and self.kind in (FLOAT_LIST, RESOLUTION) else [value]
        for number in numbers:
            if not isinstance(number, (int, float)) or isinstance(number, bool):
                continue
            if isinstance(number, float) and not math.isfinite(number):
                raise TrainerError(f"Option '{self.name}'{where} must be a finite number, got {number}.", option=self.name)
            low_ok = self.minimum is None or number >= self.minimum
            high_ok = self.maximum is None or number <= self.maximum
            if not (low_ok and high_ok):
                raise TrainerError(
                    f"Option '{self.name}'{where} is {number}, outside the allowed range {_range_text(self)}.",
                    hint=self.explanation or self.help,
                    option=self.name,
                )

    def normalise(self, value: Any) -> Any:
        """The stored spelling of a choice (``AdamW8bit`` for ``adamw8bit``); other values unchanged."""
        if self.kind != CHOICE or value is None:
            return value
        lowered = {str(choice).lower(): choice for choice in self.choices}
        return lowered.get(str(value).lower(), value)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(raw)


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if not raw.is_integer():
            raise ValueError(raw)
        return int(raw)
    text = str(raw).strip()
    number = float(text)
    if not number.is_integer():
        raise ValueError(raw)
    return int(number)


def _to_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError(raw)
    return float(str(raw).strip()) if isinstance(raw, str) else float(raw)


def _to_number(raw: Any) -> int | float:
    value = _to_float(raw)
    return int(value) if value.is_integer() and value >= 1 else value


def _to_str(raw: Any) -> str:
    if isinstance(raw, (list, dict, bool)):
        raise ValueError(raw)
    return str(raw)


def _to_str_list(raw: Any) -> list[str]:
    if isinstance(raw, str):
        # The command line gives one string per value; a single string is one item.
        return [raw] if raw.strip() else []
    if isinstance(raw, (list, tuple)):
        return [str(item) for item in raw]
    raise ValueError(raw)


def _to_float_list(raw: Any) -> float | list[float]:
    if isinstance(raw, (list, tuple)):
        values = [_to_float(item) for item in raw]
        return values[0] if len(values) == 1 else values
    if isinstance(raw, str) and "," in raw:
        return _to_float_list([part for part in raw.split(",") if part.strip()])
    return _to_float(raw)


def _to_resolution(raw: Any) -> list[int]:
    if isinstance(raw, (list, tuple)):
        parts = [_to_int(item) for item in raw]
    else:
        text = str(raw).replace("x", ",").replace("X", ",")
        parts = [_to_int(item) for item in text.split(",") if item.strip()]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError(raw)
    return parts


_COERCERS = {
    BOOL: _to_bool,
    INT: _to_int,
    FLOAT: _to_float,
    NUMBER: _to_number,
    STR: _to_str,
    PATH: _to_str,
    CHOICE: _to_str,
    STR_LIST: _to_str_list,
    FLOAT_LIST: _to_float_list,
    RESOLUTION: _to_resolution,
}

_KIND_WORDS = {
    BOOL: "true or false",
    INT: "a whole number",
    FLOAT: "a number",
    NUMBER: "a number",
    STR: "text",
    PATH: "a file or folder path",
    CHOICE: "one of the listed choices",
    STR_LIST: "a list of text values",
    FLOAT_LIST: "a number or a list of numbers",
    RESOLUTION: "a size such as 1024 or [832, 1216]",
}


def _range_text(option: Option) -> str:
    low = "-inf" if option.minimum is None else f"{option.minimum:g}"
    high = "inf" if option.maximum is None else f"{option.maximum:g}"
    return f"[{low}, {high}]"


def _example(option: Option) -> str:
    if option.kind == CHOICE:
        return repr(option.choices[0]) if isinstance(option.choices[0], str) else str(option.choices[0])
    if option.default is None:
        return {BOOL: "true", INT: "1", FLOAT: "0.0001", NUMBER: "100", STR_LIST: '["key=value"]',
                RESOLUTION: "1024", FLOAT_LIST: "0.0001"}.get(option.kind, '"..."')
    if isinstance(option.default, bool):
        return "true" if option.default else "false"
    return repr(option.default) if isinstance(option.default, (str, list)) else str(option.default)


def range_text(option: Option) -> str:
    """The allowed values of ``option`` as one short line, for docs and widgets."""
    if option.kind == CHOICE:
        return ", ".join(str(choice) for choice in option.choices)
    if option.minimum is None and option.maximum is None:
        return ""
    return _range_text(option)
