"""The file half of the training panel: save, load, import and Start.

A mixin of :class:`widgets.training_panel.TrainingPanel` (it uses the panel's widgets and form);
kept apart so each module stays small. View only: ``core.training`` writes and reads the files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import CoreError
from core.training import (
    import_kohya_json, import_sd_scripts_toml, list_configs, live_checks, load_config, save_config, write_run_config,
)
from widgets.context import CONFIG_FILE, PROJECT_NAME

NO_SAVED = ""  # the value of the hint entry shown while a project has no saved configs
NO_PRESET = ""  # the preset dropdown's "(keep current values)"


class TrainingFileActions:
    """Save / Load / Import / Start of the training panel."""

    def _refresh_saved(self) -> None:
        project = self.project.value.strip()
        try:
            names = list_configs(self.context.paths, project)
        except CoreError:
            names = []
        self.load_choice.options = names or [(f"(no saved configs for {project or 'this project'})", NO_SAVED)]

    def _full_report(self, name: str | None = None) -> Any:
        """Every check, the trainer's rules included, shown in the live-checks area."""
        report = live_checks(self.form(), self.context.paths, self._facts(), include_rules=True, name=name)
        with self._lock:
            self._generation += 1  # a check still running in the worker must not replace this one
            self._show(report)
        return report

    def save(self) -> Path:
        """Save under the name typed (overwrite only when ticked; the old file goes to backups/).

        A config with red errors is still saved (work is never lost) but is not made the one the
        monitor starts: the warning names the first error.
        """
        name = self.config_name.value.strip() or None
        report = self._full_report(name)
        saved = save_config(self.form(), self.context.paths, name, overwrite=self.overwrite.value)
        self._refresh_saved()
        self.messages.clear()
        kept = f" (previous version kept as {saved.backups[0]})" if saved.backups else ""
        if report.errors:
            first = report.errors[0]
            if self.context.get(CONFIG_FILE) == saved.path:
                self.context.set(CONFIG_FILE, None)  # the file the monitor would start cannot train now
            self.messages.warning(f"Saved {saved.path}{kept}, but this config cannot train yet: {first.message}",
                                  (first.reason + " " if first.reason else "")
                                  + "Fix the red checks and save again; until then the monitor will not start it.")
            return saved.path
        self.context.set(CONFIG_FILE, saved.path)  # the monitor starts the config saved last
        self.messages.ok(f"Saved {saved.path}{kept}")
        return saved.path

    def _show_loaded(self, result: Any, what: str) -> None:
        with self._batch():
            for field in self.fields.values():
                field.set_value(None)
            self._set_values(result.form.values)
            self._network_batch_edited = True  # the type is what the file's network settings spell
            self.repeats.set_value(result.form.repeats)
            self.project.value = result.form.project  # after the dataset: the loaded name wins over the folder's
            self.folder_settings.replace(result.form.subset_overrides)
            if result.form.subset_overrides:
                self.build_advanced()
            self._set_preset(NO_PRESET)
        self._touched = True  # loaded values are the user's: a model's preset must not overwrite them
        self.messages.clear()
        self.messages.ok(f"{what}: {', '.join(str(p) for p in result.files)}")
        for warning in result.warnings:
            self.messages.warning(warning)

    def load(self) -> None:
        """Load the saved config chosen in ``load_choice``."""
        if not self.load_choice.value:
            raise CoreError(f"No saved config chosen for project {self.project.value.strip()!r}.",
                            "Save one first (or type the project name it was saved under), then pick it in the list.")
        result = load_config(self.context.paths, self.project.value.strip(), self.load_choice.value)
        self._show_loaded(result, "Loaded")

    def import_file(self) -> None:
        """Import an sd-scripts TOML or a kohya_ss GUI JSON file into the form."""
        path = Path(self.import_path.value.strip()).expanduser()
        if not str(path) or str(path) == ".":
            raise CoreError("No file given to import.", "Paste the path of a .toml or kohya_ss .json config.")
        reader = import_kohya_json if path.suffix.lower() == ".json" else import_sd_scripts_toml
        self._show_loaded(reader(path, self.project.value.strip() or None), "Imported")

    def start(self) -> Path | None:
        """Write ``<project>/<project>.toml`` (earlier version kept) and hand it to ``on_start``."""
        report = self._full_report()
        if report.errors:
            first = report.errors[0]
            raise CoreError(f"Not started: {first.message}", first.reason or "Fix the errors in the live checks.")
        saved = write_run_config(self.form(), self.context.paths)
        self.context.set(PROJECT_NAME, saved.plan.project)
        self.context.set(CONFIG_FILE, saved.path)
        self.messages.clear()
        self.messages.ok(f"Config written: {saved.path}")
        if self.on_start is not None:
            self.on_start(saved.path)
        return saved.path
