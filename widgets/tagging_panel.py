"""Tagging panel: WD14 tags (or BLIP sentences) for every image of the chosen dataset, with a progress bar.

View only: the dataset manager runs the tagger (``core.datasets.tagging``) in a background thread
and keeps a caption snapshot, so the caption panel's Undo takes a tagging run back. Existing
captions are kept unless the user picks "add to" or "replace". Nothing heavy (onnxruntime, torch)
is imported until Run is clicked.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import ipywidgets as w

from widgets.base import Panel, button, labelled
from widgets.context import DATASET_FOLDER, NotebookContext
from widgets.worker import BackgroundTask

LOCAL = "local"  # the model dropdown's value for "use the folder typed below"
EXISTING_OPTIONS = [
    ("Keep existing captions (tag only images without one)", "skip"),
    ("Add the new tags to existing captions", "append"),
    ("Replace existing captions", "overwrite"),
]
TOP_TAGS = 25


def _model_options() -> list[tuple[str, str]]:
    from custom.wd14.model import KNOWN_REPOS  # plain data; onnxruntime is imported only when a model loads

    return [(repo.split("/", 1)[1], repo) for repo in KNOWN_REPOS] + [("Local folder (below)", LOCAL)]


def _fit() -> w.Layout:
    """A checkbox as wide as its label (ipywidgets' default 300 px cuts long labels off in the browser)."""
    return w.Layout(width="auto")


class TaggingPanel(Panel):
    """WD14 model, thresholds, undesired tags, what to do with existing captions, BLIP; Run and progress."""

    title = "Tagging"

    def __init__(self, context: NotebookContext, on_captions_changed: Callable[[], None] | None = None) -> None:
        super().__init__()
        from custom.wd14.model import DEFAULT_REPO

        self.context = context
        self.on_captions_changed = on_captions_changed
        self.task = BackgroundTask(self.guarded, "tagging-panel")
        self.summary = None  # the latest TaggingSummary

        self.folder_label = w.HTML("")
        self.captioner = w.ToggleButtons(options=[("WD14 tags", "wd14"), ("BLIP sentence", "blip")], value="wd14")
        self.model = w.Dropdown(options=_model_options(), value=DEFAULT_REPO, layout=w.Layout(width="360px"))
        self.model_dir = w.Text(placeholder="/workspace/models/wd14 (holds model.onnx and selected_tags.csv)",
                                layout=w.Layout(width="520px"))
        self.general_threshold = w.FloatSlider(value=0.35, min=0.0, max=1.0, step=0.01, readout_format=".2f")
        self.character_threshold = w.FloatSlider(value=0.85, min=0.0, max=1.0, step=0.01, readout_format=".2f")
        self.undesired_tags = w.Text(placeholder="e.g. simple background, white background",
                                     layout=w.Layout(width="520px"))
        self.remove_underscore = w.Checkbox(value=True, indent=False, layout=_fit(),
                                            description="long_hair -> long hair (kaomoji kept)")
        self.character_tags_first = w.Checkbox(value=False, indent=False, layout=_fit(),
                                               description="Character tags first")
        self.blip_model = w.Text(value="Salesforce/blip-image-captioning-large", layout=w.Layout(width="520px"))
        self.existing = w.Dropdown(options=EXISTING_OPTIONS, value="skip", layout=w.Layout(width="420px"))
        self.batch_size = w.BoundedIntText(value=4, min=1, max=256, layout=w.Layout(width="100px"))
        self.run_button = button("Tag the dataset", style="primary", icon="tags")
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="420px"))
        self.progress_label = w.Label("")
        self.top_tags_html = w.HTML("")
        self.top_tags_image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.run_button.on_click(self.guarded(lambda _b: self.run()))

        self._wd14_box = w.VBox([
            labelled("Model", self.model), labelled("Local model folder", self.model_dir),
            labelled("General tags threshold", self.general_threshold),
            labelled("Character tags threshold", self.character_threshold),
            labelled("Never write these tags", self.undesired_tags),
            w.HBox([self.remove_underscore, self.character_tags_first]),
            w.HTML('<div class="lora-muted">Lower thresholds give more (and less certain) tags; 0.35 / 0.85 are '
                   "usual. The model is downloaded once into the cache folder and reused.</div>"),
        ])
        self._blip_box = w.VBox([
            labelled("BLIP model", self.blip_model),
            w.HTML('<div class="lora-muted">One plain-English sentence per image. To have tags and a sentence, '
                   "tag with WD14 first, then run BLIP with 'Add ... to existing captions'.</div>"),
        ])
        self.captioner.observe(lambda _change: self._show(), names="value")
        self.model.observe(lambda _change: self._show(), names="value")
        self._finish([
            self.folder_label, self.captioner, self._wd14_box, self._blip_box,
            labelled("Existing captions", self.existing), labelled("Batch size", self.batch_size),
            w.HBox([self.run_button, self.progress, self.progress_label]),
            self.top_tags_html, self.top_tags_image,
        ])
        context.on_change(DATASET_FOLDER, lambda _folder: self._show())
        self._show()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a tagging run is done."""
        return self.task.wait(timeout)

    def _show(self) -> None:
        folder = self.context.dataset_folder
        self.folder_label.value = (f"Dataset: <b>{html.escape(str(folder))}</b>" if folder else
                                   '<span class="lora-muted">Choose a dataset in the dataset panel first.</span>')
        wd14 = self.captioner.value == "wd14"
        self._wd14_box.layout.display = "flex" if wd14 else "none"
        self._blip_box.layout.display = "none" if wd14 else "flex"
        self.model_dir.disabled = self.model.value != LOCAL

    def request(self):
        """The ``TaggingRequest`` the widgets describe."""
        from core.datasets.tagging import MODEL_SUBDIR, TaggingRequest
        from core.datasets.tags import split_tags
        from core.errors import CoreError

        folder = self.context.dataset_folder
        if folder is None:
            raise CoreError("No dataset is chosen.", hint="Pick or import one in the dataset panel first.")
        local = self.model.value == LOCAL
        if local and not self.model_dir.value.strip():
            raise CoreError("'Local folder' is chosen but no folder is given.",
                            hint="Type the folder holding model.onnx and selected_tags.csv, or pick a model to download.")
        return TaggingRequest(
            folder=Path(folder), captioner=self.captioner.value,
            repo_id="local/model" if local else self.model.value,
            model_dir=Path(self.model_dir.value.strip()).expanduser() if local else None,
            download_dir=None if local else self.context.paths.cache / MODEL_SUBDIR,
            general_threshold=float(self.general_threshold.value),
            character_threshold=float(self.character_threshold.value),
            undesired_tags=tuple(split_tags(self.undesired_tags.value)),
            remove_underscore=bool(self.remove_underscore.value),
            character_tags_first=bool(self.character_tags_first.value),
            existing=self.existing.value, batch_size=int(self.batch_size.value),
            blip_model=self.blip_model.value.strip(),
        )

    def run(self) -> None:
        """Start tagging in the background; the progress bar follows it."""
        from core.dataset_manager import DatasetManager

        request = self.request()
        self.messages.clear()
        self.top_tags_html.value, self.top_tags_image.value = "", b""
        self.progress.value, self.progress.max, self.progress.bar_style = 0, 1, ""
        self.progress_label.value = "loading the model..."
        self.run_button.disabled = True

        def progress(done: int, total: int) -> None:
            self.progress.max = max(total, 1)
            self.progress.value = min(done, self.progress.max)
            self.progress_label.value = f"{done} / {total} images"

        def finished() -> None:
            self.run_button.disabled = False
            if self.progress.bar_style != "success":
                self.progress.bar_style = "danger"
                self.progress_label.value = "failed - see the message below"
            if self.on_captions_changed is not None:
                self.on_captions_changed()  # captions may have changed even when the run failed half-way

        if not self.task.start(lambda: DatasetManager.tag_dataset(request, progress), self._show_summary, finished):
            self.run_button.disabled = False
            self.messages.warning("Tagging is already running.", "Wait for it to finish.")

    def _show_summary(self, summary) -> None:
        self.summary = summary
        self.progress.bar_style = "success"
        self.progress.value = self.progress.max
        self.progress_label.value = "done"
        for level, text in summary.messages():
            self.messages.show(level, text)
        top = summary.top_tags(TOP_TAGS)
        if top:
            from widgets.dataset_charts import tag_frequency_png

            items = ", ".join(f"{html.escape(tag)} ({count})" for tag, count in top)
            self.top_tags_html.value = f"<b>Top tags written:</b> {items}"
            self.top_tags_image.value = tag_frequency_png(top)
