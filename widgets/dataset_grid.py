"""A paged thumbnail grid: each image with a coloured status badge (ok, corrupt, duplicate, no caption...).

Only one page of cells exists (24 by default) and is refilled when the page or filter changes, so a
dataset of thousands of images costs no more widgets than one of twenty. Thumbnails come from a
loader (the dataset manager's cached thumbnails), asked only for the page on screen.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path

import ipywidgets as w

from widgets.base import button

# Filter values are the keys of core.datasets.image_status.FILTERS.
FILTER_OPTIONS = [("All images", "all"), ("Problems only", "problems"), ("Broken files", "broken"),
                  ("Duplicates", "duplicates"), ("Caption problems", "captions"), ("Odd colour modes", "odd modes")]
CELL_WIDTH = 150
THUMB_SIDE = 128
# A grey box with a cross: shown for files that do not decode (the badge says why).
_PLACEHOLDER = (b'<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128"><rect width="128" height="128" '
                b'fill="#8884"/><path d="M40 40L88 88M88 40L40 88" stroke="#c33" stroke-width="6"/></svg>')
_GRID_CSS = """<style>
.lora-grid-cell { border: 1px solid var(--jp-border-color2, #ccc); border-radius: 4px; padding: 3px; }
.lora-badge { display: inline-block; margin: 2px 0; padding: 0 5px; font-size: 0.85em; border-left-width: 3px; }
.lora-grid-name { font-size: 0.82em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; width: 138px; }
.lora-grid-caption { font-size: 0.78em; line-height: 1.25; width: 138px; max-height: 2.6em; overflow: hidden;
  overflow-wrap: anywhere; }
</style>"""

ThumbnailLoader = Callable[[Sequence[Path]], list]


class ThumbnailGrid:
    """The grid component; ``root`` is its widget. Give it statuses with :meth:`set_items`."""

    def __init__(self, loader: ThumbnailLoader, per_page: int = 24) -> None:
        self._loader = loader
        self.per_page = per_page
        self.page = 0
        self.pages = 1
        self.items: list = []  # every ImageStatus of the dataset
        self.shown: list = []  # the ImageStatus objects on the current page
        self.filter = w.Dropdown(options=FILTER_OPTIONS, value="all", description="Show",
                                 layout=w.Layout(width="260px"))
        self.prev_button = button("◀ Previous", tooltip="Previous page")
        self.next_button = button("Next ▶", tooltip="Next page")
        self.page_label = w.Label("")
        self.count_label = w.HTML("")
        self.images = [w.Image(format="jpeg", width=THUMB_SIDE, height=THUMB_SIDE) for _ in range(per_page)]
        self.badges = [w.HTML("") for _ in range(per_page)]
        self.cells = []
        for image, badge in zip(self.images, self.badges):
            cell = w.VBox([image, badge], layout=w.Layout(width=f"{CELL_WIDTH}px", display="none"))
            cell.add_class("lora-grid-cell")
            self.cells.append(cell)
        self.grid = w.GridBox(self.cells, layout=w.Layout(
            grid_template_columns=f"repeat(auto-fill, {CELL_WIDTH + 8}px)", grid_gap="6px"))
        self.prev_button.on_click(lambda _b: self.go(self.page - 1))
        self.next_button.on_click(lambda _b: self.go(self.page + 1))
        self.filter.observe(lambda _change: self.go(0), names="value")
        navigation = w.HBox([self.filter, self.prev_button, self.page_label, self.next_button])
        self.root = w.VBox([w.HTML(_GRID_CSS), self.count_label, navigation, self.grid])

    @property
    def visible(self) -> list:
        """The statuses that pass the current filter."""
        return [item for item in self.items if item.matches(self.filter.value)]

    def set_items(self, statuses: list) -> None:
        """Show these statuses (the page is kept when possible) and redraw."""
        self.items = list(statuses)
        self.go(self.page)

    def go(self, page: int) -> None:
        """Show page ``page`` (0-based, clamped) of the filtered images."""
        from core.datasets.image_status import count_captionless, count_levels, page_of

        visible = self.visible
        self.shown, self.page, self.pages = page_of(visible, page, self.per_page)
        self.page_label.value = f"page {self.page + 1} of {self.pages}"
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.pages - 1
        counts = count_levels(self.items)
        unchecked = sum(1 for item in self.items if not item.checked)
        text = (f"<b>{len(self.items)} image(s)</b>: {counts['ok']} ok, {counts['warning']} with warnings, "
                f"{counts['error']} broken; {count_captionless(self.items)} without a caption")
        if unchecked:
            text += f' <span class="lora-muted">({unchecked} not checked yet)</span>'
        if len(visible) != len(self.items):
            text += f"; {len(visible)} shown by the filter"
        self.count_label.value = text
        self._fill()

    def _fill(self) -> None:
        thumbs = self._loader([item.path for item in self.shown]) if self.shown else []
        for index, cell in enumerate(self.cells):
            if index >= len(self.shown):
                cell.layout.display = "none"
                continue
            item, data = self.shown[index], thumbs[index]
            image = self.images[index]
            if data is None:
                image.format, image.value = "svg+xml", _PLACEHOLDER
            else:
                image.format, image.value = "jpeg", data
            self.badges[index].value = badge_html(item)
            cell.layout.display = "flex"


def badge_html(item) -> str:
    """The status badge, the file name and the caption's first tags under a thumbnail (details and the
    whole caption in the tooltips)."""
    title = html.escape("\n".join(item.details) or item.label, quote=True)
    name = html.escape(item.relative)
    if item.caption:
        caption = (f'<div class="lora-grid-caption" title="{html.escape(item.caption, quote=True)}">'
                   f'{html.escape(item.caption_preview())}</div>')
    else:
        caption = '<div class="lora-grid-caption lora-muted">(no caption)</div>'
    return (f'<div class="lora-badge lora-msg lora-{item.level}" title="{title}">{html.escape(item.label)}</div>'
            f'<div class="lora-grid-name" title="{name}">{name}</div>{caption}')
