"""Small view pieces of the monitor panel: the status line, the saves list, sample images, the log tail."""
from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as w

from core.training.run_progress import DONE, FAILED, STOPPED, RunProgress, SampleSet

# The progress bar's colour per run status (ipywidgets' bar_style names).
BAR_STYLES = {DONE: "success", STOPPED: "warning", FAILED: "danger"}
IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
MAX_SAMPLES_SHOWN = 8


def status_html(progress: RunProgress, stopping: bool = False) -> str:
    """The summary line under the bar; says so while a stop is being saved."""
    text = html.escape(progress.summary)
    if stopping and not progress.finished:
        text += " · <b>stopping... state is being saved</b>"
    return f'<div class="lora-section">{text}</div>'


def saves_html(progress: RunProgress) -> str:
    """The LoRA files and states saved so far, newest last."""
    if not progress.checkpoints and not progress.saved_states:
        return '<div class="lora-muted">No saves yet.</div>'
    rows = [f"<li>LoRA: <code>{html.escape(str(path))}</code></li>" for path in progress.checkpoints]
    rows += [f"<li>state: <code>{html.escape(str(path))}</code></li>" for path in progress.saved_states]
    return f'<div class="lora-section"><b>Saved</b><ul>{"".join(rows)}</ul></div>'


def log_tail_html(text: str) -> str:
    """The end of the trainer's console log, shown when a run died without saying why."""
    if not text:
        return ""
    return (f'<div class="lora-section"><b>End of the training log</b>'
            f'<div class="lora-mono lora-help">{html.escape(text)}</div></div>')


def sample_widgets(samples: SampleSet) -> list[w.Widget]:
    """One image per sample of the set (files that vanished or are unreadable are skipped)."""
    shown: list[w.Widget] = []
    for index, path in enumerate(samples.paths[:MAX_SAMPLES_SHOWN]):
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        prompt = samples.prompts[index] if index < len(samples.prompts) else ""
        image = w.Image(value=data, format=IMAGE_FORMATS.get(Path(path).suffix.lower(), "png"),
                        layout=w.Layout(width="160px"))
        caption = w.HTML(f'<div class="lora-muted">{html.escape(prompt[:60])}</div>',
                         layout=w.Layout(width="160px"))
        shown.append(w.VBox([image, caption]))
    return shown


def samples_title(samples: SampleSet | None) -> str:
    if samples is None:
        return '<div class="lora-muted">Sample images appear here as the trainer draws them.</div>'
    return f"<b>Samples at step {samples.step}</b>"
