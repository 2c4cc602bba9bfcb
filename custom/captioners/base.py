"""The captioner protocol and the folder loop every natural-language captioner shares.

A captioner only turns a batch of RGB images into sentences (:class:`Captioner`). Everything else
(finding images, skipping those that already have a caption unless told otherwise, decoding in
worker threads, naming broken files, writing caption files atomically) is :func:`caption_folder`,
so adding Florence-2 or JoyCaption is one new class with a ``caption`` method.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

from custom.captioners.files import (
    ExistingPolicy, list_images, merge_first_line, normalise_extension, plan_targets, write_text_atomic,
)
from custom.errors import CustomError
from trainer.data.images import try_load_image_rgb


@runtime_checkable
class Captioner(Protocol):
    """Turns images into one caption each. ``name`` is shown to the user (e.g. the model id)."""

    name: str

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order; upright RGB images in, plain text out."""
        ...


@dataclass(frozen=True)
class CaptionRunOptions:
    """Where and how to write captions, independent of the model."""

    directory: Path
    caption_extension: str = ".txt"
    recursive: bool = False
    batch_size: int = 1
    existing: ExistingPolicy = ExistingPolicy.SKIP
    append_separator: str = ", "  # between the old caption and the new sentence with APPEND
    workers: int = 2  # decoding threads (0: decode in the main thread)


@dataclass
class CaptionReport:
    """What a captioning run did."""

    images_found: int = 0
    written: dict[Path, str] = field(default_factory=dict)  # image -> caption written (the new text only)
    kept_existing: list[Path] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)  # the model produced no text: nothing written


def _decoded(paths: list[Path], workers: int) -> Iterator[tuple[Path, Image.Image | None, str]]:
    if workers <= 0:
        for path in paths:
            yield (path, *try_load_image_rgb(path))
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caption-decode") as pool:
        pending: deque[tuple[Path, Future]] = deque()
        source = iter(paths)
        for path in source:
            pending.append((path, pool.submit(try_load_image_rgb, path)))
            if len(pending) >= 2 * workers + 2:
                break
        while pending:
            path, future = pending.popleft()
            following = next(source, None)
            if following is not None:
                pending.append((following, pool.submit(try_load_image_rgb, following)))
            yield (path, *future.result())


def caption_folder(captioner: Captioner, options: CaptionRunOptions, log: Callable[[str], None] = print,
                   progress: Callable[[int, int], None] | None = None) -> CaptionReport:
    """Caption every image in ``options.directory`` with ``captioner`` and write the caption files.

    Existing non-empty captions are skipped unless ``options.existing`` says overwrite or append.
    Unreadable images are named in the report and the log; they never stop the run.
    """
    if options.batch_size < 1:
        raise CustomError(f"--batch_size {options.batch_size} must be 1 or more.", option="--batch_size")
    extension = normalise_extension(options.caption_extension)
    report = CaptionReport()
    images = list_images(options.directory, options.recursive)
    report.images_found = len(images)
    if not images:
        raise CustomError(f"No images found in {options.directory}.",
                          hint="Put images (png jpg jpeg webp bmp) in it, or use --recursive for sub-folders.")
    targets, report.kept_existing = plan_targets(images, extension, options.existing, log)
    if report.kept_existing:
        log(f"{len(report.kept_existing)} image(s) already have a {extension} caption and are left as they are "
            "(--overwrite replaces them, --append adds to them).")
    by_image = {target.image: target for target in targets}
    batch: list[tuple[Path, Image.Image]] = []
    done = 0

    def flush() -> None:
        texts = captioner.caption([image for _, image in batch])
        if len(texts) != len(batch):
            raise CustomError(f"Captioner {captioner.name} returned {len(texts)} captions for {len(batch)} images.",
                              hint="This is a bug in the captioner; run again with --debug and report it.")
        for (path, _), text in zip(batch, texts):
            text = " ".join(text.split())  # one line: trainers read only the first line
            if not text:
                report.empty.append(path)
                log(f"No caption produced for {path}; nothing written.")
                continue
            target = by_image[path]
            if options.existing is ExistingPolicy.APPEND:
                content = merge_first_line(target.existing, text,
                                           lambda old, new: f"{old}{options.append_separator}{new}")
            else:
                content = text
            write_text_atomic(target.caption, content)
            report.written[path] = text
        batch.clear()

    for path, image, reason in _decoded(list(by_image), options.workers):
        if image is None:
            report.broken.append((path, reason))
            log(f"Skipped {path}: {reason}")
        else:
            batch.append((path, image))
            if len(batch) >= options.batch_size:
                flush()
        done += 1
        if progress is not None:
            progress(done, len(targets))
    if batch:
        flush()
    return report
