"""The live loss chart as PNG bytes (matplotlib's Agg canvas, imported only when a chart is drawn).

No pyplot: a Figure and its own canvas per drawing, so nothing global is touched from the
monitor's background thread. The chart is drawn on a white card with dark grey text (as the dataset
charts are), so it reads the same in JupyterLab's light and dark themes: no grey passes WCAG's 4.5:1
against both a white and a near-black page.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

from core.training.run_progress import LossPoint

TEXT_GREY = "#444444"
CARD = "white"
LOSS_COLOUR = "#64b5f6"
AVERAGE_COLOUR = "#1e88e5"
VALIDATION_COLOUR = "#fb8c00"


def loss_chart_png(losses: Sequence[LossPoint], validation: Sequence[tuple[int, float]] = (),
                   width: float = 6.4, height: float = 2.6) -> bytes:
    """Loss per step (light), its running average (dark) and validation loss (points) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    figure.patch.set_facecolor(CARD)
    axes = figure.add_subplot(1, 1, 1)
    axes.set_facecolor(CARD)
    finite = [point for point in losses if math.isfinite(point.loss)]
    if finite:
        axes.plot([p.step for p in finite], [p.loss for p in finite], color=LOSS_COLOUR, linewidth=0.8,
                  alpha=0.55, label="loss")
    averaged = [p for p in losses if p.avg_loss is not None and math.isfinite(p.avg_loss)]
    if averaged:
        axes.plot([p.step for p in averaged], [p.avg_loss for p in averaged], color=AVERAGE_COLOUR,
                  linewidth=1.8, label="average")
    checked = [(step, value) for step, value in validation if math.isfinite(value)]
    if checked:
        axes.plot([s for s, _ in checked], [v for _, v in checked], "o", color=VALIDATION_COLOUR,
                  markersize=4, label="validation")
    if not (finite or averaged or checked):
        axes.text(0.5, 0.5, "waiting for the first step", ha="center", va="center", color=TEXT_GREY,
                  transform=axes.transAxes)
    axes.set_xlabel("step", color=TEXT_GREY)
    axes.set_ylabel("loss", color=TEXT_GREY)
    axes.tick_params(colors=TEXT_GREY, labelsize=8)
    for spine in axes.spines.values():
        spine.set_color(TEXT_GREY)
    axes.grid(alpha=0.2)
    if finite or checked:
        legend = axes.legend(loc="upper right", fontsize=8, frameon=False)
        for text in legend.get_texts():
            text.set_color(TEXT_GREY)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor=CARD)
    return buffer.getvalue()
