"""From a WD14 model's scores to the tag list of one caption, with the options users know from kohya's tagger.

Order of the steps: threshold (general and character separately), clean names (underscores),
apply ``--tag_replacement``, drop ``--undesired_tags``, place the rating tag and character tags,
drop duplicates, then move ``--always_first_tags`` to the front. General and character tags keep
the order of ``selected_tags.csv`` (as kohya's tagger does), so reruns give the same caption.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from custom.errors import CustomError
from custom.wd14.labels import Labels, clean_tag

RATING_NONE, RATING_FIRST, RATING_LAST = "none", "first", "last"


@dataclass(frozen=True)
class TagRules:
    """How scores become caption tags. Defaults are the usual WD14 thresholds."""

    general_threshold: float = 0.35
    character_threshold: float = 0.85
    remove_underscore: bool = True
    undesired_tags: tuple[str, ...] = ()
    tag_replacement: tuple[tuple[str, str], ...] = ()  # (source tag, replacement text)
    character_tags_first: bool = False
    always_first_tags: tuple[str, ...] = ()
    rating: str = RATING_NONE  # RATING_FIRST / RATING_LAST add the argmax rating tag there
    caption_separator: str = ", "

    def __post_init__(self) -> None:
        for option, value in (("--general_threshold", self.general_threshold),
                              ("--character_threshold", self.character_threshold)):
            if not 0.0 <= value <= 1.0:
                raise CustomError(f"{option} {value} is outside 0..1.",
                                  hint="Scores are probabilities: 0.35 (general) and 0.85 (character) are usual.",
                                  option=option)
        if self.rating not in (RATING_NONE, RATING_FIRST, RATING_LAST):
            raise CustomError(f"Unknown rating placement {self.rating!r}.", hint="Use none, first or last.")
        if not self.caption_separator.strip():
            raise CustomError("--caption_separator must contain a visible character (such as ',').",
                              hint="The default is ', '.", option="--caption_separator")


def tag_key(tag: str) -> str:
    """What two tags are compared by: case, surrounding spaces and underscores (outside kaomoji) ignored."""
    return clean_tag(tag, remove_underscore=True).lower()


def split_tags(text: str, separator: str = ", ") -> list[str]:
    """Split a caption or an option value into tags on the separator's visible part; empty pieces dropped."""
    mark = separator.strip() or ","
    return [piece.strip() for piece in text.split(mark) if piece.strip()]


def parse_tag_replacement(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``source1,target1;source2,target2``; ``\\,`` and ``\\;`` are a literal comma and semicolon.

    Raises :class:`CustomError` naming ``--tag_replacement`` when a pair is not exactly two parts.
    """
    pairs: list[list[str]] = []
    fields: list[str] = [""]
    escaped = False
    for char in text:
        if escaped:
            fields[-1] += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            fields.append("")
        elif char == ";":
            pairs.append(fields)
            fields = [""]
        else:
            fields[-1] += char
    if escaped:  # a trailing backslash escapes nothing: keep it as written
        fields[-1] += "\\"
    pairs.append(fields)
    result: list[tuple[str, str]] = []
    for fields in pairs:
        if len(fields) == 1 and not fields[0].strip():
            continue  # tolerate "a,b;" and an empty value
        if len(fields) != 2 or not fields[0].strip():
            raise CustomError(
                f"--tag_replacement: {','.join(fields)!r} is not a 'source,target' pair.",
                hint="Write pairs as source1,target1;source2,target2 and escape a comma or semicolon inside a "
                     "tag with a backslash, e.g. 'cat,cat\\, animal'.",
                option="--tag_replacement")
        result.append((fields[0].strip(), fields[1].strip()))
    return tuple(result)


def _dedupe(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for tag in tags:
        key = tag_key(tag)
        if key not in seen:
            seen.add(key)
            kept.append(tag)
    return kept


def select_tags(scores: np.ndarray, labels: Labels, rules: TagRules) -> list[str]:
    """The caption tags of one image from its score vector (one value per row of ``selected_tags.csv``)."""
    replacements = {tag_key(source): target for source, target in rules.tag_replacement}
    undesired = {tag_key(tag) for tag in rules.undesired_tags}

    def wanted(indices: np.ndarray) -> list[str]:
        tags = []
        for index in indices:
            name = clean_tag(labels.names[index], rules.remove_underscore)
            replaced = replacements.get(tag_key(name), name)
            # Undesired matches the model's tag or what it was replaced by.
            if replaced and tag_key(name) not in undesired and tag_key(replaced) not in undesired:
                tags.append(replaced)
        return tags

    general = wanted(labels.general[scores[labels.general] >= rules.general_threshold])
    characters = wanted(labels.character[scores[labels.character] >= rules.character_threshold])
    tags = characters + general if rules.character_tags_first else general + characters
    if rules.rating != RATING_NONE and len(labels.rating):
        best = labels.rating[int(np.argmax(scores[labels.rating]))]
        rating = wanted(np.array([best]))
        tags = rating + tags if rules.rating == RATING_FIRST else tags + rating
    tags = _dedupe(tags)
    # Reversed, so the first listed tag ends up first.
    for wanted_first in reversed(rules.always_first_tags):
        key = tag_key(wanted_first)
        hit = next((tag for tag in tags if tag_key(tag) == key), None)
        if hit is not None:
            tags.remove(hit)
            tags.insert(0, hit)
    return tags


def merge_tags(existing_line: str, new_tags: list[str], separator: str) -> str:
    """``--append_tags``: the existing tags as written, then the new ones they do not already contain."""
    old = split_tags(existing_line, separator)
    keys = {tag_key(tag) for tag in old}
    added = [tag for tag in _dedupe(new_tags) if tag_key(tag) not in keys]
    return separator.join(old + added)
