"""Generate ``docs/OPTIONS.md`` from the options table.

``python -m trainer.options.docs`` rewrites the file; ``--check`` exits 1 when it is stale (a test
runs the same comparison, so a changed row without a regenerated doc fails the suite).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.options import GROUP_TITLES, IGNORED_OPTIONS, OPTIONS, Option, range_text
from trainer.options.schema import DATASET, SUBSET, TRAIN

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "OPTIONS.md"

_WHERE = {TRAIN: "training config", DATASET: "dataset", SUBSET: "subset"}


def _default_text(option: Option) -> str:
    if option.default is None:
        return "(not set)"
    if isinstance(option.default, bool):
        return "true" if option.default else "false"
    if isinstance(option.default, list):
        return "[" + ", ".join(str(item) for item in option.default) + "]"
    return f"`{option.default}`"


def _row(option: Option) -> list[str]:
    status = "" if option.implemented else " *(accepted, not implemented yet)*"
    cuda = " Needs CUDA." if option.needs_cuda else ""
    lines = [f"### `{option.name}`{status}", ""]
    if option.title:  # the label the training panel shows for it
        lines += [f"**{option.title}**", ""]
    lines.append(f"{option.help}{cuda}")
    lines.append("")
    facts = [f"type: {option.kind}", f"default: {_default_text(option)}", f"mode: {option.level}"]
    allowed = range_text(option)
    if allowed:
        facts.append(f"allowed: {allowed}")
    facts.append("where: " + ", ".join(_WHERE[scope] for scope in (TRAIN, DATASET, SUBSET) if scope in option.scopes))
    lines.append(" | ".join(facts))
    if option.explanation:
        lines += ["", option.explanation]
    lines.append("")
    return lines


def render() -> str:
    """The whole Markdown document."""
    lines = [
        "# Training options",
        "",
        "Generated from the options table in `trainer/options/` by `python -m trainer.options.docs`;",
        "do not edit by hand. Option names are sd-scripts' names, so sd-scripts TOML files load as they are.",
        "Basic options are the ones the trainer notebook shows in basic mode; the bold line under an option's",
        "name is the plain-language label the notebook shows for it.",
        "",
    ]
    groups: dict[str, list[Option]] = {}
    for option in OPTIONS:
        groups.setdefault(option.group, []).append(option)
    lines.append("Groups: " + ", ".join(f"[{GROUP_TITLES[g]}](#{_anchor(GROUP_TITLES[g])})" for g in groups))
    lines.append("")
    for group, members in groups.items():
        lines += [f"## {GROUP_TITLES[group]}", ""]
        for option in members:
            lines += _row(option)
    lines += ["## Accepted and ignored", "", "sd-scripts options that load without error but have no effect here:", ""]
    lines += [f"- `{name}`: {reason}" for name, reason in IGNORED_OPTIONS.items() if reason]
    lines.append("")
    return "\n".join(lines)


def _anchor(title: str) -> str:
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -")
    return kept.replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    """Write docs/OPTIONS.md, or with --check report whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/OPTIONS.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
        if current != text:
            print(f"{DOC_PATH} is stale: run python -m trainer.options.docs", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
