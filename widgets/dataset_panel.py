"""Dataset panel: create or import a dataset, see every image with its status, fix problems, see statistics.

View only. The dataset manager imports, validates (decoding every image), moves rejects aside,
converts odd images (keeping the originals) and computes statistics; this panel shows the results.
Long work (imports, checks, statistics) runs in a background thread; ``wait()`` waits for it.

The chosen dataset is the context's ``DATASET_FOLDER`` (the project folder holding ``N_name``
folders, what the trainer calls ``train_data_dir``), so the tagging, caption and training panels
work on the same one.
"""
from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as w

from widgets.base import Panel, button, labelled
from widgets.context import DATASET_FOLDER, PROJECT_NAME, NotebookContext
from widgets.dataset_grid import ThumbnailGrid
from widgets.dataset_import import ImportSection
from widgets.worker import BackgroundTask

_NONE = ""
_FINDINGS_SHOWN = 200


def _section(title: str, *children: w.Widget) -> w.VBox:
    box = w.VBox([w.HTML(f"<b>{html.escape(title)}</b>"), *children])
    box.add_class("lora-section")
    return box


class DatasetPanel(Panel):
    """Create/import a dataset, browse it as a thumbnail grid, validate and fix it, chart its statistics."""

    title = "Dataset"

    def __init__(self, context: NotebookContext, per_page: int = 24) -> None:
        super().__init__()
        from core.dataset_manager import DatasetManager

        self.context = context
        self.manager = DatasetManager(context.paths)
        self.task = BackgroundTask(self.guarded, "dataset-panel")
        self.report = None  # the latest ValidationReport of the chosen dataset
        self.statistics = None  # the latest DatasetStatistics

        # Choose an existing dataset.
        self.dataset = w.Dropdown(options=[("(choose a dataset)", _NONE)], value=_NONE, layout=w.Layout(width="420px"))
        self.refresh_button = button("Refresh", tooltip="Look for datasets again and re-check the chosen one", icon="refresh")
        self.dataset.observe(self._on_choose, names="value")
        self.refresh_button.on_click(self.guarded(lambda _b: self.refresh()))

        # Create or import.
        self.project_name = w.Text(placeholder="my_lora (the project: datasets/<name>/)")
        self.repeats = w.BoundedIntText(value=10, min=1, max=10000, layout=w.Layout(width="100px"))
        self.concept = w.Text(value="", placeholder="mychar (folder becomes <repeats>_<concept>)")
        self.create_button = button("Create empty dataset", tooltip="Make datasets/<project>/<repeats>_<concept>")
        self.importer = ImportSection(self.manager.booru_available())
        self.source, self.upload = self.importer.source, self.importer.upload
        self.import_path, self.import_url = self.importer.import_path, self.importer.import_url
        self.skip_existing = self.importer.skip_existing
        self.import_button = button("Import", style="primary", icon="download")
        self.create_button.on_click(self.guarded(lambda _b: self.create()))
        self.import_button.on_click(self.guarded(lambda _b: self.start_import()))

        # Images.
        self.grid = ThumbnailGrid(self.manager.thumbnails, per_page=per_page)

        # Check and fix.
        self.min_side = w.BoundedIntText(value=256, min=1, max=8192, layout=w.Layout(width="100px"))
        self.validate_button = button("Check every image", style="primary", icon="check")
        self.report_html = w.HTML("")
        self.move_broken_button = button("Move broken files to _rejected/", style="warning", icon="folder")
        self.move_duplicates_button = button("Move duplicates to _rejected/", style="warning", icon="clone")
        self.convert_format = w.Dropdown(options=[("PNG (lossless)", "png"), ("JPEG (smaller)", "jpeg")], value="png",
                                         layout=w.Layout(width="160px"))
        self.convert_button = button("Convert odd colour modes to RGB (originals kept in _originals/)", style="warning")
        self.validate_button.on_click(self.guarded(lambda _b: self.validate()))
        self.move_broken_button.on_click(self.guarded(lambda _b: self.fix("broken")))
        self.move_duplicates_button.on_click(self.guarded(lambda _b: self.fix("duplicates")))
        self.convert_button.on_click(self.guarded(lambda _b: self.fix("convert")))
        self._enable_fixes()

        # Statistics.
        self.stats_resolution = w.Dropdown(options=[("512 (SD1.5)", 512), ("768 (SD2)", 768), ("1024 (SDXL)", 1024)],
                                           value=512, layout=w.Layout(width="160px"))
        self.stats_button = button("Show statistics", icon="bar-chart")
        self.stats_image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.stats_html = w.HTML("")
        self.stats_button.on_click(self.guarded(lambda _b: self.show_statistics()))

        tabs = w.Tab(children=[
            _section("Create a new dataset or bring images in",
                     labelled("Project name", self.project_name), labelled("Repeats", self.repeats),
                     labelled("Concept", self.concept), self.create_button, w.HTML("<hr>"),
                     self.importer.root, self.import_button),
            _section("Every image with its status (hover a badge for details)", self.grid.root),
            _section("Check every image, then fix what you choose (nothing is deleted)",
                     w.HBox([labelled("Smallest side (px)", self.min_side), self.validate_button]), self.report_html,
                     w.HBox([self.move_broken_button, self.move_duplicates_button]),
                     w.HBox([self.convert_format, self.convert_button])),
            _section("Statistics as the trainer will see them",
                     w.HBox([labelled("Training resolution", self.stats_resolution), self.stats_button]),
                     self.stats_image, self.stats_html),
        ], titles=("Create / import", "Images", "Check & fix", "Statistics"))
        self.tabs = tabs
        self._finish([w.HBox([w.Label("Dataset", layout=w.Layout(width="180px")), self.dataset, self.refresh_button]),
                      tabs])
        context.on_change(DATASET_FOLDER, self._on_context_dataset)
        self._list_datasets()
        if context.dataset_folder is not None:  # chosen before this panel existed: show it now
            self._select(context.dataset_folder)
            self.load(context.dataset_folder)

    # --- choosing ---------------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the background work (import, check, statistics) is done."""
        return self.task.wait(timeout)

    @property
    def folder(self) -> Path | None:
        """The chosen dataset folder."""
        return Path(self.dataset.value) if self.dataset.value else None

    def _list_datasets(self) -> None:
        chosen = self.dataset.value
        options = [("(choose a dataset)", _NONE)]
        options += [(name, str(self.manager.datasets_dir / name)) for name in self.manager.projects()]
        if chosen and chosen not in [value for _, value in options]:
            options.append((Path(chosen).name, chosen))
        self.dataset.options = options
        self.dataset.value = chosen

    def _select(self, folder: Path) -> None:
        """Show ``folder`` in the dropdown (adding it when it is not under the datasets folder)."""
        value = str(folder)
        if value not in [v for _, v in self.dataset.options]:
            self.dataset.options = [*self.dataset.options, (Path(value).name, value)]
        self.dataset.value = value

    def _on_choose(self, change) -> None:
        if change["new"]:
            self.guarded(lambda: self.context.set(DATASET_FOLDER, Path(change["new"])))()

    def _on_context_dataset(self, folder) -> None:
        if folder:
            self._select(Path(folder))
            self.load(Path(folder))

    def refresh(self) -> None:
        """List the datasets again and re-check the chosen one (after tagging or caption edits too)."""
        self._list_datasets()
        if self.folder is not None:
            self.load(self.folder)

    def load(self, folder: Path) -> None:
        """Show ``folder``'s images at once (listing only), then check every image in the background."""
        self.report = None
        self._enable_fixes()

        def work():
            self.grid.set_items(self.manager.image_statuses(folder))
            return self.manager.validate(folder, self._settings())

        # Queued when busy: a tagging run or caption edit finishing during a check still gets shown.
        self.task.start(work, self._show_report, queue=True)

    def _start(self, work, done) -> None:
        if not self.task.start(work, done):
            self.messages.warning("The panel is still busy with the previous step.", "Wait for it to finish, then click again.")

    # --- create and import ------------------------------------------------------------------------

    def _names(self) -> tuple[str, int, str]:
        from core.errors import CoreError

        project = self.project_name.value.strip()
        if not project:
            raise CoreError("The project name is empty.", hint="Type a name for your LoRA project, e.g. 'mychar'.")
        return project, int(self.repeats.value), self.concept.value.strip() or project

    def create(self) -> Path:
        """Make the empty ``<project>/<repeats>_<concept>`` folder and choose the project."""
        project, repeats, concept = self._names()
        folder = self.manager.create_dataset(project, repeats, concept)
        self.messages.ok(f"Created {folder}. Put images in it, or import them here.")
        self._chosen_project(folder.parent, project)
        return folder

    def start_import(self) -> None:
        """Import from the chosen source in the background, then choose and check the project."""
        project, repeats, concept = self._names()

        def done(result) -> None:
            self.messages.ok(result.summary())
            for warning in result.warnings:
                self.messages.warning(warning)
            if result.skipped:
                self.messages.info(f"Left out {len(result.skipped)} file(s): " + ", ".join(result.skipped[:5]))
            from core.datasets.importers import project_folder

            self._chosen_project(project_folder(self.manager.datasets_dir, project), project)

        self.messages.clear()
        self.messages.info("Importing...")
        self._start(lambda: self.importer.run(self.manager, project, repeats, concept), done)

    def _chosen_project(self, folder: Path, project: str) -> None:
        self._list_datasets()
        self.context.set(PROJECT_NAME, folder.name or project)
        if self.context.dataset_folder == folder:
            self._select(folder)
            self.load(folder)  # same dataset as before: the context does not call back, so reload here
        else:
            self.context.set(DATASET_FOLDER, folder)

    # --- check and fix ----------------------------------------------------------------------------

    def _settings(self):
        from core.datasets.validation import ValidationSettings

        return ValidationSettings(min_side=int(self.min_side.value))

    def validate(self) -> None:
        """Check every image of the chosen dataset (background)."""
        folder = self._require_folder()
        self._start(lambda: self.manager.validate(folder, self._settings()), self._show_report)

    def _require_folder(self) -> Path:
        from core.errors import CoreError

        if self.folder is None:
            raise CoreError("No dataset is chosen.", hint="Pick one in the Dataset list, or create/import one first.")
        return self.folder

    def _show_report(self, report) -> None:
        from core.datasets.image_status import LABELS, statuses_from_report

        self.report = report
        self.grid.set_items(statuses_from_report(report))
        counts = report.counts()
        rows = "".join(f"<li>{html.escape(LABELS.get(kind, kind))}: {count}</li>" for kind, count in sorted(counts.items()))
        head = (f"<b>{len(report.image_files)} image file(s), {len(report.images)} decodable, "
                f"{len(report.findings)} finding(s).</b>")
        lines = [html.escape(line) for line in report.summary_lines(_FINDINGS_SHOWN)[1 + len(counts):]]
        listing = (f'<div class="lora-mono" style="max-height:220px;overflow:auto">{"<br>".join(lines)}</div>'
                   if lines else "")
        verdict = ('<div class="lora-msg lora-ok">✔ Every image is fine.</div>' if report.ok else "")
        self.report_html.value = f"{head}{verdict}<ul>{rows}</ul>{listing}"
        self._enable_fixes()

    def _enable_fixes(self) -> None:
        from core.datasets import validation as v

        report = self.report
        self.move_broken_button.disabled = report is None or not report.of_kind(*v.BROKEN_KINDS)
        self.move_duplicates_button.disabled = report is None or not report.of_kind(v.DUPLICATE, v.NEAR_DUPLICATE)
        self.convert_button.disabled = report is None or not report.of_kind(*v.ODD_MODE_KINDS)

    def fix(self, which: str) -> None:
        """Apply one fix from the latest report (background): ``broken`` or ``duplicates`` (moved to
        ``_rejected/``), or ``convert`` (odd modes to RGB, originals kept); then check again."""
        from core.datasets import validation as v
        from core.errors import CoreError

        report, folder = self.report, self._require_folder()
        if report is None:
            raise CoreError("Check the images first.", hint="Click 'Check every image'.")
        fixes = {
            "broken": lambda: self.manager.move_rejects(report, v.BROKEN_KINDS),
            "duplicates": lambda: self.manager.move_rejects(report, (v.DUPLICATE, v.NEAR_DUPLICATE)),
            "convert": lambda: self.manager.convert_images(report, image_format=self.convert_format.value),
        }

        def done(result) -> None:
            lines = result.summary_lines()
            self.messages.ok(f"{len(result.moved)} moved, {len(result.converted)} converted. " + "; ".join(lines[:4])
                             + (f"; and {len(lines) - 4} more" if len(lines) > 4 else ""))
            self.load(folder)

        self._start(fixes[which], done)

    # --- statistics -------------------------------------------------------------------------------

    def show_statistics(self) -> None:
        """Compute the statistics with the trainer's bucket maths and draw them (background)."""
        folder = self._require_folder()
        side = int(self.stats_resolution.value)

        def work():
            return self.manager.statistics_at(folder, side)  # core picks the buckets, batch and epochs for it

        def done(stats) -> None:
            from widgets.dataset_charts import statistics_png

            self.statistics = stats
            self.stats_image.value = statistics_png(stats)
            text = "<br>".join(html.escape(line) for line in stats.summary_lines())
            self.stats_html.value = f'<div class="lora-mono">{text}</div>'

        self._start(work, done)
