"""Caption panel: bulk caption edits with a before/after preview, Apply, Undo; and a one-image editor.

View only. Each edit is previewed first (the dataset manager's dry run: nothing written), the
preview shows a few changed files tag by tag, and Apply writes exactly that preview (snapshot
first). Undo restores the captions from before the latest edit (or tagging run, or hand edit),
byte for byte. Edits cover every ``N_name`` folder of the chosen dataset.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import ipywidgets as w

from widgets.base import Panel, button, labelled
from widgets.context import DATASET_FOLDER, NotebookContext
from widgets.dataset_caption_editor import CaptionEditor

TRIGGER, REMOVE, REPLACE, SORT = "trigger", "remove", "replace", "sort"
PREVIEW_FILES = 8
_DIFF_STYLE = {
    "kept": "",
    "added": "color: var(--jp-success-color1, #388e3c); font-weight: bold;",
    "removed": "color: var(--jp-error-color1, #d32f2f); text-decoration: line-through;",
}


def _fit() -> w.Layout:
    """A checkbox as wide as its label (ipywidgets' default 300 px cuts long labels off in the browser)."""
    return w.Layout(width="auto")


class CaptionPanel(Panel):
    """Trigger word, remove tags, search/replace, sort/dedupe: Preview, Apply, Undo; single-image editor."""

    title = "Captions"

    def __init__(self, context: NotebookContext, on_captions_changed: Callable[[], None] | None = None) -> None:
        super().__init__()
        from core.dataset_manager import DatasetManager

        self.context = context
        self.manager = DatasetManager(context.paths)
        self.on_captions_changed = on_captions_changed
        self.plan = None  # the EditPlan on show; Apply writes exactly this

        self.folder_label = w.HTML("")
        self.operation = w.ToggleButtons(options=[("Trigger word", TRIGGER), ("Remove tags", REMOVE),
                                                  ("Search / replace", REPLACE), ("Sort / dedupe", SORT)], value=TRIGGER)
        self.trigger_word = w.Text(placeholder="e.g. ohwx (put first in every caption)")
        self.remove_tags = w.Text(placeholder="e.g. simple background, *hair* (comma separated)",
                                  layout=w.Layout(width="520px"))
        self.remove_match = w.Dropdown(options=[("exact tags", "exact"), ("wildcards (* ?)", "glob"),
                                                ("regular expressions", "regex")], value="exact")
        self.search = w.Text(placeholder="old tag or text")
        self.replace = w.Text(placeholder="new tag or text (empty removes the tag)")
        self.substring = w.Checkbox(value=False, indent=False, layout=_fit(),
                                    description="Replace inside tags too (any text)")
        self.sort_tags = w.Checkbox(value=True, indent=False, layout=_fit(), description="Sort tags alphabetically")
        self.keep_first = w.BoundedIntText(value=1, min=0, max=50, layout=w.Layout(width="100px"))
        self.dedupe = w.Checkbox(value=True, indent=False, layout=_fit(), description="Remove repeated tags")
        self.pages = {
            TRIGGER: w.VBox([labelled("Trigger word", self.trigger_word)]),
            REMOVE: w.VBox([labelled("Tags to remove", self.remove_tags), labelled("Match", self.remove_match)]),
            REPLACE: w.VBox([labelled("Search for", self.search), labelled("Replace with", self.replace), self.substring]),
            SORT: w.VBox([self.sort_tags, labelled("Keep first tags in place", self.keep_first), self.dedupe]),
        }
        self.preview_button = button("Preview", style="info", icon="eye")
        self.apply_button = button("Apply", style="primary", icon="check")
        self.undo_button = button("Undo last change", style="warning", icon="undo")
        self.preview_html = w.HTML("")
        self.preview_button.on_click(self.guarded(lambda _b: self.preview()))
        self.apply_button.on_click(self.guarded(lambda _b: self.apply()))
        self.undo_button.on_click(self.guarded(lambda _b: self.undo()))
        for field in (self.operation, self.trigger_word, self.remove_tags, self.remove_match, self.search,
                      self.replace, self.substring, self.sort_tags, self.keep_first, self.dedupe):
            field.observe(lambda _change: self._forget_plan(), names="value")
        self.editor = CaptionEditor(self.manager, lambda: self.context.dataset_folder, self.messages, self.guarded,
                                    on_saved=self._notify)
        self._finish([
            self.folder_label, self.operation, *self.pages.values(),
            w.HBox([self.preview_button, self.apply_button, self.undo_button]), self.preview_html,
            w.HTML("<hr><b>One image at a time</b>"), self.editor.root,
        ])
        context.on_change(DATASET_FOLDER, lambda _folder: self.guarded(self.reload)())
        self._forget_plan()
        self.reload()

    # --- the chosen dataset -----------------------------------------------------------------------

    def reload(self) -> None:
        """Follow the context's dataset: label, image list, no stale preview."""
        folder = self.context.dataset_folder
        self.folder_label.value = (f"Dataset: <b>{html.escape(str(folder))}</b>" if folder else
                                   '<span class="lora-muted">Choose a dataset in the dataset panel first.</span>')
        self._forget_plan()
        self.editor.reload()

    def _folder(self) -> Path:
        from core.errors import CoreError

        folder = self.context.dataset_folder
        if folder is None:
            raise CoreError("No dataset is chosen.", hint="Pick or import one in the dataset panel first.")
        return folder

    def _forget_plan(self) -> None:
        self.plan = None
        self.apply_button.disabled = True
        for name, page in self.pages.items():
            page.layout.display = "flex" if name == self.operation.value else "none"

    # --- bulk edits -------------------------------------------------------------------------------

    def edits(self) -> list:
        """The caption edits the widgets describe (core's ``CaptionEdit`` objects)."""
        from core.datasets import captions as c
        from core.datasets.tags import split_tags
        from core.errors import CoreError

        operation = self.operation.value
        if operation == TRIGGER:
            return [c.AddTrigger(self.trigger_word.value.strip(), 0)]
        if operation == REMOVE:
            return [c.RemoveTags(tuple(split_tags(self.remove_tags.value)), self.remove_match.value)]
        if operation == REPLACE:
            return [c.ReplaceText(self.search.value if self.substring.value else self.search.value.strip(),
                                  self.replace.value, substring=bool(self.substring.value))]
        chosen = []
        if self.dedupe.value:
            chosen.append(c.DedupeTags())
        if self.sort_tags.value:
            chosen.append(c.SortTags(keep_first=int(self.keep_first.value)))
        if not chosen:
            raise CoreError("Neither sorting nor removing repeats is ticked.", hint="Tick at least one.")
        return chosen

    def preview(self) -> None:
        """Dry run: show what would change (nothing is written)."""
        plan = self.manager.preview_captions(self._folder(), self.edits(), recursive=True)
        self.plan = plan
        self.preview_html.value = plan_html(plan)
        self.apply_button.disabled = not plan.changes

    def apply(self) -> None:
        """Write the previewed plan (snapshot first)."""
        from core.errors import CoreError

        if self.plan is None:
            raise CoreError("Nothing to apply.", hint="Click Preview first; Apply writes what the preview shows.")
        snapshot = self.manager.apply_captions(self.plan)
        count, description = len(self.plan.changes), self.plan.description
        self._forget_plan()
        self.preview_html.value = ""
        if snapshot is None:
            self.messages.info("Nothing changed.")
        else:
            self.messages.ok(f"Changed {count} caption file(s): {description}. Undo restores them.")
        self._changed()

    def undo(self) -> None:
        """Restore the captions from before the latest change, byte for byte."""
        result = self.manager.undo_captions(self._folder())
        self.messages.ok(f"Undid the last change ({result.snapshot.description}): restored {len(result.restored)} caption(s)"
                         + (f", set aside {len(result.removed_created)} it had created" if result.removed_created else "")
                         + ".")
        self._forget_plan()
        self.preview_html.value = ""
        self._changed()

    def _changed(self) -> None:
        self.editor.show(self.editor.image_select.value)  # a bulk edit or undo may have changed the caption on show
        self._notify()

    def _notify(self) -> None:
        if self.on_captions_changed is not None:
            self.on_captions_changed()


def plan_html(plan, files: int = PREVIEW_FILES) -> str:
    """The preview: counts, then a few changed files with their tags marked kept / added / removed."""
    from core.datasets.caption_diff import tag_diff

    head = f"<b>{len(plan.changes)} caption file(s) would change</b>, {plan.unchanged} unchanged."
    rows = []
    for preview in plan.previews[:files]:
        name = html.escape(preview.path.relative_to(plan.folder).as_posix())
        before = "(no caption file)" if preview.before is None else preview.before
        tags = ", ".join(f'<span class="lora-tag-{c.change}" style="{_DIFF_STYLE[c.change]}">{html.escape(c.tag)}</span>'
                         for c in tag_diff(preview.before, preview.after))
        rows.append(f"<div class='lora-section'><b>{name}</b><br>"
                    f"<span class='lora-muted'>before:</span> {html.escape(before)}<br>"
                    f"<span class='lora-muted'>after:</span> {tags}</div>")
    more = f"<div class='lora-muted'>... and {len(plan.previews) - files} more</div>" if len(plan.previews) > files else ""
    skipped = "".join(f"<div class='lora-muted'>skipped {html.escape(s)}</div>" for s in plan.skipped)
    return head + "".join(rows) + more + skipped
