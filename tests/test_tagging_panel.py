"""The tagging panel driven from code with the tiny WD14 tagger (a real onnxruntime run), and core's tag_dataset."""
from __future__ import annotations

from html import escape
from pathlib import Path

import pytest
from PIL import Image

from core.dataset_manager import DatasetManager
from core.datasets.tagging import TaggingRequest, tag_dataset
from core.errors import CoreError
from core.paths import ProjectPaths
from custom.wd14.model import DEFAULT_REPO, KNOWN_REPOS
from tests.fixtures.tagger import TinyTagger
from tests.test_blip_captioner import WORDS as BLIP_WORDS
from tests.test_blip_captioner import tiny_blip  # noqa: F401 - the tiny random BLIP fixture, reused
from widgets.context import DATASET_FOLDER, NotebookContext
from widgets.dataset_panel import DatasetPanel
from widgets.tagging_panel import LOCAL, TaggingPanel

# Solid colours the tiny tagger is wired to recognise (see tests/fixtures/tagger.py).
COLOURS = {"red.png": (255, 0, 0), "blue.png": (0, 0, 255), "green.png": (0, 255, 0), "cyan.png": (0, 255, 255)}


def _dataset(tmp_path: Path) -> tuple[NotebookContext, Path]:
    """A project with two N_name folders of solid-colour images, chosen in the context; plus one rejected image."""
    context = NotebookContext(paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work"))
    project = context.paths.datasets / "colours"
    for index, (name, colour) in enumerate(COLOURS.items()):
        folder = project / ("10_flat" if index < 2 else "5_more")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (80, 80), colour).save(folder / name)
    (project / "_rejected").mkdir()
    Image.new("RGB", (80, 80), (255, 0, 0)).save(project / "_rejected" / "old.png")
    context.set(DATASET_FOLDER, project)
    return context, project


def _panel(context: NotebookContext, tiny_tagger: TinyTagger, **hooks) -> TaggingPanel:
    panel = TaggingPanel(context, **hooks)
    panel.model.value = LOCAL
    panel.model_dir.value = str(tiny_tagger.model_dir)
    return panel


def _caption(path: Path) -> list[str]:
    return path.with_suffix(".txt").read_text(encoding="utf-8").split(", ")


def test_tagging_a_dataset_with_the_tiny_tagger(tmp_path: Path, tiny_tagger: TinyTagger) -> None:
    context, project = _dataset(tmp_path)
    refreshed = []
    panel = _panel(context, tiny_tagger, on_captions_changed=lambda: refreshed.append(True))
    assert str(project) in panel.folder_label.value and not panel.model_dir.disabled
    panel.batch_size.value = 2
    panel.run_button.click()
    assert panel.wait(120)
    assert "Wrote 4 caption(s) for 4 image(s) in 2 folder(s)" in panel.messages.text
    assert "red background" in _caption(project / "10_flat" / "red.png")
    assert "blue background" in _caption(project / "10_flat" / "blue.png")
    assert "long hair" in _caption(project / "5_more" / "green.png")
    assert "hatsune miku" in _caption(project / "5_more" / "cyan.png")
    assert not (project / "_rejected" / "old.txt").exists()  # folders the trainer skips are never tagged
    assert (panel.progress.value, panel.progress.max, panel.progress.bar_style) == (4, 4, "success")
    assert panel.progress_label.value == "done" and not panel.run_button.disabled
    assert "red background (1)" in panel.top_tags_html.value
    assert bytes(panel.top_tags_image.value).startswith(b"\x89PNG")
    assert refreshed == [True]
    assert panel.summary.frequency["red background"] == 1
    # The run is undoable like a caption edit: the captions it created are set aside again.
    undone = DatasetManager(context.paths).undo_captions(project)
    assert len(undone.removed_created) == 4 and not list(project.glob("*/*.txt"))
    assert undone.snapshot.description == "WD14 tagging (existing captions kept)"


def test_tagging_results_show_in_the_dataset_grid(tmp_path: Path, tiny_tagger: TinyTagger) -> None:
    context, project = _dataset(tmp_path)
    dataset = DatasetPanel(context)
    assert dataset.wait(120)
    assert "4 without a caption" in dataset.grid.count_label.value
    red = [item.path.name for item in dataset.grid.shown].index("red.png")
    assert "(no caption)" in dataset.grid.badges[red].value
    panel = _panel(context, tiny_tagger, on_captions_changed=dataset.refresh)
    panel.run_button.click()
    assert panel.wait(120) and dataset.wait(120)
    assert "0 without a caption" in dataset.grid.count_label.value
    red = [item.path.name for item in dataset.grid.shown].index("red.png")
    caption = (project / "10_flat" / "red.txt").read_text(encoding="utf-8").strip()
    cell = dataset.grid.badges[red].value
    assert f'title="{escape(caption, quote=True)}"' in cell  # the whole caption in the tooltip
    first = escape(caption.split(", ")[0])
    assert f'lora-grid-caption" title=' in cell and f">{first}" in cell  # its first tags on the cell
    assert "red background" in caption and "(no caption)" not in cell


def test_existing_captions_are_kept_unless_chosen_and_undo_restores_them(tmp_path: Path, tiny_tagger: TinyTagger) -> None:
    context, project = _dataset(tmp_path)
    mine = project / "10_flat" / "red.txt"
    mine.write_bytes(b"\xef\xbb\xbfmy own words\r\n")
    panel = _panel(context, tiny_tagger)
    assert panel.existing.value == "skip"
    panel.run_button.click()
    assert panel.wait(120)
    assert mine.read_bytes() == b"\xef\xbb\xbfmy own words\r\n"
    assert "Kept 1 existing caption(s)" in panel.messages.text
    panel.existing.value = "append"
    panel.run_button.click()
    assert panel.wait(120)
    appended = mine.read_text(encoding="utf-8-sig")
    assert appended.startswith("my own words, ") and "red background" in appended
    DatasetManager(context.paths).undo_captions(project)
    assert mine.read_bytes() == b"\xef\xbb\xbfmy own words\r\n"


def test_thresholds_and_undesired_tags_reach_the_tagger(tmp_path: Path, tiny_tagger: TinyTagger) -> None:
    context, project = _dataset(tmp_path)
    panel = _panel(context, tiny_tagger)
    panel.undesired_tags.value = "red background, blue_background"
    panel.character_threshold.value = 1.0
    panel.remove_underscore.value = False
    panel.run_button.click()
    assert panel.wait(120)
    red, blue = _caption(project / "10_flat" / "red.png"), _caption(project / "10_flat" / "blue.png")
    assert "red_background" not in red and "blue_background" not in blue
    assert "hatsune_miku" not in _caption(project / "5_more" / "cyan.png")
    assert "long_hair" in _caption(project / "5_more" / "green.png")  # underscores kept as asked
    request = panel.request()
    assert request.undesired_tags == ("red background", "blue_background") and request.character_threshold == 1.0


def test_requests_for_hub_models_download_into_the_cache_folder(tmp_path: Path) -> None:
    context = NotebookContext(paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path))
    panel = TaggingPanel(context)
    assert panel.model.value == DEFAULT_REPO and panel.model_dir.disabled
    assert [value for _, value in panel.model.options][:-1] == list(KNOWN_REPOS)
    panel.run_button.click()
    assert "No dataset is chosen" in panel.messages.text
    context.set(DATASET_FOLDER, tmp_path / "datasets" / "x")
    assert "datasets/x" in panel.folder_label.value
    request = panel.request()
    assert request.repo_id == DEFAULT_REPO and request.model_dir is None
    assert request.download_dir == context.paths.cache / "wd14"
    panel.captioner.value = "blip"
    assert panel._wd14_box.layout.display == "none" and panel._blip_box.layout.display == "flex"
    assert panel.request().blip_model == "Salesforce/blip-image-captioning-large"


def test_bad_model_folder_and_empty_dataset_are_clear_errors(tmp_path: Path, tiny_tagger: TinyTagger) -> None:
    context, project = _dataset(tmp_path)
    panel = TaggingPanel(context)
    panel.model.value = LOCAL
    panel.run_button.click()
    assert "no folder is given" in panel.messages.text
    panel.model_dir.value = str(tmp_path)
    panel.run_button.click()
    assert panel.wait(60)
    assert "has no model.onnx" in panel.messages.text and panel.progress.bar_style == "danger"
    assert panel.progress_label.value == "failed - see the message below" and not panel.run_button.disabled
    # A model file that is not a model at all fails the same way, with the reason in the message area.
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"this is not an onnx model")
    (broken / "selected_tags.csv").write_bytes((tiny_tagger.model_dir / "selected_tags.csv").read_bytes())
    panel.messages.clear()
    panel.model_dir.value = str(broken)
    panel.run_button.click()
    assert panel.wait(60)
    assert panel.progress_label.value == "failed - see the message below" and panel.progress.bar_style == "danger"
    assert "lora-error" in panel.messages.text and "model.onnx" in panel.messages.text
    assert not list(project.glob("*/*.txt"))  # nothing was written
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CoreError, match="No images found"):
        tag_dataset(TaggingRequest(folder=empty, model_dir=tiny_tagger.model_dir))
    with pytest.raises(CoreError, match="existing captions"):
        tag_dataset(TaggingRequest(folder=project, model_dir=tiny_tagger.model_dir, existing="clobber"))


def test_blip_sentences_through_the_panel(tmp_path: Path, tiny_blip: Path) -> None:
    context, project = _dataset(tmp_path)
    mine = project / "10_flat" / "red.txt"
    mine.write_text("keep me", encoding="utf-8")
    panel = TaggingPanel(context)
    panel.captioner.value = "blip"
    panel.blip_model.value = str(tiny_blip)
    panel.run_button.click()
    assert panel.wait(180)
    assert "Wrote 3 caption(s) for 4 image(s)" in panel.messages.text, panel.messages.text
    assert mine.read_text(encoding="utf-8") == "keep me"
    sentence = (project / "5_more" / "green.txt").read_text(encoding="utf-8")
    assert sentence and set(sentence.split()) <= set(BLIP_WORDS) | {"[UNK]"}
    assert str(tiny_blip) in panel.messages.text  # the model named in the summary
