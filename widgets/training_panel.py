"""Training panel: project, base model, dataset, preset and every option of the trainer's table, with
live checks, a preview of the exact files, named configs, imports, and Start.

View only: ``core.training`` checks values, writes the files and finds the problems. Basic mode
shows the few options a beginner needs; advanced mode (built on first use) shows every option,
grouped, each with its explanation one click away. The trainer's cross-option rules import torch,
so they run in a worker thread after the quick checks have been shown; ``wait()`` blocks until
that worker is idle (tests use it).

Picking a base model applies its preset only while the form is untouched (a fresh panel, or just
after "Reset settings"); once the user has edited, loaded or imported values, the preset is
offered with an "Apply preset" button instead. The project name follows the dataset while it is
still the default (or empty).
"""
from __future__ import annotations

import html
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ipywidgets as w

from core.datasets.naming import project_name
from core.errors import CoreError
from core.training import (
    ModelFacts, TrainingForm, find_base_models, live_checks, load_training_presets, repeat_folders, suggest_preset,
)
from core.training.form import REPEATS
from trainer.options import GROUP_TITLES, OPTIONS, SUBSET
from widgets.base import Panel, button, labelled
from widgets.context import BASE_MODEL, DATASET_FOLDER, PROJECT_NAME, NotebookContext
from widgets.training_fields import OptionField
from widgets.training_files import NO_PRESET, TrainingFileActions
from widgets.training_network import NETWORK_FIELDS, SIZE_FIELDS, NetworkTypeFields, NetworkTypeSync
from widgets.training_views import FolderSettings, finding_row, preview_html, steps_html

OTHER_MODEL = ""
DEFAULT_PROJECT = "my_lora"
_TOP = ("pretrained_model_name_or_path", "train_data_dir")  # shown beside the base model / dataset pickers
_FOLDER_KEYS = ("image_dir", "num_repeats", "class_tokens", "is_reg")
_BASIC = frozenset(o.name for o in OPTIONS if o.level == "basic")


class TrainingPanel(NetworkTypeSync, TrainingFileActions, Panel):
    """Configure a LoRA run. Widgets tests drive: ``project``, ``base_model``, ``preset``,
    ``apply_preset_button``, ``reset_button``, ``fields`` (option name -> OptionField), ``repeats``,
    ``network`` (the basic Network type: ``type``, ``conv_dim``, ``conv_alpha``),
    ``advanced``, ``fix_buttons``, ``config_name``, ``overwrite``, ``save_button``, ``load_choice``,
    ``load_button``, ``import_path``, ``import_button``, ``start_button``, ``steps_html``,
    ``findings_box``, ``preview_toggle``, ``preview``."""

    title = "Training"

    def __init__(self, context: NotebookContext, on_start: Callable[[Path], Any] | None = None, *,
                 vram_gb: float | None = None, has_cuda: bool | None = None) -> None:
        super().__init__()
        self.context = context
        self.on_start = on_start
        if has_cuda is None:
            from core.environment import probe_nvidia_smi  # nvidia-smi only; returns at once without a GPU

            gpus, _ = probe_nvidia_smi()
            has_cuda = bool(gpus)
            vram_gb = vram_gb if vram_gb is not None else (max(g.vram_gb for g in gpus) if gpus else None)
        self.has_cuda, self.vram_gb = has_cuda, vram_gb
        self.presets = load_training_presets()
        self.fields: dict[str, OptionField] = {}
        self.fix_buttons: list[w.Button] = []
        self.report = None
        self._models: dict[str, Any] = {}
        self._quiet = 0  # > 0 while many values change at once (preset, load): one refresh at the end
        self._generation = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self._advanced_built = False
        self._touched = False  # True once the user edited, loaded or imported values (see the module doc)
        self._auto_preset = False  # True while a model's preset is applied for the user
        self._syncing_model = False  # True while the Base model dropdown follows the model path field
        self._auto_project = ""  # the project name last taken from the dataset
        self._suggested = NO_PRESET

        self.project = w.Text(value=context.get(PROJECT_NAME) or DEFAULT_PROJECT, layout=w.Layout(width="300px"))
        self.base_model = w.Dropdown(options=[("(type a path below)", OTHER_MODEL)], value=OTHER_MODEL,
                                     layout=w.Layout(width="460px"))
        self.refresh_models_button = button("Rescan models", tooltip="Look for new files in the models folder")
        self.dataset_choice = w.Dropdown(options=[("(type a path below)", "")], value="",
                                         layout=w.Layout(width="460px"))
        self.refresh_datasets_button = button("Rescan datasets", tooltip="Look for new datasets in the datasets folder")
        self.preset = w.Dropdown(options=[("(keep current values)", NO_PRESET)]
                                 + [(p.label, key) for key, p in self.presets.items()],
                                 value=NO_PRESET, layout=w.Layout(width="300px"))
        self.preset_info = w.HTML()
        self.suggestion_html = w.HTML()
        self.apply_preset_button = button("Apply preset", "info", "Set the suggested preset's values (the others "
                                          "keep theirs)", "magic")
        self.apply_preset_button.layout.display = "none"
        self.reset_button = button("Reset settings", "", "Every setting back to its default; project, model and "
                                   "dataset stay, and the model's preset is applied again", "undo")
        for option in OPTIONS:
            if option.level == "basic":
                self._field(option.name)
        # Repeats is the form's, not the trainer's: num_repeats of every N_name folder for this run.
        self.repeats = OptionField(REPEATS, self.has_cuda, lambda: self._edited(REPEATS.name))
        # The Network type (plain words) stands in basic mode where network_module would be; it writes
        # network_module and network_args, which advanced mode shows as they are.
        self.network = NetworkTypeFields(self.has_cuda, self._network_edited)
        basic_names = [o.name for o in OPTIONS if o.level == "basic" and o.name not in _TOP]
        self.basic_box = w.VBox([self.network.box if name == "network_module" else self.fields[name].box
                                 for name in basic_names])
        self.advanced = w.ToggleButton(value=False, description="Advanced mode", icon="sliders",
                                       tooltip="Every option of the trainer, grouped, with explanations")
        self.advanced_box = w.VBox(layout=w.Layout(display="none"))
        self.folder_settings = FolderSettings(
            [o.name for o in OPTIONS if SUBSET in o.scopes and o.name not in _FOLDER_KEYS], self._changed)

        self.steps_html = w.HTML()
        self.findings_box = w.VBox()
        self.preview_toggle = w.ToggleButton(value=False, description="Preview files", icon="file-text-o")
        self.preview = w.HTML(layout=w.Layout(display="none"))
        self.config_name = w.Text(placeholder="name, e.g. first_try", layout=w.Layout(width="220px"))
        self.overwrite = w.Checkbox(value=False, description="overwrite (old file kept in backups/)", indent=False)
        self.save_button = button("Save config", "", "Save under training_configs/<project>/<name>.toml", "save")
        self.load_choice = w.Dropdown(options=[], layout=w.Layout(width="300px"))
        self.load_button = button("Load", "", "Load the chosen saved config", "folder-open")
        self.import_path = w.Text(placeholder="path to an sd-scripts .toml or a kohya_ss .json",
                                  layout=w.Layout(width="420px"))
        self.import_button = button("Import", "", "Read the file into the form (nothing is run)", "upload")
        self.start_button = button("Start training", "success", "Write the config and start the trainer", "play")

        self._wire()
        self._rescan_models()
        self._rescan_datasets()
        self._sync_from_context()
        self._refresh_saved()
        self._finish([
            labelled("Project name", self.project),
            labelled("Base model", w.HBox([self.base_model, self.refresh_models_button])),
            self.fields["pretrained_model_name_or_path"].box,
            labelled("Dataset", w.HBox([self.dataset_choice, self.refresh_datasets_button])),
            self.fields["train_data_dir"].box,
            self.repeats.box,
            labelled("Preset", w.HBox([self.preset, self.reset_button, self.preset_info])),
            w.HBox([self.suggestion_html, self.apply_preset_button], layout=w.Layout(align_items="center")),
            self.advanced, self.basic_box, self.advanced_box,
            w.HTML("<b>Live checks</b>"), self.steps_html, self.findings_box,
            self.preview_toggle, self.preview,
            w.HBox([self.config_name, self.overwrite, self.save_button]),
            w.HBox([self.load_choice, self.load_button]),
            w.HBox([self.import_path, self.import_button]),
            self.start_button,
        ])
        self._refresh()

    # ------------------------------------------------------------------ building

    def _field(self, name: str) -> OptionField:
        if name not in self.fields:
            option = next(o for o in OPTIONS if o.name == name)
            self.fields[name] = OptionField(option, self.has_cuda, lambda: self._edited(name))
        return self.fields[name]

    def build_advanced(self) -> None:
        """Create every option's widget, grouped by the table's groups (done once, on first use)."""
        if self._advanced_built:
            return
        self._advanced_built = True
        groups: dict[str, list[w.Widget]] = {group: [] for group in GROUP_TITLES}
        for option in OPTIONS:
            if option.name in _TOP:
                continue  # the model and dataset fields are shown once, at the top
            groups.setdefault(option.group, []).append(self._field(option.name).box)
        accordion = w.Accordion(children=[w.VBox(boxes) for boxes in groups.values()])
        for index, group in enumerate(groups):
            accordion.set_title(index, GROUP_TITLES.get(group, group))
        self.advanced_box.children = [accordion, w.HTML("<b>Per-folder settings</b>"), self.folder_settings.box]
        self._update_folders()

    def _wire(self) -> None:
        self.project.observe(lambda c: self._project_changed(), names="value")
        self.base_model.observe(lambda c: self._base_model_chosen(c["new"]), names="value")
        self.refresh_models_button.on_click(self.guarded(lambda _b: self._rescan_models()))
        self.preset.observe(lambda c: self.guarded(self._preset_chosen)(c["new"]), names="value")
        self.apply_preset_button.on_click(self.guarded(lambda _b: self.apply_suggested_preset()))
        self.reset_button.on_click(self.guarded(lambda _b: self.reset_settings()))
        self.config_name.observe(lambda c: self._changed(), names="value")  # the preview shows that file
        self.fields["pretrained_model_name_or_path"].widget.observe(lambda c: self._model_path_changed(),
                                                                    names="value")
        self.advanced.observe(lambda c: self._toggle_advanced(c["new"]), names="value")
        self.preview_toggle.observe(lambda c: self._toggle_preview(c["new"]), names="value")
        self.fields["train_data_dir"].widget.observe(lambda c: self._dataset_changed(), names="value")
        self.dataset_choice.observe(lambda c: c["new"] and self._set_values({"train_data_dir": c["new"]}), names="value")
        self.refresh_datasets_button.on_click(self.guarded(lambda _b: self._rescan_datasets()))
        self.save_button.on_click(self.guarded(lambda _b: self.save(), busy=self.save_button))
        self.load_button.on_click(self.guarded(lambda _b: self.load(), busy=self.load_button))
        self.import_button.on_click(self.guarded(lambda _b: self.import_file(), busy=self.import_button))
        self.start_button.on_click(self.guarded(lambda _b: self.start(), busy=self.start_button))
        self.context.on_change(BASE_MODEL, lambda value: self._rescan_models(select=value))
        self.context.on_change(DATASET_FOLDER, lambda value: self._set_values({"train_data_dir": str(value)}))
        self.context.on_change(PROJECT_NAME, lambda value: setattr(self.project, "value", value or ""))

    def _sync_from_context(self) -> None:
        if self.context.get(DATASET_FOLDER):
            self.fields["train_data_dir"].set_value(str(self.context.get(DATASET_FOLDER)))
        if self.context.get(BASE_MODEL):
            self._rescan_models(select=self.context.get(BASE_MODEL))

    # ------------------------------------------------------------------ reactions

    @contextmanager
    def _batch(self):
        """Change many values with one refresh at the end."""
        self._quiet += 1
        try:
            yield
        finally:
            if self._quiet == 1:
                self._network_after_batch()  # still quiet: its changes join this batch
            self._quiet -= 1
            if not self._quiet:
                self._refresh()

    def _changed(self) -> None:
        if not self._quiet:
            self._refresh()

    def _edited(self, name: str) -> None:
        """A widget changed. Outside a batch that is the user's own edit: the form is then touched
        (the model and dataset paths excepted: presets never set them)."""
        if self._network_syncing:
            return  # the Network type writing its fields: the change that made it refreshes
        if name in NETWORK_FIELDS + SIZE_FIELDS:
            self._network_option_edited(name)
        if not self._quiet and name not in _TOP:
            self._touched = True
        self._changed()

    def _project_changed(self) -> None:
        self._refresh_saved()
        self._changed()

    def _toggle_advanced(self, on: bool) -> None:
        if on:
            self.build_advanced()
        self.advanced_box.layout.display = "" if on else "none"
        self.basic_box.layout.display = "none" if on else ""

    def _toggle_preview(self, on: bool) -> None:
        self.preview.layout.display = "" if on else "none"
        if on:
            self.preview.value = preview_html(getattr(self.report, "plan", None))

    def _dataset_changed(self) -> None:
        current = str(self.fields["train_data_dir"].value() or "")
        known = [value for _label, value in self.dataset_choice.options]
        self.dataset_choice.value = current if current in known else ""
        self._follow_dataset_name(current)
        if self._advanced_built:
            self._update_folders()

    def _follow_dataset_name(self, dataset: str) -> None:
        """Name the project after the dataset while the user has not named it (default, empty, or the
        name taken from the previous dataset)."""
        typed = self.project.value.strip()
        if not dataset or typed not in ("", DEFAULT_PROJECT, self._auto_project):
            return
        try:
            name = project_name(Path(dataset).name)
        except CoreError:
            return
        self._auto_project = name
        self.project.value = name

    def _update_folders(self) -> None:
        root = self.fields["train_data_dir"].value()
        names = [name for name, *_ in repeat_folders(root)]
        names += [name for name, *_ in repeat_folders(self._value("reg_data_dir"), is_reg=True)]
        self.folder_settings.set_folders(names)

    def _rescan_datasets(self) -> None:
        """Offer every dataset project folder (the folder holding N_name folders) under the datasets folder."""
        from core.dataset_manager import DatasetManager

        manager = DatasetManager(self.context.paths)
        found = [(name, str(manager.datasets_dir / name)) for name in manager.projects()]
        current = self.fields["train_data_dir"].value()
        self.dataset_choice.options = [("(type a path below)", "")] + found
        self.dataset_choice.value = str(current) if str(current) in dict(found).values() else ""

    def _rescan_models(self, select: Any = None) -> None:
        """List the usable models on disk. ``select`` (a path) is chosen as if picked; else the
        dropdown keeps showing the path in the field, or takes the first model when none is set yet."""
        from core.models import load_presets

        models = [m for m in find_base_models(self.context.paths.models, load_presets()) if m.usable]
        self._models = {str(m.path): m for m in models}
        options = [(m.label, str(m.path)) for m in models] + [("(type a path below)", OTHER_MODEL)]
        if select and str(select) not in self._models:
            options.insert(0, (Path(str(select)).name, str(select)))
        self._syncing_model = True  # new options must not count as a choice (nor overwrite a typed path)
        try:
            self.base_model.options = options
            self.base_model.value = OTHER_MODEL
        finally:
            self._syncing_model = False
        if select:
            self.base_model.value = str(select)
        elif not self._value("pretrained_model_name_or_path") and models:
            self.base_model.value = str(models[0].path)  # found on disk and nothing chosen yet: take it
        else:
            self._model_path_changed()

    def _model_path_changed(self) -> None:
        """Keep the Base model dropdown on the model the path field names (after Load, Import, typing)."""
        current = str(self._value("pretrained_model_name_or_path") or "")
        known = [value for _label, value in self.base_model.options]
        wanted = current if current in known else OTHER_MODEL
        if self.base_model.value != wanted:
            self._syncing_model = True
            try:
                self.base_model.value = wanted
            finally:
                self._syncing_model = False

    def _base_model_chosen(self, path: str) -> None:
        if not path or self._syncing_model:
            return
        with self._batch():
            self.fields["pretrained_model_name_or_path"].set_value(path)
            self._offer_preset(self._model_preset(path))
        self.context.set(BASE_MODEL, path)

    def _model_preset(self, path: str) -> str | None:
        model = self._models.get(path)
        if model is None:
            return None
        return suggest_preset(model.path, model.family, model.v_prediction, self.presets, model.model_preset)

    def _offer_preset(self, key: str | None) -> None:
        """Apply the model's preset while the form is untouched; otherwise offer it with a button."""
        self._suggested = key or NO_PRESET
        offer = bool(key) and self._touched and key != self.preset.value
        if key and not self._touched:
            self.apply_suggested_preset()
        label = self.presets[key].label if key else ""
        self.suggestion_html.value = (f'<span class="lora-muted">Suggested for this model: <b>{html.escape(label)}'
                                      "</b> (your values are kept until you apply it)</span>" if offer else "")
        self.apply_preset_button.layout.display = "" if offer else "none"

    def apply_suggested_preset(self) -> None:
        """Apply the preset suggested for the chosen base model."""
        key = self._suggested
        if key == NO_PRESET:
            raise CoreError("There is no preset suggestion for this model.", "Pick a preset in the list.")
        self._auto_preset = True
        try:
            self._set_preset(key)
        finally:
            self._auto_preset = False
        self.suggestion_html.value = ""
        self.apply_preset_button.layout.display = "none"

    def _set_preset(self, key: str) -> None:
        """Show ``key`` in the preset dropdown and apply it (again, when it is already shown)."""
        if self.preset.value == key:
            self.apply_preset(key)
        else:
            self.preset.value = key  # the observer applies it

    def _preset_chosen(self, key: str) -> None:
        if key != NO_PRESET and not self._auto_preset and not self._quiet:
            self._touched = True  # the user's own choice: a model picked later only suggests its preset
        self.apply_preset(key)

    def apply_preset(self, key: str) -> None:
        """Set every value of preset ``key`` (the other options keep theirs)."""
        if key == NO_PRESET:
            self.preset_info.value = ""
            return
        preset = self.presets[key]
        with self._batch():
            self._set_values(preset.values)
            kept = self._preset_network(preset.network_type)
        self.preset_info.value = f'<span class="lora-muted">{html.escape(preset.description + kept)}</span>'

    def reset_settings(self) -> None:
        """Every setting back to the table's default (project, model and dataset stay); the form is
        untouched again, so the chosen model's preset is applied."""
        with self._batch():
            for name, field in self.fields.items():
                if name not in _TOP:
                    field.set_value(None)
            self.repeats.set_value(None)
            self._reset_network()
            self.folder_settings.replace({})
            self._set_preset(NO_PRESET)
            self._touched = False
            self._offer_preset(self._model_preset(str(self._value("pretrained_model_name_or_path") or "")))
        self.messages.clear()
        self.messages.ok("Settings reset to their defaults" + (f", then the {self.presets[self.preset.value].label} "
                                                               "preset applied" if self.preset.value else "") + ".")

    def _set_values(self, values: dict[str, Any]) -> None:
        with self._batch():
            for name, value in values.items():
                self._field(name).set_value(value)
                if name not in _BASIC and not self._advanced_built:
                    self.build_advanced()  # an advanced value must be visible where the user can change it

    def apply_fix(self, fix: dict[str, Any]) -> None:
        """Apply a finding's fix: option -> value (None: back to default / unset)."""
        self._touched = True
        self._set_values(fix)
        self.messages.clear()
        self.messages.ok("Applied: " + ", ".join(f"{k} = {v!r}" for k, v in fix.items()))

    # ------------------------------------------------------------------ the form and the checks

    def _value(self, name: str) -> Any:
        field = self.fields.get(name)
        return field.value() if field else None

    def form(self) -> TrainingForm:
        """The form as the widgets show it now."""
        values = {name: field.value() for name, field in self.fields.items()}
        overrides = {k: dict(v) for k, v in self.folder_settings.overrides.items() if v}
        return TrainingForm(self.project.value.strip(), values, overrides, self.repeats.value(), self.network.key,
                            self.network.conv_dim.value(), self.network.conv_alpha.value())

    def _facts(self) -> ModelFacts:
        model = self._models.get(str(self._value("pretrained_model_name_or_path")))
        return ModelFacts(model.family if model else None, model.v_prediction if model else None,
                          self.vram_gb, self.has_cuda)

    def _refresh(self) -> None:
        """Quick checks now; the trainer's own rules in the worker, shown when they are done."""
        form, facts, name = self.form(), self._facts(), self.config_name.value.strip() or None
        with self._lock:
            self._generation += 1
            generation = self._generation
        quick = live_checks(form, self.context.paths, facts, include_rules=False, name=name)
        with self._lock:
            self._show(quick)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-checks")
        self._pending = self._executor.submit(self._full_check, form, facts, generation, name)

    def _full_check(self, form: TrainingForm, facts: ModelFacts, generation: int, name: str | None) -> None:
        if generation != self._generation:
            return  # values changed since: a newer check is queued
        try:
            report = live_checks(form, self.context.paths, facts, include_rules=True, name=name)
        except Exception as problem:  # noqa: BLE001 - a check must never break the panel
            self.messages.warning(f"The full checks could not run: {problem}")
            return
        with self._lock:
            if generation == self._generation:
                self._show(report)

    def _show(self, report: Any) -> None:
        self.report = report
        self.steps_html.value = steps_html(report.steps)
        rows, buttons = [], []
        for finding in report.findings:
            row, fix = finding_row(finding, self.guarded(self.apply_fix))
            rows.append(row)
            if fix is not None:
                buttons.append(fix)
        if not rows:
            rows = [w.HTML('<div class="lora-muted">No problems found.</div>')]
        self.findings_box.children = rows
        self.fix_buttons = buttons
        if self.preview_toggle.value:
            self.preview.value = preview_html(report.plan)

    def wait(self, timeout: float = 120.0) -> None:
        """Block until the background checks are done (tests call it before reading findings)."""
        pending = self._pending
        if pending is not None:
            pending.result(timeout=timeout)


__all__ = ["TrainingPanel"]
