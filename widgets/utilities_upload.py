"""The utilities panel's "Upload to Hugging Face" tab: a LoRA with its card and samples, or a dataset folder.

The token is read from the Password field and the field is emptied at once, before the upload
starts; from then on it exists only as an argument of the core call. The repo is private unless
the user unticks the box.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from widgets.base import OK, button, labelled
from widgets.context import DATASET_FOLDER
from widgets.style import message_html


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"


class UploadSection:
    """Widgets: ``repo``, ``private``, ``token``, ``base_model``, ``trigger_words``, ``include_samples``,
    ``upload_button``, ``dataset_folder``, ``dataset_repo``, ``dataset_button``, ``progress``,
    ``progress_text``, ``result``."""

    def __init__(self, panel: Any) -> None:
        self.panel = panel
        layout = w.Layout(width="420px")
        self.repo = w.Text(placeholder="my-style-lora or user/my-style-lora", layout=layout)
        self.private = w.Checkbox(value=True, description="private repo (only you can see it)", indent=False)
        self.token = w.Password(placeholder="a write token (empty: HF_TOKEN or your saved login)", layout=layout)
        self.base_model = w.Text(placeholder="optional: Hub id, e.g. stabilityai/stable-diffusion-xl-base-1.0",
                                 layout=layout)
        self.trigger_words = w.Text(placeholder="optional: comma-separated (empty: from the LoRA's metadata)",
                                    layout=layout)
        self.include_samples = w.Checkbox(value=True, description="include the latest training samples",
                                          indent=False)
        self.upload_button = button("Upload LoRA", "primary", "Create the repo if needed and upload", "upload")
        self.dataset_folder = w.Text(value=str(panel.context.get(DATASET_FOLDER) or ""),
                                     placeholder="dataset folder on the server", layout=layout)
        self.dataset_repo = w.Text(placeholder="my-dataset or user/my-dataset", layout=layout)
        self.dataset_button = button("Upload dataset", "", "Upload images and captions to a dataset repo", "upload")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=100.0, layout=w.Layout(width="320px"))
        self.progress_text = w.Label("")
        self.result = w.HTML("")
        self.upload_button.on_click(panel.guarded(self._start_lora))
        self.dataset_button.on_click(panel.guarded(self._start_dataset))
        panel.context.on_change(DATASET_FOLDER, self._dataset_changed)
        self.widget = w.VBox([
            w.HTML('<span class="lora-muted">Uploads the LoRA, its latest sample images and a model card '
                   '(base model, trigger words, how to use it, training settings). Needs a token with '
                   '<b>write</b> permission; it is not kept anywhere.</span>'),
            labelled("Repo name", self.repo), self.private, labelled("Token", self.token),
            labelled("Base model (card)", self.base_model), labelled("Trigger words", self.trigger_words),
            self.include_samples, self.upload_button,
            w.HTML("<b>Dataset</b>"), labelled("Dataset folder", self.dataset_folder),
            labelled("Dataset repo", self.dataset_repo), self.dataset_button,
            w.HBox([self.progress, self.progress_text]), self.result,
        ])

    def _dataset_changed(self, value: Any) -> None:
        if not self.dataset_folder.value:
            self.dataset_folder.value = str(value or "")

    def _take_token(self) -> str:
        # Out of the widget first: whatever happens next, the token is not kept in a saved value.
        token = self.token.value
        self.token.value = ""
        return token

    def _reset(self) -> None:
        self.result.value = ""
        self.progress.value = 0.0
        self.progress.bar_style = ""
        self.progress_text.value = "starting"

    def _start_lora(self, *_: Any) -> None:
        token = self._take_token()
        self._reset()
        self.panel.run_in_background(lambda: self._upload_lora(token), self.upload_button)

    def _start_dataset(self, *_: Any) -> None:
        token = self._take_token()
        self._reset()
        self.panel.run_in_background(lambda: self._upload_dataset(token), self.dataset_button)

    def _upload_lora(self, token: str) -> None:
        from core.utilities_manager import find_sample_images, upload_lora

        lora = self.panel.lora_path.value.strip()
        images = find_sample_images(lora) if lora and self.include_samples.value else []
        words = [x.strip() for x in self.trigger_words.value.split(",") if x.strip()] or None
        self._finished(self._guarded_upload(lambda: upload_lora(
            lora, self.repo.value, images=images, token=token or None, private=self.private.value,
            base_model=self.base_model.value.strip() or None, trigger_words=words, progress=self._on_progress,
            show_bar=False)))

    def _upload_dataset(self, token: str) -> None:
        from core.utilities_manager import upload_dataset

        self._finished(self._guarded_upload(lambda: upload_dataset(
            self.dataset_folder.value.strip(), self.dataset_repo.value, token=token or None,
            private=self.private.value, progress=self._on_progress, show_bar=False)))

    def _guarded_upload(self, call: Any) -> Any:
        try:
            return call()
        except BaseException:
            self.progress.bar_style = "danger"
            self.progress_text.value = "failed"
            raise

    def _finished(self, result: Any) -> None:
        self.progress.value = 100.0
        self.progress.bar_style = "success"
        self.progress_text.value = "done"
        link = html.escape(result.url)
        visibility = "private" if result.private else "public"
        self.result.value = message_html(OK, f"Uploaded {len(result.files)} files ({_size(result.total_bytes)}) "
                                             f"to {result.repo_id} ({visibility} when new)") + \
            f'<div class="lora-section"><a href="{link}" target="_blank">{link}</a></div>'

    def _on_progress(self, done: int, total: int, name: str) -> None:
        if total:
            self.progress.value = min(100.0, 100.0 * done / total)
        self.progress_text.value = f"{_size(done)} of {_size(total)}"
