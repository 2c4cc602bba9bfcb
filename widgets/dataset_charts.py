"""The dataset statistics as pictures: resolutions, shorter sides, buckets and tag frequency, as PNG bytes.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, so no global figure state and no
GUI backend), imported inside each function: opening the notebook never pays for matplotlib.
Figures have a white card background so they read in JupyterLab's light and dark themes alike.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

_BAR = "#4c78a8"
_ACCENT = "#f58518"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=96, facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Tags in scripts the default font lacks (Japanese, emoji) draw as boxes; a warning per glyph adds nothing.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.tight_layout()
        figure.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def _bars(axis, labels: Sequence[str], values: Sequence[int], title: str, horizontal: bool = False,
          color: str = _BAR) -> None:
    if not labels:
        axis.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=axis.transAxes)
        axis.set_axis_off()
        axis.set_title(title, fontsize=10)
        return
    from matplotlib.ticker import MaxNLocator

    positions = range(len(labels))
    # Counts are whole images: no 2.5 on the count axis.
    (axis.xaxis if horizontal else axis.yaxis).set_major_locator(MaxNLocator(integer=True))
    if horizontal:
        axis.barh(list(positions), list(values), color=color)
        axis.set_yticks(list(positions), labels=list(labels), fontsize=8)
        axis.invert_yaxis()  # most frequent on top
    else:
        axis.bar(list(positions), list(values), color=color)
        axis.set_xticks(list(positions), labels=list(labels), rotation=45, ha="right", fontsize=8)
    axis.set_title(title, fontsize=10)


def statistics_png(stats, top_tags: int = 15) -> bytes:
    """Four panels from a ``DatasetStatistics``: sizes, shorter sides, buckets, top tags."""
    figure = _figure(11, 7.5)
    scatter, sides, buckets, tags = (figure.add_subplot(2, 2, i) for i in range(1, 5))
    if stats.sizes:
        widths = [size[0] for size in stats.sizes]
        heights = [size[1] for size in stats.sizes]
        counts = list(stats.sizes.values())
        scatter.scatter(widths, heights, s=[20 + 15 * c for c in counts], color=_BAR, alpha=0.6)
        limit = max(widths + heights) * 1.1  # same scale on both axes, so a square image sits on the diagonal
        scatter.axline((0, 0), slope=1, color="#999", linewidth=0.8, linestyle="--")
        scatter.set_xlim(0, limit)
        scatter.set_ylim(0, limit)
    scatter.set_xlabel("width (px)", fontsize=9)
    scatter.set_ylabel("height (px)", fontsize=9)
    scatter.set_title(f"Image sizes ({stats.image_count} usable)", fontsize=10)
    _bars(sides, list(stats.side_histogram), list(stats.side_histogram.values()), "Shorter side (px)")
    bucket_items = sorted(stats.bucket_table.items(), key=lambda item: item[0][0] / item[0][1])
    _bars(buckets, [f"{w}x{h}" for (w, h), _ in bucket_items], [c.images for _, c in bucket_items],
          "Training buckets (images per bucket)", color=_ACCENT)
    frequent = list(stats.tag_frequency.items())[:top_tags]
    _bars(tags, [t for t, _ in frequent], [n for _, n in frequent], f"Top {len(frequent)} tags", horizontal=True)
    return _png(figure)


def tag_frequency_png(frequent: Sequence[tuple[str, int]], title: str = "Most frequent tags") -> bytes:
    """Horizontal bars of ``(tag, count)`` pairs, most frequent first."""
    figure = _figure(7, max(2.0, 0.28 * len(frequent) + 1))
    axis = figure.add_subplot(1, 1, 1)
    _bars(axis, [t for t, _ in frequent], [n for _, n in frequent], title, horizontal=True)
    return _png(figure)
