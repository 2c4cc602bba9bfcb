"""Read a ``sample_prompts`` file: the prompts of the preview images made during training.

The three formats sd-scripts reads:

* ``.txt``: one prompt a line, options inline after the prompt: ``--n`` negative prompt,
  ``--w`` width, ``--h`` height, ``--d`` seed, ``--l`` CFG scale, ``--s`` steps, ``--ss`` sampler.
  Empty lines and lines starting with ``#`` are skipped.
* ``.toml``: a ``[prompt]`` table of shared values with one ``[[prompt.subset]]`` table per image
  (a plain ``[[prompt]]`` list of tables is read too).
* ``.json``: a list of objects (a string item is read like a ``.txt`` line).

Table keys: ``prompt``, ``negative_prompt``, ``width``, ``height``, ``seed``, ``scale``,
``sample_steps``, ``sample_sampler``. Values are checked here, once, so a typo fails before the
model loads instead of at the first sample an hour in.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError
from trainer.sampling.samplers import SAMPLER_SPECS

OPTION = "sample_prompts"
SUFFIXES = (".txt", ".toml", ".json")
MAX_STEPS = 1000

# Inline flag -> table key. Longer flags first so "--ss" is not read as "--s".
_INLINE_KEYS = (
    ("ss", "sample_sampler"), ("n", "negative_prompt"), ("w", "width"), ("h", "height"), ("d", "seed"),
    ("l", "scale"), ("s", "sample_steps"),
)
# Keys sd-scripts adds itself or uses for bookkeeping: dropped without a warning.
_SILENT_KEYS = ("enum", "subset")
_INTEGER_KEYS = ("width", "height", "seed", "sample_steps")


@dataclass(frozen=True)
class SamplePrompt:
    """One preview image's settings. ``None`` fields take the run's defaults (see :meth:`resolved`)."""

    index: int
    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    scale: float = 7.5
    sample_steps: int = 30
    sample_sampler: str | None = None

    def resolved(self, size: tuple[int, int], base_seed: int, sampler: str) -> "SamplePrompt":
        """Fill the unset fields: ``size`` (w, h), seed ``base_seed + index``, ``sampler``."""
        return replace(
            self,
            width=self.width or size[0],
            height=self.height or size[1],
            seed=self.seed if self.seed is not None else base_seed + self.index,
            sample_sampler=self.sample_sampler or sampler,
        )


@dataclass(frozen=True)
class PromptFile:
    """The prompts of one file and the warnings about what in it was ignored."""

    prompts: tuple[SamplePrompt, ...]
    warnings: tuple[str, ...] = ()


def parse_prompt_line(line: str) -> tuple[dict[str, Any], list[str]]:
    """Split ``a cat --n blurry --w 512`` into a table like the TOML/JSON ones; also unknown flags."""
    parts = line.split(" --")
    table: dict[str, Any] = {"prompt": parts[0].strip()}
    unknown: list[str] = []
    for part in parts[1:]:
        flag, _, value = part.strip().partition(" ")
        key = next((name for short, name in _INLINE_KEYS if flag.lower() == short), None)
        if key is None:
            unknown.append(f"--{flag}")
            continue
        table[key] = value.strip()
    return table, unknown


def _to_int(value: Any, key: str, where: str) -> int:
    problem = TrainerError(f"{where}: {key} must be a whole number, got {value!r}.",
                           hint="Fix the value in the prompts file.", option=OPTION)
    if isinstance(value, bool):
        raise problem
    if isinstance(value, int):
        return value
    try:
        # int() first: a float would round seeds above 2**53.
        return int(str(value).strip())
    except ValueError:
        pass
    try:
        number = float(str(value).strip())
    except ValueError:
        raise problem from None
    if not number.is_integer():
        raise problem
    return int(number)


def _to_float(value: Any, key: str, where: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError) as problem:
        raise TrainerError(f"{where}: {key} must be a number, got {value!r}.",
                           hint="Fix the value in the prompts file.", option=OPTION) from problem


def prompt_from_table(table: dict[str, Any], index: int, where: str) -> tuple[SamplePrompt, list[str]]:
    """Check one prompt table and turn it into a :class:`SamplePrompt`; also the ignored keys."""
    ignored = [key for key in table if key not in SamplePrompt.__dataclass_fields__ or key == "index"]
    values: dict[str, Any] = {}
    text = table.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise TrainerError(f"{where}: the prompt is empty.", hint="Every entry needs a non-empty prompt.",
                           option=OPTION)
    values["prompt"] = text.strip()
    negative = table.get("negative_prompt")
    if negative is not None:
        values["negative_prompt"] = str(negative).strip()
    for key in _INTEGER_KEYS:
        if table.get(key) is not None:
            values[key] = _to_int(table[key], key, where)
    if table.get("scale") is not None:
        values["scale"] = _to_float(table["scale"], "scale", where)
    for key in ("width", "height"):
        size = values.get(key)
        if size is not None and (size < 8 or size % 8):
            raise TrainerError(f"{where}: {key} {size} is not a positive multiple of 8.",
                               hint="Use sizes such as 512, 768 or 1024 (multiples of 8; 64 for best results).",
                               option=OPTION)
    steps = values.get("sample_steps")
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise TrainerError(f"{where}: sample_steps {steps} is outside 1-{MAX_STEPS}.",
                           hint="20-30 steps is usual.", option=OPTION)
    if values.get("seed") is not None and values["seed"] < 0:
        raise TrainerError(f"{where}: seed {values['seed']} is negative.", hint="Use a seed of 0 or more.",
                           option=OPTION)
    sampler = table.get("sample_sampler")
    if sampler is not None:
        if str(sampler).strip().lower() not in SAMPLER_SPECS:
            raise TrainerError(f"{where}: unknown sampler {sampler!r}.",
                               hint=f"Use one of: {', '.join(SAMPLER_SPECS)}.", option=OPTION)
        values["sample_sampler"] = str(sampler).strip().lower()
    return SamplePrompt(index=index, **values), ignored


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: Windows editors may add a BOM
    except FileNotFoundError as problem:
        raise TrainerError(f"The prompts file {path} does not exist.",
                           hint="Check sample_prompts; a relative path is read from the config file's folder.",
                           option=OPTION) from problem
    except UnicodeDecodeError as problem:
        raise TrainerError(f"The prompts file {path} is not UTF-8 text.", hint="Save it as UTF-8.",
                           option=OPTION) from problem


def _toml_entries(path: Path) -> list[Any]:
    from trainer.config import read_toml

    data = read_toml(path)
    block = data.get("prompt")
    if isinstance(block, list):
        return block
    if isinstance(block, dict) and isinstance(block.get("subset"), list):
        shared = {key: value for key, value in block.items() if key != "subset"}
        return [{**shared, **entry} if isinstance(entry, dict) else entry for entry in block["subset"]]
    raise TrainerError(f"{path} has no prompts.",
                       hint='Write a [prompt] table with one [[prompt.subset]] per image, each with prompt = "...".',
                       option=OPTION)


def _json_entries(path: Path) -> list[Any]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as problem:
        raise TrainerError(f"{path} is not valid JSON: {problem}", hint="Check brackets, quotes and commas.",
                           option=OPTION) from problem
    if not isinstance(data, list):
        raise TrainerError(f"{path} must hold a list of prompts.",
                           hint='Write [{"prompt": "...", "width": 512}, ...].', option=OPTION)
    return data


def load_prompts(path: str | Path) -> PromptFile:
    """Read and check every prompt of a ``.txt``, ``.toml`` or ``.json`` file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TrainerError(f"The prompts file {path} is not .txt, .toml or .json.",
                           hint="Rename it to the format it is written in.", option=OPTION)
    if not path.is_file():
        raise TrainerError(f"The prompts file {path} does not exist.",
                           hint="Check sample_prompts; a relative path is read from the config file's folder.",
                           option=OPTION)
    entries: list[tuple[Any, str]]
    if suffix == ".txt":
        lines = _read_text(path).splitlines()
        entries = [(line, f"{path.name} line {number}") for number, line in enumerate(lines, 1)
                   if line.strip() and not line.lstrip().startswith("#")]
    else:
        items = _toml_entries(path) if suffix == ".toml" else _json_entries(path)
        entries = [(item, f"{path.name} entry {number}") for number, item in enumerate(items, 1)]
    prompts: list[SamplePrompt] = []
    warnings: list[str] = []
    for raw, where in entries:
        if isinstance(raw, str):
            table, unknown = parse_prompt_line(raw.strip())
        elif isinstance(raw, dict):
            table, unknown = raw, []
        else:
            raise TrainerError(f"{where} is neither a prompt text nor a table.",
                               hint="Each entry needs at least prompt = \"...\".", option=OPTION)
        prompt, ignored = prompt_from_table(table, len(prompts), where)
        prompts.append(prompt)
        skipped = unknown + [key for key in ignored if key not in _SILENT_KEYS]
        if skipped:
            # Other families' options (--g, --cn, ...) are ignored, as a reused prompts file should still work.
            warnings.append(f"{where}: {', '.join(skipped)} ignored; this trainer reads "
                            "--n --w --h --d --l --s --ss / the keys prompt, negative_prompt, width, height, "
                            "seed, scale, sample_steps, sample_sampler.")
    if not prompts:
        raise TrainerError(f"The prompts file {path} holds no prompts.",
                           hint="Add one prompt a line (lines starting with # are comments).", option=OPTION)
    return PromptFile(tuple(prompts), tuple(warnings))
