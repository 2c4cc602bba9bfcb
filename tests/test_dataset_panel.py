"""The dataset panel driven from code (set values, click), against the odd-case image set; plus its core helpers.

Core helpers tested here: cached thumbnails (originals untouched), per-image statuses, browser uploads.
"""
from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from core.dataset_manager import DatasetManager
from core.datasets import validation as v
from core.datasets.image_status import FILTERS, image_folders, page_of, quick_statuses, statuses_from_report
from core.datasets.thumbnails import THUMBNAIL_DIR, make_thumbnail
from core.datasets.uploads import UploadedFile, import_uploads
from core.errors import CoreError
from core.paths import ProjectPaths
from tests.fixtures.images import SUBJECT, ImageSet
from tests.test_dataset_import import serve, static, zip_of
from widgets.context import DATASET_FOLDER, PROJECT_NAME, NotebookContext
from widgets.dataset_panel import DatasetPanel

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _context(tmp_path: Path) -> NotebookContext:
    return NotebookContext(paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work"))


def _imported(tmp_path: Path, image_set: ImageSet, per_page: int = 24) -> DatasetPanel:
    """A panel that imported the image set from a server folder (its N_name folders kept)."""
    panel = DatasetPanel(_context(tmp_path), per_page=per_page)
    panel.project_name.value = "mylora"
    panel.source.value = "folder"
    panel.import_path.value = str(image_set.root)
    panel.import_button.click()
    assert panel.wait(120)
    return panel


def _status(panel: DatasetPanel, name: str):
    return next(item for item in panel.grid.items if item.path.name == name)


# ---------------------------------------------------------------- the panel

def test_constructing_the_dataset_panels_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from core.paths import ProjectPaths\n"
        "from widgets.context import NotebookContext\n"
        "from widgets.dataset_panel import DatasetPanel\n"
        "from widgets.tagging_panel import TaggingPanel\n"
        "from widgets.caption_panel import CaptionPanel\n"
        f"context = NotebookContext(paths=ProjectPaths.resolve(environ={{}}, work_dir={str(tmp_path)!r}))\n"
        "panels = [DatasetPanel(context), TaggingPanel(context), CaptionPanel(context)]\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'matplotlib', 'transformers', 'diffusers', 'PIL', 'numpy')\n"
        "             if m in sys.modules))\n"
        "print(len(panels[0].root.children), len(panels[1].root.children), len(panels[2].root.children))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    heavy, sizes = done.stdout.strip().splitlines()
    assert heavy == "[]"
    assert all(int(size) >= 3 for size in sizes.split())


def test_import_folder_shows_every_image_with_its_status(tmp_path: Path, image_set: ImageSet) -> None:
    panel = _imported(tmp_path, image_set)
    project = panel.context.paths.datasets / "mylora"
    assert panel.context.get(DATASET_FOLDER) == project and panel.context.get(PROJECT_NAME) == "mylora"
    assert panel.dataset.value == str(project)
    assert "Imported 23 image(s)" in panel.messages.text
    # Every image file is in the grid (decodable or not), each checked.
    assert len(panel.grid.items) == len(image_set.good) + len(image_set.broken) == 23
    assert all(item.checked for item in panel.grid.items)
    assert "<b>23 image(s)</b>" in panel.grid.count_label.value and "4 broken" in panel.grid.count_label.value
    corrupt = _status(panel, "not_really.jpg")
    assert corrupt.kinds == (v.CORRUPT,) and corrupt.level == "error" and corrupt.label == "corrupt"
    assert _status(panel, "empty.png").label == "empty file"
    assert _status(panel, "truncated.png").level == "error"
    assert v.DUPLICATE in _status(panel, "copy_of_plain.png").kinds
    assert v.NO_CAPTION in _status(panel, "uncaptioned.webp").kinds
    assert v.CMYK in _status(panel, "cmyk.jpg").kinds
    # The badges on screen say so too, and broken files get a placeholder instead of a thumbnail.
    index = [item.path.name for item in panel.grid.shown].index("not_really.jpg")
    assert "lora-error" in panel.grid.badges[index].value and "corrupt" in panel.grid.badges[index].value
    assert panel.grid.images[index].format == "svg+xml"
    good = [item.path.name for item in panel.grid.shown].index("plain_rgb.png")
    assert panel.grid.images[good].format == "jpeg" and panel.grid.images[good].value[:2] == b"\xff\xd8"
    # Each cell shows its caption's first tags (the whole caption in the tooltip), or says it has none.
    assert ('title="ohwx woman, red dress, smiling">ohwx woman, red dress, smiling</div>'
            in panel.grid.badges[good].value)
    missing = [item.path.name for item in panel.grid.shown].index("uncaptioned.webp")
    assert "(no caption)" in panel.grid.badges[missing].value
    assert f"; {len(image_set.uncaptioned)} without a caption" in panel.grid.count_label.value
    # The report lists the findings and enables exactly the fixes it has findings for.
    assert "23 image file(s), 19 decodable" in panel.report_html.value
    assert not panel.move_broken_button.disabled and not panel.convert_button.disabled
    assert not panel.move_duplicates_button.disabled


def test_grid_pages_and_filters(tmp_path: Path, image_set: ImageSet) -> None:
    panel = _imported(tmp_path, image_set, per_page=5)
    grid = panel.grid
    assert (grid.page, grid.pages, len(grid.shown)) == (0, 5, 5)
    assert grid.prev_button.disabled and not grid.next_button.disabled
    assert sum(1 for cell in grid.cells if cell.layout.display != "none") == 5
    for _ in range(4):
        grid.next_button.click()
    assert grid.page_label.value == "page 5 of 5" and len(grid.shown) == 3 and grid.next_button.disabled
    assert sum(1 for cell in grid.cells if cell.layout.display != "none") == 3
    grid.filter.value = "broken"
    assert grid.page == 0 and {item.path.name for item in grid.shown} == {p.name for p in image_set.broken}
    grid.filter.value = "duplicates"
    assert {item.path.name for item in grid.visible} == {"copy_of_plain.png", "near_plain.jpg"}
    assert [value for _, value in grid.filter.options] == list(FILTERS)  # every core filter offered, no other


def test_move_broken_files_keeps_them_under_rejected(tmp_path: Path, image_set: ImageSet) -> None:
    panel = _imported(tmp_path, image_set)
    project = panel.context.paths.datasets / "mylora"
    originals = {p.relative_to(image_set.root): p.read_bytes() for p in image_set.broken}
    panel.move_broken_button.click()
    assert panel.wait(120)
    assert "4 moved" in panel.messages.text
    for relative, data in originals.items():
        assert not (project / relative).exists()
        assert (project / "_rejected" / relative).read_bytes() == data  # moved, byte for byte, never deleted
    assert len(panel.grid.items) == 19 and all(item.level != "error" for item in panel.grid.items)
    assert panel.move_broken_button.disabled  # nothing broken is left to move


def test_convert_odd_modes_keeps_originals(tmp_path: Path, image_set: ImageSet) -> None:
    panel = _imported(tmp_path, image_set)
    project = panel.context.paths.datasets / "mylora"
    cmyk = project / SUBJECT / "cmyk.jpg"
    data = cmyk.read_bytes()
    panel.convert_format.value = "png"
    panel.convert_button.click()
    assert panel.wait(120)
    assert (project / "_originals" / SUBJECT / "cmyk.jpg").read_bytes() == data
    with Image.open(project / SUBJECT / "cmyk.png") as converted:
        assert converted.mode == "RGB"
    assert not any(set(item.kinds) & set(v.ODD_MODE_KINDS) for item in panel.grid.items)
    assert panel.convert_button.disabled


def _zip_with_a_duplicate(image_set: ImageSet, path: Path) -> Path:
    """Three captioned images, and an uncaptioned copy of one that comes first in file order."""
    subject = image_set.root / SUBJECT
    entries = {name: (subject / name).read_bytes() for name in ("plain_rgb.png", "plain_rgb.txt", "wide_bom.jpg",
                                                                "wide_bom.txt", "tall_crlf.JPG", "tall_crlf.txt")}
    entries["a_copy.png"] = entries["plain_rgb.png"]
    return zip_of(path, entries)


def test_import_a_zip_then_move_duplicates_keeps_the_captioned_copy(tmp_path: Path, image_set: ImageSet) -> None:
    archive = _zip_with_a_duplicate(image_set, tmp_path / "set.zip")
    panel = DatasetPanel(_context(tmp_path))
    panel.project_name.value, panel.concept.value, panel.repeats.value = "zipped", "ohwx", 4
    panel.source.value = "zip"
    panel.import_path.value = str(archive)
    panel.import_button.click()
    assert panel.wait(120)
    folder = panel.context.paths.datasets / "zipped" / "4_ohwx"
    assert "Imported 4 image(s) and 3 caption(s)" in panel.messages.text
    assert sorted(p.name for p in folder.iterdir()) == ["a_copy.png", "plain_rgb.png", "plain_rgb.txt", "tall_crlf.JPG",
                                                        "tall_crlf.txt", "wide_bom.jpg", "wide_bom.txt"]
    assert panel.context.get(DATASET_FOLDER) == folder.parent and len(panel.grid.items) == 4
    copy = _status(panel, "a_copy.png")
    assert v.DUPLICATE in copy.kinds and "same bytes as plain_rgb.png" in copy.details
    assert _status(panel, "plain_rgb.png").label == "small"  # the captioned original is not the one flagged
    caption = (folder / "plain_rgb.txt").read_bytes()
    assert not panel.move_duplicates_button.disabled
    panel.move_duplicates_button.click()
    assert panel.wait(120)
    assert "1 moved" in panel.messages.text
    assert (folder / "plain_rgb.txt").read_bytes() == caption and (folder / "plain_rgb.png").is_file()
    assert (folder.parent / "_rejected" / "4_ohwx" / "a_copy.png").read_bytes() == (folder / "plain_rgb.png").read_bytes()
    assert [item.path.name for item in panel.grid.items] == ["plain_rgb.png", "tall_crlf.JPG", "wide_bom.jpg"]
    assert panel.move_duplicates_button.disabled and "0 without a caption" in panel.grid.count_label.value


def test_import_from_a_url(tmp_path: Path, image_set: ImageSet) -> None:
    payload = _zip_with_a_duplicate(image_set, tmp_path / "served.zip").read_bytes()
    panel = DatasetPanel(_context(tmp_path))
    panel.project_name.value = "fromweb"
    panel.source.value = "url"
    assert panel.importer._url_row.layout.display == "flex" and panel.importer._path_row.layout.display == "none"
    with serve(static({"/set.zip": payload, "/page.html": b"<html>not a zip</html>"})) as base:
        panel.import_url.value = f"{base}/set.zip?token=SECRET123"
        panel.import_button.click()
        assert panel.wait(120)
        folder = panel.context.paths.datasets / "fromweb" / "10_fromweb"
        assert "Imported 4 image(s) and 3 caption(s)" in panel.messages.text
        assert (folder / "wide_bom.txt").read_bytes() == (image_set.root / SUBJECT / "wide_bom.txt").read_bytes()
        assert len(panel.grid.items) == 4 and panel.dataset.value == str(folder.parent)
        assert "SECRET123" not in panel.messages.text  # the link's token is never shown
        panel.project_name.value = "notzip"
        panel.import_url.value = f"{base}/page.html"
        panel.import_button.click()
        assert panel.wait(120)
    assert "is not a zip file" in panel.messages.text and "What to do" in panel.messages.text
    assert not (panel.context.paths.datasets / "notzip").exists()


def test_create_dataset_and_choose_existing(tmp_path: Path) -> None:
    context = _context(tmp_path)
    panel = DatasetPanel(context)
    panel.project_name.value = "new one"
    panel.repeats.value = 5
    panel.concept.value = "mychar"
    panel.create_button.click()
    assert panel.wait(60)
    folder = context.paths.datasets / "new one" / "5_mychar"
    assert folder.is_dir() and context.get(DATASET_FOLDER) == folder.parent
    assert ("new one", str(folder.parent)) in panel.dataset.options
    # A second panel (a fresh kernel) lists it and follows a choice made through the context.
    other = DatasetPanel(context)
    assert str(folder.parent) in [value for _, value in other.dataset.options]
    assert other.dataset.value == str(folder.parent)
    assert other.wait(60) and "<b>0 image(s)</b>" in other.grid.count_label.value  # and shows it at once
    assert "0 image file(s)" in other.report_html.value


def test_upload_through_the_browser(tmp_path: Path) -> None:
    panel = DatasetPanel(_context(tmp_path))
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 200, 30)).save(buffer, "PNG")
    when = datetime(2024, 1, 1, tzinfo=timezone.utc)
    panel.upload.value = (
        {"name": "green.png", "type": "image/png", "size": len(buffer.getvalue()), "content": memoryview(buffer.getvalue()),
         "last_modified": when},
        {"name": "green.txt", "type": "text/plain", "size": 9, "content": memoryview(b"green, sq"), "last_modified": when},
    )
    panel.source.value = "upload"
    panel.project_name.value = "up"
    panel.concept.value = "grass"
    panel.import_button.click()
    assert panel.wait(60)
    target = panel.context.paths.datasets / "up" / "10_grass"
    assert (target / "green.txt").read_bytes() == b"green, sq" and (target / "green.png").is_file()
    assert panel.upload.value == ()
    assert [item.label for item in panel.grid.items] == ["ok"]
    assert not list(panel.context.paths.datasets.glob(".upload-*"))  # staging copy gone


def test_user_errors_are_shown_with_a_hint(tmp_path: Path) -> None:
    panel = DatasetPanel(_context(tmp_path))
    panel.import_button.click()  # no project name
    assert "project name is empty" in panel.messages.text and "What to do" in panel.messages.text
    panel.project_name.value = "p"
    panel.source.value = "folder"
    panel.import_path.value = str(tmp_path / "missing")
    panel.import_button.click()
    assert panel.wait(60)
    assert "does not exist" in panel.messages.text
    panel.validate_button.click()
    assert "No dataset is chosen" in panel.messages.text


def test_checkbox_labels_get_room_in_the_browser(tmp_path: Path) -> None:
    import ipywidgets as w

    from widgets.caption_panel import CaptionPanel
    from widgets.tagging_panel import TaggingPanel

    context = _context(tmp_path)
    panel = DatasetPanel(context)
    assert panel.skip_existing.description == "Keep files already in the dataset (skip same names) instead of stopping"
    # ipywidgets gives a checkbox 300 px and cuts its label with "..."; ours are as wide as their labels.
    boxes = [panel.skip_existing]
    for other in (TaggingPanel(context), CaptionPanel(context)):
        boxes += [value for value in vars(other).values() if isinstance(value, w.Checkbox)]
    assert len(boxes) == 6 and all(box.layout.width == "auto" for box in boxes)


def test_statistics_are_drawn(tmp_path: Path, image_set: ImageSet) -> None:
    panel = _imported(tmp_path, image_set)
    panel.stats_resolution.value = 512
    panel.stats_button.click()
    assert panel.wait(180)
    picture = bytes(panel.stats_image.value)
    assert picture.startswith(PNG_MAGIC) and len(picture) > 10_000
    stats = panel.statistics
    assert stats.image_count == len(image_set.good)
    assert "steps per epoch" in panel.stats_html.value and "Buckets" in panel.stats_html.value
    assert "buckets 256-1024 px in steps of 64, batch 2, 10 epochs (the SD 1.5 preset)" in panel.stats_html.value
    panel.stats_resolution.value = 1024  # SDXL: the preset's 512-2048 buckets, not a guess made in the panel
    panel.stats_button.click()
    assert panel.wait(180)
    assert "buckets 512-2048 px" in panel.stats_html.value and "(the SDXL preset)" in panel.stats_html.value
    assert all(min(size) >= 512 for size in panel.statistics.bucket_table)


# ---------------------------------------------------------------- core helpers

def test_thumbnails_are_cached_and_never_touch_the_images(tmp_path: Path, image_set_template: ImageSet) -> None:
    cache = tmp_path / "cache"
    image = next(p for p in image_set_template.good if p.name == "cmyk.jpg")
    before = image.read_bytes()
    data = make_thumbnail(image, cache, side=64)
    assert data is not None and data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as thumb:
        assert max(thumb.size) == 64 and thumb.mode == "RGB"
    cached = list((cache / THUMBNAIL_DIR).rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == data
    assert make_thumbnail(image, cache, side=64) == data and image.read_bytes() == before
    assert make_thumbnail(image, cache, side=96) != data  # another size is another entry
    broken = next(p for p in image_set_template.broken if p.name == "not_really.jpg")
    assert make_thumbnail(broken, cache) is None


def test_statuses_quick_and_from_a_report(image_set_template: ImageSet) -> None:
    quick = quick_statuses(image_set_template.root)
    assert len(quick) == 23 and not any(item.checked for item in quick)
    uncaptioned = {item.path.name for item in quick if v.NO_CAPTION in item.kinds}
    every = image_set_template.good + image_set_template.broken
    assert uncaptioned == {p.name for p in every if not p.with_suffix(".txt").exists()}
    assert {p.name for p in image_set_template.uncaptioned} <= uncaptioned
    assert {item.level for item in quick if not item.kinds[:-1]} == {"info"}
    report = DatasetManager().validate(image_set_template.root, v.ValidationSettings(min_side=16))
    statuses = statuses_from_report(report)
    by_name = {item.path.name: item for item in statuses}
    assert by_name["plain_rgb.png"].label == "ok"  # the first of the duplicate pair is the one kept
    assert by_name["style_d.Jpeg"].label == "ok" and by_name["style_d.Jpeg"].level == "ok"
    assert by_name["gray16.png"].kinds == (v.SIXTEEN_BIT,)
    assert [f.path.name for f in statuses] == [p.name for p in report.image_files]
    assert [p.name for p in image_folders(image_set_template.root)] == ["10_ohwx woman", "3_style"]
    assert image_folders(image_set_template.root / SUBJECT) == [(image_set_template.root / SUBJECT).resolve()]
    assert page_of(list(range(10)), 7, 4) == ([8, 9], 2, 3)


def test_caption_preview_is_short_and_escaped(tmp_path: Path) -> None:
    from widgets.dataset_grid import badge_html

    folder = tmp_path / "1_x"
    folder.mkdir()
    image = folder / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    (folder / "a.txt").write_bytes(b"\xef\xbb\xbf\r\n<b>bold</b>, long hair, blue eyes, smile, 1girl\r\nsecond line")
    status = quick_statuses(folder)[0]
    assert status.caption == "<b>bold</b>, long hair, blue eyes, smile, 1girl"  # the line the trainer reads
    assert status.caption_preview() == "<b>bold</b>, long hair, blue eyes, ..."
    assert status.caption_preview(tags=5, chars=20) == "<b>bold</b>, long..."
    cell = badge_html(status)
    assert "&lt;b&gt;bold&lt;/b&gt;, long hair, blue eyes, ...</div>" in cell and "<b>bold" not in cell
    assert 'title="&lt;b&gt;bold&lt;/b&gt;, long hair, blue eyes, smile, 1girl"' in cell


def test_caption_problems_show_on_their_image(image_set: ImageSet) -> None:
    image = next(p for p in image_set.good if p.name == "plain_rgb.png")
    image.with_suffix(".txt").write_bytes(b"\xff\xfe bad")
    report = DatasetManager().validate(image_set.root, v.ValidationSettings(min_side=16))
    status = next(item for item in statuses_from_report(report) if item.path == image)
    assert v.BAD_CAPTION in status.kinds and status.level == "error"


def test_uploads_are_reduced_to_names_and_mixed_zips_refused(tmp_path: Path) -> None:
    datasets = tmp_path / "datasets"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, "PNG")
    result = import_uploads([UploadedFile("../../evil/a.png", buffer.getvalue()), UploadedFile("C:\\x\\a.txt", b"t"),
                             UploadedFile("notes.pdf", b"%PDF")], datasets, "p", 2, "c")
    assert sorted(p.name for p in (datasets / "p" / "2_c").iterdir()) == ["a.png", "a.txt"]
    assert result.images == 1 and result.captions == 1 and any("notes.pdf" in s for s in result.skipped)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("z.png", buffer.getvalue())
    with pytest.raises(CoreError, match="not 1 zip"):
        import_uploads([UploadedFile("a.zip", archive.getvalue()), UploadedFile("b.png", b"x")], datasets, "q")
    result = import_uploads([UploadedFile("a.zip", archive.getvalue())], datasets, "q", 1, "zipped")
    assert (datasets / "q" / "1_zipped" / "z.png").is_file()
    with pytest.raises(CoreError, match="both called"):
        import_uploads([UploadedFile("x/b.png", b"1"), UploadedFile("y/b.png", b"2")], datasets, "r")
    assert not list(datasets.glob(".upload-*"))


def test_background_worker_runs_in_order_queues_and_reports_errors() -> None:
    import threading

    from widgets.base import Panel
    from widgets.worker import BackgroundTask

    panel = Panel()
    task = BackgroundTask(panel.guarded)
    gate, seen = threading.Event(), []
    assert task.start(lambda: gate.wait(30) and "first", seen.append)
    assert task.busy and not task.start(lambda: "refused", seen.append)
    assert task.start(lambda: "queued early", seen.append, queue=True)
    assert task.start(lambda: "queued late", seen.append, queue=True)  # replaces the earlier queued job
    gate.set()
    assert task.wait(30) and not task.busy
    assert seen == ["first", "queued late"]
    task.start(lambda: task.start(lambda: "inline", seen.append) and "outer", seen.append)
    assert task.wait(30) and seen[-2:] == ["inline", "outer"]
    task.start(lambda: 1 / 0, seen.append, lambda: seen.append("finally"))
    assert task.wait(30) and seen[-1] == "finally" and "ZeroDivisionError" in panel.messages.text
