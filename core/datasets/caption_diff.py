"""Which tags an edit keeps, adds and removes: the before/after view of the caption panel's preview."""
from __future__ import annotations

from dataclasses import dataclass

from core.datasets.captions import tag_key
from core.datasets.tags import split_tags

KEPT, ADDED, REMOVED = "kept", "added", "removed"


@dataclass(frozen=True)
class TagChange:
    """One tag of a before/after pair and what happened to it."""

    tag: str
    change: str  # KEPT, ADDED or REMOVED


def tag_diff(before: str | None, after: str, separator: str = ",") -> list[TagChange]:
    """The tags of ``after`` in order (kept or added), then the tags of ``before`` that are gone.

    Tags compare as the caption editor compares them (case and underscores ignored). A tag that
    only moved (a trigger word put first) counts as kept. ``before`` None: a new caption file.
    """
    old = split_tags(before or "", separator)
    new = split_tags(after, separator)
    old_keys = {tag_key(tag) for tag in old}
    new_keys = {tag_key(tag) for tag in new}
    changes = [TagChange(tag, KEPT if tag_key(tag) in old_keys else ADDED) for tag in new]
    changes += [TagChange(tag, REMOVED) for tag in old if tag_key(tag) not in new_keys]
    return changes
