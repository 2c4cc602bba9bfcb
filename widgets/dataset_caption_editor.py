"""The single-image caption editor of the caption panel: the picture beside its caption, Save.

Saving goes through the dataset manager, which snapshots the old caption first, so the caption
panel's Undo takes a hand edit back like any bulk edit.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ipywidgets as w

from widgets.base import button

PREVIEW_SIDE = 384
_NONE = ""


class CaptionEditor:
    """Image chooser (dropdown, previous/next), the image, its caption text, Save."""

    def __init__(self, manager, folder: Callable[[], Path | None], messages, guarded,
                 on_saved: Callable[[], None] | None = None) -> None:
        self._manager = manager
        self._folder = folder
        self._messages = messages
        self._on_saved = on_saved
        self.image_select = w.Dropdown(options=[("(no images)", _NONE)], value=_NONE, layout=w.Layout(width="420px"))
        self.prev_button = button("◀", tooltip="Previous image")
        self.next_button = button("▶", tooltip="Next image")
        self.image = w.Image(format="jpeg", layout=w.Layout(max_width=f"{PREVIEW_SIDE}px"))
        self.caption = w.Textarea(value="", placeholder="tag one, tag two, ...",
                                  layout=w.Layout(width="100%", height="220px"))
        self.save_button = button("Save caption", style="success", icon="save")
        self.status = w.HTML("")
        self.image_select.observe(lambda change: guarded(lambda: self.show(change["new"]))(), names="value")
        self.prev_button.on_click(guarded(lambda _b: self.step(-1)))
        self.next_button.on_click(guarded(lambda _b: self.step(1)))
        self.save_button.on_click(guarded(lambda _b: self.save()))
        text_side = w.VBox([self.caption, w.HBox([self.save_button, self.status])], layout=w.Layout(flex="1"))
        self.root = w.VBox([w.HBox([self.prev_button, self.image_select, self.next_button]),
                            w.HBox([self.image, text_side])])

    @property
    def current(self) -> Path | None:
        """The image being edited."""
        return Path(self.image_select.value) if self.image_select.value else None

    def reload(self) -> None:
        """List the images of the dataset again, keeping the current one when it is still there."""
        folder = self._folder()
        keep = self.image_select.value
        options = [("(no images)", _NONE)]
        if folder is not None and folder.is_dir():
            from core.datasets.files import list_images

            images = list_images(folder, recursive=True)
            if images:
                options = [(p.relative_to(folder).as_posix(), str(p)) for p in images]
        values = [value for _, value in options]
        self.image_select.options = options
        self.image_select.value = keep if keep in values else values[0]
        self.show(self.image_select.value)

    def step(self, delta: int) -> None:
        """Go to the previous (-1) or next (+1) image."""
        values = [value for _, value in self.image_select.options]
        if self.image_select.value in values and len(values) > 1:
            index = (values.index(self.image_select.value) + delta) % len(values)
            self.image_select.value = values[index]

    def show(self, value: str) -> None:
        """Show the image ``value`` and its caption."""
        self.status.value = ""
        if not value:
            self.image.value, self.caption.value = b"", ""
            return
        path = Path(value)
        thumb = self._manager.thumbnails([path], side=PREVIEW_SIDE)[0]
        self.image.value = thumb or b""
        self.caption.value = self._manager.read_caption(path)
        if thumb is None:
            self.status.value = '<span class="lora-muted">This file does not decode as an image.</span>'

    def save(self) -> None:
        """Write the caption (old one snapshotted for Undo)."""
        from core.errors import CoreError

        folder, image = self._folder(), self.current
        if folder is None or image is None:
            raise CoreError("No image is chosen.", hint="Choose a dataset, then an image from the list.")
        snapshot = self._manager.save_caption(folder, image, self.caption.value)
        if snapshot is None:
            self.status.value = '<span class="lora-muted">No change to save.</span>'
            return
        self.status.value = '<span class="lora-muted">Saved (Undo restores the previous caption).</span>'
        self._messages.ok(f"Saved the caption of {image.name}.")
        if self._on_saved is not None:
            self._on_saved()
