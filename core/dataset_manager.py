"""The dataset side of the Dataset Maker notebook: import, validate, statistics, caption edits with undo.

:class:`DatasetManager` is the one entry point the panels call; the work is done by the small
modules in :mod:`core.datasets`. Every action is also on the command line::

    python -m core.dataset_manager --help

Folders given to the manager may be absolute, or relative to the datasets folder
(``myproject/10_mychar``), or relative to the current directory.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.datasets import (
    booru, caption_history, captions, fixes, image_status, importers, remote, single_caption, thumbnails, uploads,
    validation,
)
from core.datasets.caption_history import Snapshot, UndoResult
from core.datasets.captions import CaptionEdit, EditPlan
from core.datasets.fixes import FixResult
from core.datasets.image_status import ImageStatus
from core.datasets.importers import ImportResult
from core.datasets.validation import ValidationReport, ValidationSettings
from core.paths import ProjectPaths

if TYPE_CHECKING:  # statistics uses the trainer's bucket code, which imports torch: loaded on first use only
    from core.datasets.statistics import BucketSettings, DatasetStatistics
    from core.datasets.tagging import TaggingRequest, TaggingSummary

__all__ = ["DatasetManager", "main"]


class DatasetManager:
    """Imports into ``datasets/<project>/<repeats>_<concept>``, checks, measures and edits captions."""

    def __init__(self, paths: ProjectPaths | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.paths = paths or ProjectPaths.resolve(environ)

    @property
    def datasets_dir(self) -> Path:
        """The folder holding every project's dataset."""
        return self.paths.datasets

    def folder(self, folder: Path | str) -> Path:
        """``folder`` as an absolute path: absolute as given, else under the datasets folder if it is there,
        else relative to the current directory."""
        path = Path(folder).expanduser()
        if path.is_absolute():
            return path
        under = self.datasets_dir / path
        if under.exists() or not path.exists():
            return under  # a missing folder is reported under the datasets folder, where users look first
        return path.resolve()

    def projects(self) -> list[str]:
        """Project folders in the datasets folder (hidden and ``_`` folders left out)."""
        if not self.datasets_dir.is_dir():
            return []
        return sorted(p.name for p in self.datasets_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))

    def subset_dir(self, project: str, repeats: int, concept: str) -> Path:
        """Where an import with these names lands: ``datasets/<project>/<repeats>_<concept>``."""
        return importers.subset_folder(self.datasets_dir, project, repeats, concept)

    def create_dataset(self, project: str, repeats: int = 10, concept: str = "concept") -> Path:
        """Make the empty ``datasets/<project>/<repeats>_<concept>`` folder (kept as it is when it exists)."""
        folder = self.subset_dir(project, repeats, concept)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def image_folders(self, folder: Path | str) -> list[Path]:
        """The folders of ``folder`` the trainer reads images from (its ``N_name`` folders, else itself)."""
        return image_status.image_folders(self.folder(folder))

    # --- import -----------------------------------------------------------------------------------

    def import_zip(self, zip_path: Path | str, project: str, repeats: int = 10, concept: str = "concept", **options) -> ImportResult:
        """Extract a zip safely (see :func:`core.datasets.importers.import_zip`)."""
        return importers.import_zip(Path(zip_path), self.datasets_dir, project, repeats, concept, **options)

    def import_folder(self, source: Path | str, project: str, repeats: int = 10, concept: str = "concept", **options) -> ImportResult:
        """Copy a server folder in (see :func:`core.datasets.importers.import_folder`)."""
        return importers.import_folder(Path(source), self.datasets_dir, project, repeats, concept, **options)

    def import_url(self, url: str, project: str, repeats: int = 10, concept: str = "concept", **options) -> ImportResult:
        """Download a zip link or a Hugging Face dataset page (see :func:`core.datasets.remote.import_url`)."""
        return remote.import_url(url, self.datasets_dir, project, repeats, concept, **options)

    def import_hf_dataset(self, repo_id: str, project: str, repeats: int = 10, concept: str = "concept", **options) -> ImportResult:
        """Download a Hugging Face dataset repo (see :func:`core.datasets.remote.import_hf_dataset`)."""
        return remote.import_hf_dataset(repo_id, self.datasets_dir, project, repeats, concept, **options)

    def import_booru(self, url: str, project: str, repeats: int = 10, concept: str = "concept", **options) -> ImportResult:
        """Download through gallery-dl and clean the tags (see :func:`core.datasets.booru.import_booru`)."""
        return booru.import_booru(url, self.datasets_dir, project, repeats, concept, **options)

    def import_uploads(self, files: Sequence[uploads.UploadedFile], project: str, repeats: int = 10,
                       concept: str = "concept", **options) -> ImportResult:
        """Import files uploaded through the browser (see :func:`core.datasets.uploads.import_uploads`)."""
        return uploads.import_uploads(files, self.datasets_dir, project, repeats, concept, **options)

    @staticmethod
    def booru_available() -> bool:
        """True when gallery-dl is installed, so booru import can be offered."""
        return booru.gallery_dl_executable() is not None

    def clean_booru_tags(self, folder: Path | str, recursive: bool = True) -> booru.TagCleanResult:
        """Turn gallery-dl's ``img.jpg.txt`` tag files into ``img.txt`` captions."""
        return booru.clean_booru_folder(self.folder(folder), recursive)

    # --- validation and fixes ---------------------------------------------------------------------

    def validate(self, folder: Path | str, settings: ValidationSettings | None = None) -> ValidationReport:
        """Decode every image and report every problem; changes nothing."""
        return validation.validate_dataset(self.folder(folder), settings)

    @staticmethod
    def move_rejects(report: ValidationReport, kinds: Sequence[str] = fixes.DEFAULT_REJECT_KINDS,
                     paths: set[Path] | None = None) -> FixResult:
        """Move the chosen files into ``_rejected/`` (never deleted)."""
        return fixes.move_rejects(report, tuple(kinds), paths=paths)

    @staticmethod
    def convert_images(report: ValidationReport, kinds: Sequence[str] = validation.ODD_MODE_KINDS,
                       image_format: str = "png", paths: set[Path] | None = None) -> FixResult:
        """Rewrite odd-mode images as RGB PNG/JPEG; originals kept in ``_originals/``."""
        return fixes.convert_images(report, tuple(kinds), image_format=image_format, paths=paths)

    def image_statuses(self, folder: Path | str, report: ValidationReport | None = None) -> list[ImageStatus]:
        """One status per image: from ``report`` when given, else listing only (fast, nothing decoded)."""
        if report is not None:
            return image_status.statuses_from_report(report)
        return image_status.quick_statuses(self.folder(folder))

    def thumbnails(self, images: Sequence[Path], side: int = thumbnails.DEFAULT_SIDE) -> list[bytes | None]:
        """Cached JPEG thumbnails (in the cache folder; the images are only read); None for unreadable ones."""
        return thumbnails.make_thumbnails(list(images), self.paths.cache, side)

    # --- statistics -------------------------------------------------------------------------------

    def statistics(self, folder: Path | str, settings: BucketSettings | None = None, **options) -> DatasetStatistics:
        """Counts, resolutions, the trainer's bucket table and steps, tag frequency."""
        from core.datasets import statistics  # imports torch (the trainer's bucket maths): only when asked

        return statistics.compute_statistics(self.folder(folder), settings, **options)

    def statistics_at(self, folder: Path | str, side: int) -> DatasetStatistics:
        """The statistics a run at ``side`` x ``side`` px would see: buckets, batch and epochs from the
        matching training preset, else the trainer's defaults (see ``settings_for_resolution``)."""
        from core.datasets import statistics

        chosen = statistics.settings_for_resolution(side)
        return statistics.compute_statistics(self.folder(folder), chosen.buckets, batch_size=chosen.batch_size,
                                             epochs=chosen.epochs, assumed=chosen.describe())

    # --- captions ---------------------------------------------------------------------------------

    def preview_captions(self, folder: Path | str, edits: Sequence[CaptionEdit], **options) -> EditPlan:
        """The dry run: before/after per file; writes nothing."""
        return captions.plan_edits(self.folder(folder), edits, **options)

    @staticmethod
    def apply_captions(plan: EditPlan) -> Snapshot | None:
        """Write a previewed plan, snapshot first."""
        return captions.apply_plan(plan)

    def edit_captions(self, folder: Path | str, edits: Sequence[CaptionEdit], *, dry_run: bool = False,
                      **options) -> tuple[EditPlan, Snapshot | None]:
        """Plan and (unless ``dry_run``) apply in one call."""
        plan = self.preview_captions(folder, edits, **options)
        return plan, (None if dry_run else captions.apply_plan(plan))

    def caption_history(self, folder: Path | str) -> list[Snapshot]:
        """The caption snapshots of ``folder``, oldest first."""
        return caption_history.list_snapshots(self.folder(folder))

    def undo_captions(self, folder: Path | str, snapshot_id: str | None = None, force: bool = False) -> UndoResult:
        """Restore the captions from before the latest edit (or ``snapshot_id``), byte for byte."""
        return caption_history.undo(self.folder(folder), snapshot_id, force=force)


    @staticmethod
    def read_caption(image: Path | str) -> str:
        """The caption text of one image (\"\" when it has none)."""
        return single_caption.read_caption_text(Path(image))

    def save_caption(self, folder: Path | str, image: Path | str, text: str) -> Snapshot | None:
        """Write one image's caption by hand, snapshot first so ``undo_captions(folder)`` restores it."""
        return single_caption.save_caption(self.folder(folder), Path(image), text)

    # --- tagging ----------------------------------------------------------------------------------

    @staticmethod
    def tag_dataset(request: TaggingRequest, progress=None, log=None) -> TaggingSummary:
        """WD14 tags or BLIP captions for every image folder, undoable (see :mod:`core.datasets.tagging`)."""
        from core.datasets import tagging

        return tagging.tag_dataset(request, progress, log or (lambda _text: None))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.dataset_manager``: see ``--help``."""
    from core.datasets.cli import run  # argparse set-up kept out of the import path of the panels

    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
