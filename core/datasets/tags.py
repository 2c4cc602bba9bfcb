"""Tag-level text rules shared by caption editing and booru imports.

Captions are comma-separated tags (``1girl, long hair, smile``), the form the trainer's
``caption_separator`` splits. Booru tags use underscores for spaces (``long_hair``) and some sites
HTML-escape them (``&#039;``); the trainer's text encoder should see ``long hair`` and ``'``.
Kaomoji such as ``^_^`` keep their underscores: there the underscore is the mouth.
"""
from __future__ import annotations

import html

# WD14's and the boorus' kaomoji tags (FORMATS.md section 3), plus a few common ones alike.
KAOMOJI = frozenset({
    "^_^", ">_<", "o_o", "0_0", "x_x", "@_@", "=_=", "u_u", "|_|", "||_||", "(o)_(o)", "<o>_<o>",
    ">_o", "o_<", "._.", "-_-", "^_-", "+_+", "t_t", ";_;", "<|>_<|>", "(;_;)",
})


def is_kaomoji(tag: str) -> bool:
    """True for kaomoji tags, whose underscores must stay (compared case-insensitively)."""
    return tag.strip().lower() in KAOMOJI


def replace_underscores(tag: str) -> str:
    """``long_hair`` -> ``long hair``; kaomoji such as ``^_^`` unchanged."""
    return tag if is_kaomoji(tag) else tag.replace("_", " ").strip()


def unescape_html(tag: str) -> str:
    """Undo HTML escaping, also when a site escaped twice (``&amp;#039;`` -> ``'``)."""
    for _ in range(3):  # bounded: a tag that is legitimately "&amp;" text must not loop
        unescaped = html.unescape(tag)
        if unescaped == tag:
            break
        tag = unescaped
    return tag


def split_tags(text: str, separator: str = ",") -> list[str]:
    """The non-empty, stripped tags of one caption line."""
    return [tag.strip() for tag in text.split(separator) if tag.strip()]


def join_tags(tags: list[str], separator: str = ",") -> str:
    """Tags joined the way the tagger writes them: separator plus one space."""
    return f"{separator} ".join(tags)


def parse_booru_tag_file(text: str) -> list[str]:
    """Tags of a tag file as gallery-dl and boorus write them, whatever the layout.

    One tag per line (gallery-dl's ``--write-tags``), one comma-separated line, or one line of
    space-separated booru tags (``long_hair blue_eyes``: booru tags never hold spaces).
    """
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    if len(lines) > 1:
        return lines
    if not lines:
        return []
    if "," in lines[0]:
        return split_tags(lines[0])
    return lines[0].split()


def clean_booru_tags(tags: list[str]) -> list[str]:
    """HTML entities undone, underscores to spaces (kaomoji kept), empties and repeats dropped."""
    cleaned: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        tag = replace_underscores(unescape_html(tag).strip())
        key = tag.lower()
        if tag and key not in seen:
            seen.add(key)
            cleaned.append(tag)
    return cleaned
