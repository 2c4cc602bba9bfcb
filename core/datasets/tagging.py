"""Tag or caption a whole dataset from the notebook: WD14 tags or BLIP sentences, with an undo snapshot.

A dataset folder holds ``N_name`` folders; each is tagged on its own (the folders the trainer
reads, so ``_rejected/`` and ``_originals/`` are never touched). Existing captions are kept
unless the user chose to append or overwrite. Whatever the choice, the caption files as they were
before the run are stored as a caption snapshot of the dataset folder (the one the caption
editor's Undo uses), so a tagging run can be undone byte for byte like any bulk edit.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.datasets.caption_history import FileChange, Snapshot, write_snapshot
from core.datasets.files import list_images, require_folder
from core.datasets.image_status import image_folders
from core.errors import CoreError
from trainer.data.captions import caption_path

WD14, BLIP = "wd14", "blip"
CAPTIONERS = (WD14, BLIP)
EXISTING_CHOICES = ("skip", "append", "overwrite")
MODEL_SUBDIR = "wd14"  # under the project's cache folder: <cache>/wd14/<owner>_<name>/

Progress = Callable[[int, int], None]
Log = Callable[[str], None]


@dataclass(frozen=True)
class TaggingRequest:
    """One tagging run over a dataset folder. ``model_dir`` holding model.onnx works offline."""

    folder: Path
    captioner: str = WD14
    repo_id: str = "SmilingWolf/wd-eva02-large-tagger-v3"
    model_dir: Path | None = None  # a folder holding model.onnx and selected_tags.csv: used as is, offline
    download_dir: Path | None = None  # where a Hub model is downloaded once and found again (None: HF cache)
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    undesired_tags: tuple[str, ...] = ()
    remove_underscore: bool = True
    character_tags_first: bool = False
    existing: str = "skip"  # skip (keep existing captions), append, overwrite
    batch_size: int = 1
    blip_model: str = "Salesforce/blip-image-captioning-large"
    caption_extension: str = ".txt"


@dataclass
class TaggingSummary:
    """What a run did over every image folder of the dataset."""

    folders: list[Path] = field(default_factory=list)
    images_found: int = 0
    written: int = 0
    kept_existing: int = 0
    broken: list[tuple[Path, str]] = field(default_factory=list)
    frequency: Counter = field(default_factory=Counter)  # tag -> images it was written for (WD14 only)
    snapshot: Snapshot | None = None
    model: str = ""

    def messages(self) -> list[tuple[str, str]]:
        """``(level, text)`` lines for the panel; level is ok, info or warning."""
        found = [("ok", f"Wrote {self.written} caption(s) for {self.images_found} image(s) in {len(self.folders)} folder(s).")]
        if self.model:
            found.append(("info", f"Model: {self.model}"))
        if self.kept_existing:
            found.append(("info", f"Kept {self.kept_existing} existing caption(s) as they were."))
        if self.broken:
            names = ", ".join(p.name for p, _ in self.broken[:5]) + (" ..." if len(self.broken) > 5 else "")
            found.append(("warning", f"Skipped {len(self.broken)} unreadable image(s): {names}. "
                                     "The dataset panel's check can move them to _rejected/."))
        if self.snapshot is not None:
            found.append(("info", f"The captions from before are saved ({self.snapshot.snapshot_id}): "
                                  "the caption panel's Undo restores them."))
        return found

    def lines(self) -> list[str]:
        """Readable lines (the messages without their levels)."""
        return [text for _level, text in self.messages()]

    def top_tags(self, count: int = 20) -> list[tuple[str, int]]:
        """The most frequent tags written, most common first (ties alphabetical)."""
        return sorted(self.frequency.items(), key=lambda item: (-item[1], item[0]))[:count]


def check_request(request: TaggingRequest) -> None:
    """Refuse a request that cannot run, before any model is loaded."""
    if request.captioner not in CAPTIONERS:
        raise CoreError(f"Unknown captioner {request.captioner!r}.", hint=f"Use one of {', '.join(CAPTIONERS)}.")
    if request.existing not in EXISTING_CHOICES:
        raise CoreError(f"Unknown choice for existing captions {request.existing!r}.",
                        hint=f"Use one of {', '.join(EXISTING_CHOICES)}.")
    if request.batch_size < 1:
        raise CoreError(f"Batch size {request.batch_size} must be 1 or more.", hint="1 to 8 is usual.")
    if request.model_dir is not None and request.captioner == WD14:
        from custom.wd14.model import MODEL_FILE, TAGS_FILE

        folder = Path(request.model_dir).expanduser()
        missing = [name for name in (MODEL_FILE, TAGS_FILE) if not (folder / name).is_file()]
        if missing:
            raise CoreError(f"The tagger model folder {folder} has no {' and no '.join(missing)}.",
                            hint="Give the folder holding both files of the model, or pick a model from the list "
                                 "to download it.")


def _caption_bytes(folders: list[Path], extension: str) -> dict[Path, bytes | None]:
    """Every image's caption file and its bytes now (None: no file), for the snapshot."""
    found: dict[Path, bytes | None] = {}
    for folder in folders:
        for image in list_images(folder, recursive=False):
            path = caption_path(image, extension)
            found[path] = path.read_bytes() if path.is_file() else None
    return found


def _snapshot(folder: Path, description: str, before: dict[Path, bytes | None]) -> Snapshot | None:
    changes = []
    for path, old in before.items():
        new = path.read_bytes() if path.is_file() else None
        if new is not None and new != old:
            changes.append(FileChange(path, old, new))
    return write_snapshot(folder, description, changes) if changes else None


def _description(request: TaggingRequest) -> str:
    """Plain words for the undo list, e.g. "WD14 tagging (existing captions kept)"."""
    what = "BLIP captions" if request.captioner == BLIP else "WD14 tagging"
    existing = {"skip": "existing captions kept", "append": "added to existing captions",
                "overwrite": "existing captions replaced"}.get(request.existing, request.existing)
    return f"{what} ({existing})"


def _policy(existing: str):
    from custom.captioners.files import ExistingPolicy

    return ExistingPolicy(existing)


def _run_wd14(request: TaggingRequest, folder: Path, log: Log, progress: Progress | None, summary: TaggingSummary) -> None:
    from custom.wd14.pipeline import TaggerOptions, tag_images
    from custom.wd14.postprocess import TagRules

    rules = TagRules(general_threshold=request.general_threshold, character_threshold=request.character_threshold,
                     remove_underscore=request.remove_underscore, undesired_tags=tuple(request.undesired_tags),
                     character_tags_first=request.character_tags_first)
    options = TaggerOptions(directory=folder, repo_id=request.repo_id,
                            model_dir=request.model_dir or request.download_dir,
                            batch_size=request.batch_size, caption_extension=request.caption_extension,
                            existing=_policy(request.existing), rules=rules)
    report = tag_images(options, log=log, progress=progress)
    summary.written += len(report.written)
    summary.kept_existing += len(report.kept_existing)
    summary.broken += report.broken
    summary.frequency.update(report.frequency)
    summary.model = report.model_source


def _run_blip(request: TaggingRequest, folder: Path, captioner, log: Log, progress: Progress | None,
              summary: TaggingSummary) -> None:
    from custom.captioners.base import CaptionRunOptions, caption_folder

    options = CaptionRunOptions(directory=folder, caption_extension=request.caption_extension,
                                batch_size=request.batch_size, existing=_policy(request.existing))
    report = caption_folder(captioner, options, log=log, progress=progress)
    summary.written += len(report.written)
    summary.kept_existing += len(report.kept_existing)
    summary.broken += report.broken
    summary.model = captioner.name


def tag_dataset(request: TaggingRequest, progress: Progress | None = None, log: Log = lambda _text: None) -> TaggingSummary:
    """Tag (WD14) or caption (BLIP) every image folder of ``request.folder``; snapshot what changed.

    ``progress(done, total)`` counts images over the whole dataset. Raises :class:`CoreError`
    for a bad request; the tagger's own errors (``CustomError``) name the model or folder.
    """
    check_request(request)
    root = require_folder(Path(request.folder), "dataset folder")
    folders = [f for f in image_folders(root) if list_images(f, recursive=False)]
    if not folders:
        raise CoreError(f"No images found in {request.folder} or in its N_name folders.",
                        hint="Import images first (dataset panel), or choose another dataset.")
    counts = [len(list_images(f, recursive=False)) for f in folders]
    total = sum(counts)
    summary = TaggingSummary(folders=folders, images_found=total)
    before = _caption_bytes(folders, request.caption_extension)
    captioner = None
    if request.captioner == BLIP:
        from custom.captioners.blip import BlipCaptioner, BlipSettings

        captioner = BlipCaptioner(BlipSettings(model=request.blip_model))
    description = _description(request)
    offset = 0
    try:
        for folder, count in zip(folders, counts):
            def folder_progress(done: int, _todo: int, base: int = offset) -> None:
                if progress is not None:
                    progress(base + done, total)

            if captioner is None:
                _run_wd14(request, folder, log, folder_progress, summary)
            else:
                _run_blip(request, folder, captioner, log, folder_progress, summary)
            offset += count
            if progress is not None:
                progress(offset, total)
    finally:
        # Also after a failure half-way: what was written is then still undoable.
        summary.snapshot = _snapshot(root, description, before)
    return summary
