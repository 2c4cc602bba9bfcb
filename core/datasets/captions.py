"""Bulk caption edits over one folder or a tree: plan (a dry-run preview), then apply with a snapshot.

Each edit is a small frozen dataclass with ``edit(caption) -> caption`` on the caption text the
trainer reads (the first non-empty line). :func:`plan_edits` runs a chain of them over every
image's caption file and returns before/after bytes per file without writing anything;
:func:`apply_plan` stores a snapshot (:mod:`core.datasets.caption_history`) and only then writes,
atomically. ``undo`` brings the previous bytes back exactly.

Only that one line changes: a UTF-8 BOM, the line ending (LF or CRLF), surrounding whitespace
and any further lines stay as they were. Tags compare case-insensitively with underscores and
spaces alike (``Long_Hair`` is ``long hair``).
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.datasets.caption_history import FileChange, Snapshot, write_snapshot
from core.datasets.files import atomic_write_bytes, list_images, require_folder
from core.datasets.tags import join_tags, replace_underscores, split_tags
from core.errors import CoreError
from trainer.data.captions import caption_path

_BOM = b"\xef\xbb\xbf"
MATCH_MODES = ("exact", "glob", "regex")


def tag_key(tag: str) -> str:
    """How tags are compared: case-folded, underscores as spaces, single spaces."""
    return " ".join(tag.replace("_", " ").casefold().split())


def _quoted(items: Sequence[str], shown: int = 3) -> str:
    """``'a', 'b' and 2 more``: tags named in a description, a long list cut short."""
    words = [f"'{item.strip()}'" for item in items if item.strip()]
    text = ", ".join(words[:shown])
    return text + (f" and {len(words) - shown} more" if len(words) > shown else "")


@dataclass(frozen=True)
class AddTrigger:
    """Put ``word`` at ``position`` (0 = first; None = last). Present elsewhere: moved there. Idempotent."""

    word: str
    position: int | None = 0

    def describe(self) -> str:
        """Plain words for the undo list, e.g. "add trigger word 'ohwx' at the front"."""
        where = ("at the end" if self.position is None else "at the front" if self.position <= 0
                 else f"as tag number {self.position + 1}")
        return f"add trigger word '{self.word.strip()}' {where}"

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption with the trigger word in place."""
        tags = [t for t in split_tags(caption, separator) if tag_key(t) != tag_key(self.word)]
        where = len(tags) if self.position is None else min(max(self.position, 0), len(tags))
        tags.insert(where, self.word.strip())
        return join_tags(tags, separator)


@dataclass(frozen=True)
class RemoveTags:
    """Remove tags equal to any of ``tags`` (``match="exact"``), or matching glob/regex patterns."""

    tags: tuple[str, ...]
    match: str = "exact"

    def describe(self) -> str:
        """Plain words for the undo list."""
        how = {"glob": "matching ", "regex": "matching the pattern(s) "}.get(self.match, "")
        return f"remove tags {how}{_quoted(self.tags)}"

    def _matches(self, tag: str) -> bool:
        key = tag_key(tag)
        if self.match == "exact":
            return key in {tag_key(t) for t in self.tags}
        if self.match == "glob":
            return any(fnmatch.fnmatchcase(key, tag_key(p)) for p in self.tags)
        return any(re.fullmatch(p, tag.strip(), flags=re.IGNORECASE) for p in self.tags)

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption without the matching tags."""
        tags = split_tags(caption, separator)
        kept = [t for t in tags if not self._matches(t)]
        return caption if len(kept) == len(tags) else join_tags(kept, separator)


@dataclass(frozen=True)
class ReplaceText:
    """Replace a whole tag (``substring=False``; an empty ``new`` removes it) or any occurrence of text."""

    old: str
    new: str
    substring: bool = False

    def describe(self) -> str:
        """Plain words for the undo list."""
        if self.substring:
            return f"replace the text '{self.old}' with '{self.new}'"
        if not self.new.strip():
            return f"remove tag '{self.old.strip()}'"
        return f"replace tag '{self.old.strip()}' with '{self.new.strip()}'"

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption with the replacement made."""
        if self.substring:
            return caption.replace(self.old, self.new)
        tags = split_tags(caption, separator)
        if not any(tag_key(t) == tag_key(self.old) for t in tags):
            return caption
        replaced = [self.new.strip() if tag_key(t) == tag_key(self.old) else t for t in tags]
        return join_tags([t for t in replaced if t], separator)


@dataclass(frozen=True)
class SortTags:
    """Sort tags alphabetically, leaving the first ``keep_first`` (e.g. the trigger word) in place."""

    keep_first: int = 0
    reverse: bool = False

    def describe(self) -> str:
        """Plain words for the undo list."""
        order = "in reverse alphabetical order" if self.reverse else "alphabetically"
        kept = f" (first {self.keep_first} kept in place)" if self.keep_first else ""
        return f"sort tags {order}{kept}"

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption with its tags sorted."""
        tags = split_tags(caption, separator)
        fixed, rest = tags[: self.keep_first], tags[self.keep_first :]
        ordered = fixed + sorted(rest, key=tag_key, reverse=self.reverse)
        return caption if ordered == tags else join_tags(ordered, separator)


@dataclass(frozen=True)
class DedupeTags:
    """Drop repeated tags, keeping each one's first occurrence."""

    def describe(self) -> str:
        """Plain words for the undo list."""
        return "remove repeated tags"

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption without repeats."""
        tags = split_tags(caption, separator)
        seen: set[str] = set()
        kept = [t for t in tags if not (tag_key(t) in seen or seen.add(tag_key(t)))]
        return caption if len(kept) == len(tags) else join_tags(kept, separator)


@dataclass(frozen=True)
class ReplaceUnderscores:
    """``long_hair`` -> ``long hair`` in every tag; kaomoji such as ``^_^`` kept."""

    def describe(self) -> str:
        """Plain words for the undo list."""
        return "replace underscores in tags with spaces"

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption with underscores replaced."""
        tags = split_tags(caption, separator)
        changed = [replace_underscores(t) for t in tags]
        return caption if changed == tags else join_tags(changed, separator)


@dataclass(frozen=True)
class AddPrefix:
    """Put ``text`` (one or more tags) at the start, unless the caption already starts with it."""

    text: str

    def describe(self) -> str:
        """Plain words for the undo list."""
        return "add " + _quoted(split_tags(self.text)) + " at the front"

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption with the prefix."""
        prefix, tags = split_tags(self.text, separator), split_tags(caption, separator)
        if [tag_key(t) for t in tags[: len(prefix)]] == [tag_key(t) for t in prefix]:
            return caption
        return join_tags(prefix + tags, separator)


@dataclass(frozen=True)
class AddSuffix:
    """Put ``text`` (one or more tags) at the end, unless the caption already ends with it."""

    text: str

    def describe(self) -> str:
        """Plain words for the undo list."""
        return "add " + _quoted(split_tags(self.text)) + " at the end"

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption with the suffix."""
        suffix, tags = split_tags(self.text, separator), split_tags(caption, separator)
        if suffix and [tag_key(t) for t in tags[-len(suffix) :]] == [tag_key(t) for t in suffix]:
            return caption
        return join_tags(tags + suffix, separator)


@dataclass(frozen=True)
class RemovePrefix:
    """Remove ``text`` (one or more tags) from the start when the caption starts with it."""

    text: str

    def describe(self) -> str:
        """Plain words for the undo list."""
        return "remove " + _quoted(split_tags(self.text)) + " from the front"

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption without the prefix."""
        prefix, tags = split_tags(self.text, separator), split_tags(caption, separator)
        if prefix and [tag_key(t) for t in tags[: len(prefix)]] == [tag_key(t) for t in prefix]:
            return join_tags(tags[len(prefix) :], separator)
        return caption


@dataclass(frozen=True)
class RemoveSuffix:
    """Remove ``text`` (one or more tags) from the end when the caption ends with it."""

    text: str

    def describe(self) -> str:
        """Plain words for the undo list."""
        return "remove " + _quoted(split_tags(self.text)) + " from the end"

    def edit(self, caption: str, separator: str = ",") -> str:
        """The caption without the suffix."""
        suffix, tags = split_tags(self.text, separator), split_tags(caption, separator)
        if suffix and len(tags) >= len(suffix) and [tag_key(t) for t in tags[-len(suffix) :]] == [tag_key(t) for t in suffix]:
            return join_tags(tags[: -len(suffix)], separator)
        return caption


CaptionEdit = (AddTrigger | RemoveTags | ReplaceText | SortTags | DedupeTags | ReplaceUnderscores
               | AddPrefix | AddSuffix | RemovePrefix | RemoveSuffix)
_CREATES = (AddTrigger, AddPrefix, AddSuffix)  # the edits that make sense on an image with no caption yet


def check_edit(edit: CaptionEdit) -> None:
    """Refuse edits that cannot work (empty trigger word, bad regex, unknown match mode)."""
    if isinstance(edit, AddTrigger) and not edit.word.strip():
        raise CoreError("The trigger word is empty.", hint="Type the word, e.g. 'ohwx'.")
    if isinstance(edit, RemoveTags):
        if edit.match not in MATCH_MODES:
            raise CoreError(f"Unknown match mode {edit.match!r}.", hint=f"Use one of {', '.join(MATCH_MODES)}.")
        if not any(t.strip() for t in edit.tags):
            raise CoreError("No tags to remove were given.", hint="Give at least one tag or pattern.")
        if edit.match == "regex":
            for pattern in edit.tags:
                try:
                    re.compile(pattern)
                except re.error as problem:
                    raise CoreError(f"The pattern {pattern!r} is not a valid regular expression: {problem}.",
                                    hint="Use glob mode ('*hair') for simple wildcards.") from problem
    if isinstance(edit, ReplaceText) and not edit.old.strip():
        raise CoreError("The text to replace is empty.", hint="Give the tag or text to search for.")


# --- files ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaptionPreview:
    """Before and after caption text of one file, for the dry-run preview."""

    path: Path
    before: str | None  # None: the file does not exist yet
    after: str


@dataclass(frozen=True)
class EditPlan:
    """What applying the edits would write. Nothing has been written when you hold one."""

    folder: Path
    description: str
    changes: tuple[FileChange, ...]
    previews: tuple[CaptionPreview, ...]
    unchanged: int
    skipped: tuple[str, ...]  # caption files that cannot be edited (not UTF-8), with why

    def preview_lines(self, limit: int = 50) -> list[str]:
        """``name: before -> after`` per changed file, for the CLI and the panel."""
        lines = [f"{self.description}: {len(self.changes)} file(s) would change, {self.unchanged} unchanged."]
        for preview in self.previews[:limit]:
            shown = preview.path.relative_to(self.folder)
            lines.append(f"  {shown}\n    - {'(no caption file)' if preview.before is None else preview.before}\n    + {preview.after}")
        if len(self.previews) > limit:
            lines.append(f"  ... and {len(self.previews) - limit} more")
        lines += [f"  skipped {reason}" for reason in self.skipped]
        return lines


def _split_caption_bytes(raw: bytes) -> tuple[bytes, str, str, str]:
    """(bom, text before the caption, caption, text after): the caption is the first non-empty line, stripped."""
    bom = _BOM if raw.startswith(_BOM) else b""
    text = raw[len(bom) :].decode("utf-8")
    position = 0
    for line in text.splitlines(keepends=True):
        content = line.strip()
        if content:
            start = position + line.index(content)
            return bom, text[:start], content, text[start + len(content) :]
        position += len(line)
    return bom, "", "", text


def edited_bytes(raw: bytes | None, edits: Sequence[CaptionEdit], separator: str = ",") -> bytes | None:
    """The file's new bytes after ``edits`` (None when nothing changes). ``raw`` None: a new file."""
    if raw is None:
        caption = ""
        for edit in edits:
            caption = edit.edit(caption, separator)
        return (caption + "\n").encode("utf-8") if caption else None
    bom, head, caption, tail = _split_caption_bytes(raw)
    new = caption
    for edit in edits:
        new = edit.edit(new, separator)
    if new == caption:
        return None
    return bom + (head + new + tail).encode("utf-8")


def _has_image_header(path: Path) -> bool:
    """Cheap check (header only, no decoding) that ``path`` is an image at all."""
    from PIL import Image  # only when a caption is about to be created: the panels open without Pillow

    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001 - Pillow raises many types for non-images
        return False


def describe(edits: Sequence[CaptionEdit]) -> str:
    """A one-line plain-language description of an edit chain, stored in the snapshot and shown by Undo."""
    return ", then ".join(edit.describe() for edit in edits)


def plan_edits(
    folder: Path,
    edits: Sequence[CaptionEdit],
    *,
    recursive: bool = False,
    caption_extension: str = ".txt",
    separator: str = ",",
    create_missing: bool = True,
) -> EditPlan:
    """The dry run: what ``edits`` would do to the caption of every image in ``folder``.

    Images without a caption get one only from edits that add something (trigger word, prefix,
    suffix) and only when ``create_missing``. Caption files without an image are not touched.
    """
    if not edits:
        raise CoreError("No caption edit was chosen.", hint="Pick at least one edit.")
    for edit in edits:
        check_edit(edit)
    folder = require_folder(folder, "caption folder")
    creating = create_missing and any(isinstance(edit, _CREATES) for edit in edits)
    changes, previews, skipped, unchanged = [], [], [], 0
    seen: set[Path] = set()
    for image in list_images(folder, recursive):
        path = caption_path(image, caption_extension)
        if path in seen:  # img.png and img.jpg share img.txt: edit it once
            continue
        seen.add(path)
        raw = path.read_bytes() if path.is_file() else None
        if raw is None and (not creating or not _has_image_header(image)):
            continue  # no caption for a file that is not even an image (validation reports those)
        try:
            after = edited_bytes(raw, edits, separator)
        except UnicodeDecodeError:
            skipped.append(f"{path}: not UTF-8 text")
            continue
        if after is None:
            unchanged += 1
            continue
        changes.append(FileChange(path, raw, after))
        previews.append(CaptionPreview(path, None if raw is None else _split_caption_bytes(raw)[2],
                                       _split_caption_bytes(after)[2]))
    return EditPlan(folder, describe(edits), tuple(changes), tuple(previews), unchanged, tuple(skipped))


def apply_plan(plan: EditPlan) -> Snapshot | None:
    """Write a plan: snapshot first, then each file atomically. None when the plan changes nothing.

    Refuses (before writing anything) when a file changed since the plan was made, since the
    preview the user approved would no longer be what gets written.
    """
    if not plan.changes:
        return None
    stale = []
    for change in plan.changes:
        now = change.path.read_bytes() if change.path.is_file() else None
        if now != change.before:
            stale.append(change.path.name)
    if stale:
        raise CoreError(f"{len(stale)} caption file(s) changed since the preview: {', '.join(stale[:5])}. Nothing was written.",
                        hint="Make the preview again, then apply.")
    snapshot = write_snapshot(plan.folder, plan.description, list(plan.changes))
    for change in plan.changes:
        atomic_write_bytes(change.path, change.after)
    return snapshot
