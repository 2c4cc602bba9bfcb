"""The caption panel driven from code: preview -> apply -> undo byte for byte, and the one-image editor."""
from __future__ import annotations

from html import escape
from pathlib import Path

import pytest

from core.datasets import captions as c
from core.datasets.caption_diff import ADDED, KEPT, REMOVED, tag_diff
from core.datasets.captions import describe
from core.datasets.single_caption import caption_bytes, read_caption_text, save_caption
from core.errors import CoreError
from core.paths import ProjectPaths
from tests.fixtures.images import SUBJECT, ImageSet
from widgets.caption_panel import REMOVE, REPLACE, SORT, CaptionPanel
from widgets.context import DATASET_FOLDER, NotebookContext


def _captions(root: Path) -> dict[Path, bytes]:
    """Every caption file the trainer would read (history and aside folders left out)."""
    return {p: p.read_bytes() for p in root.rglob("*.txt") if not any(part.startswith((".", "_")) for part in
                                                                       p.relative_to(root).parts)}


def _panel(tmp_path: Path, image_set: ImageSet, **hooks) -> CaptionPanel:
    context = NotebookContext(paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work"))
    context.set(DATASET_FOLDER, image_set.root)
    return CaptionPanel(context, **hooks)


def test_trigger_word_preview_apply_undo_is_byte_identical(tmp_path: Path, image_set: ImageSet) -> None:
    changed = []
    panel = _panel(tmp_path, image_set, on_captions_changed=lambda: changed.append(True))
    before = _captions(image_set.root)
    plain = image_set.root / SUBJECT / "plain_rgb.txt"
    assert panel.apply_button.disabled  # nothing previewed yet
    panel.trigger_word.value = "zkw"
    panel.preview_button.click()
    html = panel.preview_html.value
    assert "would change</b>" in html and "plain_rgb.txt" in html
    assert "ohwx woman, red dress, smiling" in html  # before
    assert 'lora-tag-added' in html and '>zkw</span>' in html  # after, the new tag marked as added
    assert _captions(image_set.root) == before  # a preview writes nothing
    assert not panel.apply_button.disabled
    panel.apply_button.click()
    assert plain.read_text(encoding="utf-8") == "zkw, ohwx woman, red dress, smiling"
    assert all(read_caption_text(image).lstrip().startswith("zkw") for image in image_set.uncaptioned)
    assert "Changed" in panel.messages.text and panel.apply_button.disabled and changed == [True]
    panel.undo_button.click()
    assert _captions(image_set.root) == before  # byte for byte, and created captions set aside again
    assert changed == [True, True]
    # The messages describe the edit in plain words, not as code.
    assert escape("Changed ") in panel.messages.text
    assert escape(": add trigger word 'zkw' at the front. Undo restores them.") in panel.messages.text
    assert escape("Undid the last change (add trigger word 'zkw' at the front): restored ") in panel.messages.text
    assert "AddTrigger" not in panel.messages.text


def test_every_caption_edit_describes_itself_in_plain_words() -> None:
    assert describe([c.AddTrigger("alicex", 0)]) == "add trigger word 'alicex' at the front"
    assert describe([c.AddTrigger("alicex", None)]) == "add trigger word 'alicex' at the end"
    assert describe([c.RemoveTags(("a", "b", "c", "d"))]) == "remove tags 'a', 'b', 'c' and 1 more"
    assert describe([c.RemoveTags(("*hair",), "glob")]) == "remove tags matching '*hair'"
    assert describe([c.ReplaceText("smiling", "grin")]) == "replace tag 'smiling' with 'grin'"
    assert describe([c.ReplaceText("smiling", "")]) == "remove tag 'smiling'"
    assert describe([c.DedupeTags(), c.SortTags(keep_first=1)]) == (
        "remove repeated tags, then sort tags alphabetically (first 1 kept in place)")
    assert describe([c.ReplaceUnderscores(), c.AddPrefix("a, b"), c.RemoveSuffix("z")]) == (
        "replace underscores in tags with spaces, then add 'a', 'b' at the front, then remove 'z' from the end")
    edits = (c.AddTrigger, c.RemoveTags, c.ReplaceText, c.SortTags, c.DedupeTags, c.ReplaceUnderscores,
             c.AddPrefix, c.AddSuffix, c.RemovePrefix, c.RemoveSuffix)
    assert set(c.CaptionEdit.__args__) == set(edits)  # a new edit type must get its own description


def test_apply_only_what_was_previewed(tmp_path: Path, image_set: ImageSet) -> None:
    panel = _panel(tmp_path, image_set)
    panel.trigger_word.value = "zkw"
    panel.preview_button.click()
    assert not panel.apply_button.disabled
    panel.trigger_word.value = "other"  # the preview no longer matches the fields
    assert panel.apply_button.disabled and panel.plan is None
    panel.apply_button.click()
    assert "Nothing to apply" in panel.messages.text
    panel.trigger_word.value = " "
    panel.preview_button.click()
    assert "trigger word is empty" in panel.messages.text


def test_remove_replace_and_sort_previews(tmp_path: Path, image_set: ImageSet) -> None:
    panel = _panel(tmp_path, image_set)
    plain = image_set.root / SUBJECT / "plain_rgb.txt"
    panel.operation.value = REMOVE
    assert panel.pages[REMOVE].layout.display == "flex" and panel.pages["trigger"].layout.display == "none"
    panel.remove_tags.value = "red dress"
    panel.preview_button.click()
    assert "line-through" in panel.preview_html.value and ">red dress</span>" in panel.preview_html.value
    expected = sum("red dress" in text.decode("utf-8", "replace") for text in _captions(image_set.root).values())
    assert expected == 3 and "3 caption file(s) would change" in panel.preview_html.value
    panel.apply_button.click()
    assert plain.read_text(encoding="utf-8") == "ohwx woman, smiling"

    panel.operation.value = REPLACE
    panel.search.value = "smiling"
    panel.replace.value = "grin"
    panel.preview_button.click()
    panel.apply_button.click()
    assert plain.read_text(encoding="utf-8") == "ohwx woman, grin"

    panel.operation.value = SORT
    plain.write_text("ohwx woman, zebra, apple, zebra", encoding="utf-8")
    panel.keep_first.value = 1
    panel.preview_button.click()
    panel.apply_button.click()
    assert plain.read_text(encoding="utf-8") == "ohwx woman, apple, zebra"
    panel.sort_tags.value = panel.dedupe.value = False
    panel.preview_button.click()
    assert "Neither sorting nor removing repeats" in panel.messages.text


def test_single_image_editor_saves_through_core_and_undo_restores(tmp_path: Path, image_set: ImageSet) -> None:
    changed = []
    panel = _panel(tmp_path, image_set, on_captions_changed=lambda: changed.append(True))
    editor = panel.editor
    names = [label for label, _ in editor.image_select.options]
    assert len(names) == len(image_set.good) + len(image_set.broken)
    target = next(p for p in image_set.good if p.name == "tall_crlf.JPG")
    editor.image_select.value = str(target)
    assert editor.caption.value == "ohwx woman, full body, standing\n"
    assert bytes(editor.image.value)[:2] == b"\xff\xd8"
    editor.caption.value = "ohwx woman, sitting\n"
    editor.save_button.click()
    assert target.with_suffix(".txt").read_bytes() == b"ohwx woman, sitting\r\n"  # its CRLF kept
    assert "Saved" in editor.status.value and changed == [True]
    editor.save_button.click()
    assert "No change" in editor.status.value
    panel.undo_button.click()
    assert target.with_suffix(".txt").read_bytes() == b"ohwx woman, full body, standing\r\n"
    assert editor.caption.value == "ohwx woman, full body, standing\n"  # the editor shows the restored text
    editor.next_button.click()
    assert editor.image_select.value != str(target)
    editor.prev_button.click()
    assert editor.image_select.value == str(target)


def test_editor_follows_the_chosen_dataset(tmp_path: Path, image_set: ImageSet) -> None:
    context = NotebookContext(paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work"))
    panel = CaptionPanel(context)
    assert panel.editor.image_select.options == (("(no images)", ""),)
    panel.editor.save_button.click()
    assert "No image is chosen" in panel.messages.text
    context.set(DATASET_FOLDER, image_set.root / "3_style")
    assert [label for label, _ in panel.editor.image_select.options][0] == "copy_of_plain.png"
    assert "3_style" in panel.folder_label.value


def test_tag_diff_and_single_caption_helpers(tmp_path: Path) -> None:
    diff = tag_diff("a, b_c, d", "zkw, a, B C")
    assert [(c.tag, c.change) for c in diff] == [("zkw", ADDED), ("a", KEPT), ("B C", KEPT), ("d", REMOVED)]
    assert [c.change for c in tag_diff(None, "x")] == [ADDED]
    assert caption_bytes("a\nb", b"\xef\xbb\xbfold\r\n") == b"\xef\xbb\xbfa\r\nb"
    assert caption_bytes("a", None) == b"a"
    folder = tmp_path / "1_x"
    folder.mkdir()
    image = folder / "i.png"
    image.write_bytes(b"not decoded here")
    assert save_caption(folder, image, "  ") is None and not (folder / "i.txt").exists()
    assert save_caption(folder, image, "new") is not None and (folder / "i.txt").read_bytes() == b"new"
    (folder / "i.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(CoreError, match="not UTF-8"):
        save_caption(folder, image, "x")
    with pytest.raises(CoreError, match="not inside"):
        save_caption(tmp_path / "1_x", tmp_path / "elsewhere.png", "x")
