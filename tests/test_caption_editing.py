"""Caption edits: each rule on hand-made captions, preview writes nothing, and undo restores every byte."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.dataset_manager import DatasetManager, main
from core.datasets.caption_history import HISTORY_DIR, list_snapshots, undo
from core.datasets.captions import (
    AddPrefix, AddSuffix, AddTrigger, DedupeTags, RemovePrefix, RemoveSuffix, RemoveTags, ReplaceText,
    ReplaceUnderscores, SortTags, apply_plan, edited_bytes, plan_edits,
)
from core.datasets.tags import clean_booru_tags, parse_booru_tag_file
from core.errors import CoreError
from core.paths import ProjectPaths


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` except our own history folder, by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and HISTORY_DIR not in p.relative_to(root).parts}


# --- the rules, on captions written by hand ---------------------------------------------------------

@pytest.mark.parametrize("edit, before, after", [
    (AddTrigger("ohwx"), "1girl, smile", "ohwx, 1girl, smile"),
    (AddTrigger("ohwx"), "ohwx, 1girl", "ohwx, 1girl"),  # idempotent
    (AddTrigger("ohwx"), "1girl, OHWX, smile", "ohwx, 1girl, smile"),  # moved to the front, not doubled
    (AddTrigger("ohwx", 1), "1girl, smile", "1girl, ohwx, smile"),
    (AddTrigger("ohwx", None), "1girl, smile", "1girl, smile, ohwx"),
    (AddTrigger("ohwx"), "", "ohwx"),
    (RemoveTags(("smile",)), "1girl, smile, smile", "1girl"),
    (RemoveTags(("long_hair",)), "Long Hair, smile", "smile"),  # underscores and case do not matter
    (RemoveTags(("*hair",), "glob"), "long hair, blue eyes, short hair", "blue eyes"),
    (RemoveTags((r"\d+girls?",), "regex"), "1girl, 2girls, solo", "solo"),
    (RemoveTags(("absent",)), "a,b", "a,b"),  # no match: the text is left exactly as written
    (ReplaceText("smile", "grin"), "1girl, smile, smiles", "1girl, grin, smiles"),
    (ReplaceText("smile", ""), "1girl, smile", "1girl"),
    (ReplaceText("red", "blue", substring=True), "red dress, reddish", "blue dress, bluedish"),
    (SortTags(), "c, a, B", "a, B, c"),
    (SortTags(keep_first=1), "ohwx, c, a", "ohwx, a, c"),
    (DedupeTags(), "a, b, A, b, c", "a, b, c"),
    (ReplaceUnderscores(), "long_hair, ^_^, >_<, blue_eyes", "long hair, ^_^, >_<, blue eyes"),
    (AddPrefix("masterpiece, best quality"), "1girl", "masterpiece, best quality, 1girl"),
    (AddPrefix("masterpiece"), "masterpiece, 1girl", "masterpiece, 1girl"),
    (AddSuffix("watermark"), "1girl", "1girl, watermark"),
    (AddSuffix("watermark"), "1girl, watermark", "1girl, watermark"),
    (RemovePrefix("masterpiece, best quality"), "masterpiece, best quality, 1girl", "1girl"),
    (RemovePrefix("masterpiece"), "1girl, masterpiece", "1girl, masterpiece"),
    (RemoveSuffix("watermark"), "1girl, watermark", "1girl"),
])
def test_each_rule_on_one_caption(edit, before: str, after: str) -> None:
    assert edit.edit(before) == after
    assert edit.edit(edit.edit(before)) == edit.edit(before) or isinstance(edit, ReplaceText)


def test_only_the_caption_line_changes_bom_crlf_and_extra_lines_stay() -> None:
    raw = b"\xef\xbb\xbf  a, b \r\n\r\nsecond line\r\n"
    assert edited_bytes(raw, [AddTrigger("t")]) == b"\xef\xbb\xbf  t, a, b \r\n\r\nsecond line\r\n"
    assert edited_bytes(raw, [AddTrigger("a")]) is None  # already first: the file is not rewritten
    assert edited_bytes(b"a, b", [DedupeTags()]) is None  # unchanged files are not rewritten
    assert edited_bytes(None, [AddTrigger("t")]) == b"t\n"  # a new caption file
    assert edited_bytes(None, [RemoveTags(("x",))]) is None
    with pytest.raises(UnicodeDecodeError):
        edited_bytes(b"\xff\xfe bad", [AddTrigger("t")])


def test_booru_tag_files_are_cleaned() -> None:
    assert parse_booru_tag_file("long_hair\nblue_eyes\n") == ["long_hair", "blue_eyes"]
    assert parse_booru_tag_file("long_hair blue_eyes") == ["long_hair", "blue_eyes"]
    assert parse_booru_tag_file("a, b") == ["a", "b"]
    assert clean_booru_tags(["long_hair", "jack-o&#039;-lantern", "&amp;#039;", "^_^", "Long_Hair", " "]) == [
        "long hair", "jack-o'-lantern", "'", "^_^"]


def test_bad_edits_are_refused_with_a_hint(image_set) -> None:
    folder = image_set.subsets[0]
    for edit in (AddTrigger("  "), RemoveTags(("(",), "regex"), RemoveTags(("a",), "fuzzy"), ReplaceText("", "x")):
        with pytest.raises(CoreError) as caught:
            plan_edits(folder, [edit])
        assert caught.value.hint
    with pytest.raises(CoreError):
        plan_edits(folder, [])


# --- preview, apply, undo on the odd-case image set ------------------------------------------------

CHAINS = [
    [AddTrigger("sks")],
    [AddTrigger("sks", None)],
    [RemoveTags(("red dress", "beach"))],
    [RemoveTags(("*body", "ohwx*"), "glob")],
    [RemoveTags((r"s\w+ing",), "regex")],
    [ReplaceText("red dress", "blue dress")],
    [ReplaceText("ohwx", "zkz", substring=True)],
    [SortTags()],
    [SortTags(keep_first=1, reverse=True)],
    [AddTrigger("style"), DedupeTags()],
    [ReplaceUnderscores()],
    [AddPrefix("masterpiece, best quality")],
    [RemovePrefix("ohwx woman")],
    [AddSuffix("high res")],
    [RemoveSuffix("standing")],  # tall_crlf.txt, CRLF line end
]


@pytest.mark.parametrize("edits", CHAINS, ids=[type(c[0]).__name__ + str(i) for i, c in enumerate(CHAINS)])
def test_every_edit_round_trips_through_undo_byte_for_byte(image_set, edits) -> None:
    root = image_set.root
    # Give the underscore rule something to do, and a kaomoji it must keep.
    caption = image_set.caption_files[image_set.good[0]]
    caption.write_bytes(b"\xef\xbb\xbfohwx_woman, red_dress, ^_^\r\n")
    before = tree_bytes(root)

    plan = plan_edits(root, edits, recursive=True)
    assert plan.changes, "the edit should change something on this image set"
    assert tree_bytes(root) == before  # the preview wrote nothing
    snapshot = apply_plan(plan)
    after = tree_bytes(root)
    assert after != before
    for change in plan.changes:
        assert after[change.path.relative_to(root).as_posix()] == change.after

    result = undo(root)
    assert result.snapshot.snapshot_id == snapshot.snapshot_id
    assert tree_bytes(root) == before  # every byte back, BOMs and CRLFs included; created files gone
    assert list_snapshots(root)[-1].undone


def test_created_captions_are_set_aside_not_deleted_and_bom_crlf_kept(image_set) -> None:
    subject = image_set.subsets[0]
    plan = plan_edits(subject, [AddTrigger("sks")])
    created = [c.path for c in plan.changes if c.before is None]
    assert [p.name for p in created] == ["truncated.txt", "uncaptioned.txt"]  # not for empty/not-an-image files
    apply_plan(plan)
    assert (subject / "bom_crlf.txt").read_bytes() == b"\xef\xbb\xbf  sks, ohwx woman, caf\xc3\xa9, \xe7\x8c\xab \r\n\r\n"
    assert (subject / "uncaptioned.txt").read_bytes() == b"sks\n"
    result = undo(subject)
    assert not (subject / "uncaptioned.txt").exists()
    kept = result.snapshot.location / "undone_created" / "uncaptioned.txt"
    assert kept.read_bytes() == b"sks\n"


def test_two_edits_undo_one_at_a_time(image_set) -> None:
    root = image_set.root
    original = tree_bytes(root)
    apply_plan(plan_edits(root, [AddTrigger("one")], recursive=True))
    middle = tree_bytes(root)
    apply_plan(plan_edits(root, [ReplaceUnderscores(), AddSuffix("two")], recursive=True))
    undo(root)
    assert tree_bytes(root) == middle
    undo(root)
    assert tree_bytes(root) == original
    with pytest.raises(CoreError, match="Nothing to undo"):
        undo(root)


def test_undo_refuses_when_a_caption_changed_since_then_force(image_set) -> None:
    root = image_set.root
    original = tree_bytes(root)
    apply_plan(plan_edits(root, [AddTrigger("sks")], recursive=True))
    touched = image_set.caption_files[image_set.good[0]]
    touched.write_bytes(b"edited by hand")
    with pytest.raises(CoreError) as caught:
        undo(root)
    assert touched.name in str(caught.value) and "Nothing was restored" in str(caught.value)
    assert touched.read_bytes() == b"edited by hand"
    undo(root, force=True)
    assert tree_bytes(root) == original


def test_apply_refuses_a_stale_preview(image_set) -> None:
    plan = plan_edits(image_set.root, [AddTrigger("sks")], recursive=True)
    plan.changes[0].path.write_bytes(b"changed after the preview")
    with pytest.raises(CoreError, match="changed since the preview"):
        apply_plan(plan)
    assert not (image_set.root / HISTORY_DIR).exists()


def test_non_recursive_edits_only_touch_the_folder(image_set) -> None:
    subject, style = image_set.subsets
    style_before = tree_bytes(style)
    plan = plan_edits(image_set.root, [AddTrigger("sks")])
    assert plan.changes == ()  # the project folder itself holds no images
    apply_plan(plan_edits(subject, [AddTrigger("sks")]))
    assert tree_bytes(style) == style_before


def test_cli_dry_run_edit_history_undo(image_set, capsys, monkeypatch) -> None:
    monkeypatch.setenv("LORA_DATASETS_DIR", str(image_set.root.parent))
    before = tree_bytes(image_set.root)
    folder = image_set.root.name
    assert main(["caption", folder, "--recursive", "--dry-run", "--add-trigger", "sks", "--underscores"]) == 0
    out = capsys.readouterr().out
    assert "+ sks, ohwx woman, red dress, smiling" in out and "Dry run" in out
    assert tree_bytes(image_set.root) == before
    assert main(["caption", folder, "--recursive", "--remove", "red dress", "--add-trigger", "sks"]) == 0
    assert tree_bytes(image_set.root) != before
    assert main(["history", folder]) == 0
    assert "remove tags 'red dress', then add trigger word 'sks' at the front" in capsys.readouterr().out
    assert main(["undo", folder]) == 0
    assert tree_bytes(image_set.root) == before
    assert main(["undo", folder]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: Nothing to undo") and "Traceback" not in err


def test_manager_edit_captions_facade(image_set) -> None:
    manager = DatasetManager(ProjectPaths.resolve({}, work_dir=image_set.root.parent))
    plan, snapshot = manager.edit_captions(image_set.subsets[1], [SortTags()], dry_run=True)
    assert snapshot is None and plan.preview_lines()[0].startswith("sort tags alphabetically: ")
    plan, snapshot = manager.edit_captions(image_set.subsets[1], [AddTrigger("style")], create_missing=False)
    assert snapshot is None and plan.changes == ()  # every style caption already starts with "style"
    plan, snapshot = manager.edit_captions(image_set.subsets[1], [AddTrigger("style")])
    assert [c.path.name for c in plan.changes] == ["style_b.txt"] and snapshot is not None
    assert manager.caption_history(image_set.subsets[1])[0].snapshot_id == snapshot.snapshot_id
