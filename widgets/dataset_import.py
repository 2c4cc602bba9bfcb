"""The "bring images in" part of the dataset panel: upload, server folder, zip, URL, booru (gallery-dl).

View only: the widgets for each source, and one call into the dataset manager per source. Which
fields show follows the chosen source; booru is offered only when gallery-dl is installed.
"""
from __future__ import annotations

import ipywidgets as w

from widgets.base import labelled

UPLOAD, FOLDER, ZIP, URL, BOORU = "upload", "folder", "zip", "url", "booru"
_HELP = {
    UPLOAD: "Pick images and their .txt captions (or one .zip) from your computer. Best for small sets: "
            "everything travels through the browser. For more than about 100 MB, copy a zip to the server "
            "and use 'Zip file'.",
    FOLDER: "A folder on the server (for example /workspace/my_images). It is copied, never moved; "
            "captions and N_name sub-folders are kept.",
    ZIP: "A .zip on the server. Unsafe archives (links, '..' paths, zip bombs) are refused before anything "
         "is written.",
    URL: "A direct link to a .zip, or a Hugging Face dataset page (https://huggingface.co/datasets/owner/name).",
    BOORU: "A booru search or post URL, downloaded with gallery-dl; its tags become captions.",
}


class ImportSection:
    """Source choice and its fields; :meth:`run` imports with the dataset manager."""

    def __init__(self, booru_available: bool) -> None:
        sources = [("Upload", UPLOAD), ("Server folder", FOLDER), ("Zip file", ZIP), ("URL", URL)]
        if booru_available:
            sources.append(("Booru (gallery-dl)", BOORU))
        self.source = w.ToggleButtons(options=sources, value=UPLOAD, style={"button_width": "130px"})
        self.upload = w.FileUpload(accept="image/*,.txt,.caption,.zip", multiple=True, description="Choose files")
        self.import_path = w.Text(placeholder="/workspace/my_images  or  /workspace/my_images.zip",
                                  layout=w.Layout(width="520px"))
        self.import_url = w.Text(placeholder="https://...", layout=w.Layout(width="520px"))
        # As wide as its label: ipywidgets' default 300 px cuts this one off after "Keep files alr...".
        self.skip_existing = w.Checkbox(value=False, indent=False, layout=w.Layout(width="auto"),
                                        description="Keep files already in the dataset (skip same names) instead of stopping")
        self.help = w.HTML("")
        self._path_row = labelled("Path on the server", self.import_path)
        self._url_row = labelled("Link", self.import_url)
        self.source.observe(lambda _change: self._show(), names="value")
        self.root = w.VBox([self.source, self.help, self.upload, self._path_row, self._url_row, self.skip_existing])
        self._show()

    def _show(self) -> None:
        source = self.source.value
        self.help.value = f'<div class="lora-muted">{_HELP[source]}</div>'
        self.upload.layout.display = "flex" if source == UPLOAD else "none"
        self._path_row.layout.display = "flex" if source in (FOLDER, ZIP) else "none"
        self._url_row.layout.display = "flex" if source in (URL, BOORU) else "none"

    def uploaded(self) -> list:
        """The browser's files as the manager's ``UploadedFile`` list."""
        from core.datasets.uploads import UploadedFile

        return [UploadedFile(str(item["name"]), bytes(item["content"])) for item in self.upload.value]

    def run(self, manager, project: str, repeats: int, concept: str):
        """Import from the chosen source; returns the manager's ``ImportResult``."""
        from core.errors import CoreError

        source = self.source.value
        options = {"on_conflict": "skip" if self.skip_existing.value else "error"}
        if source == UPLOAD:
            result = manager.import_uploads(self.uploaded(), project, repeats, concept, **options)
            self.upload.value = ()  # the bytes are on disk now; free the browser copy
            return result
        if source in (FOLDER, ZIP):
            path = self.import_path.value.strip()
            if not path:
                raise CoreError("No path was given.", hint="Type the folder or zip path on the server.")
            if source == ZIP:
                return manager.import_zip(path, project, repeats, concept, **options)
            return manager.import_folder(path, project, repeats, concept, **options)
        link = self.import_url.value.strip()
        if not link:
            raise CoreError("No link was given.", hint="Paste the address of the zip, dataset page or booru search.")
        if source == BOORU:
            return manager.import_booru(link, project, repeats, concept, **options)
        return manager.import_url(link, project, repeats, concept, **options)
