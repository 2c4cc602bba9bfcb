"""Tag a folder of images with a WD14 model: the function behind the command line and ``core``.

Worker threads decode and resize images ahead of the model (Pillow and numpy release the GIL
while they work, and onnxruntime does while it infers), so with enough workers the model never
waits on the disk. A bounded look-ahead keeps memory flat on folders of any size. Broken images
are named and skipped; captions are written atomically; existing captions are skipped unless
the caller chose to overwrite or append.
"""
from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from custom.captioners.files import (
    CaptionTarget, ExistingPolicy, list_images, merge_first_line, normalise_extension, plan_targets, write_text_atomic,
)
from custom.errors import CustomError
from custom.wd14.labels import Labels, read_labels
from custom.wd14.model import DEFAULT_REPO, TaggerModel, load_model, resolve_model_files
from custom.wd14.postprocess import TagRules, merge_tags, select_tags
from custom.wd14.preprocess import Prepared, prepare_image

Log = Callable[[str], None]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TaggerOptions:
    """Everything one tagging run needs; the command line builds this, ``core`` may build it directly."""

    directory: Path
    repo_id: str = DEFAULT_REPO
    model_dir: Path | None = None
    force_download: bool = False
    batch_size: int = 1
    max_data_loader_n_workers: int | None = None  # None: min(4, CPU count); 0: decode in the main thread
    caption_extension: str = ".txt"
    recursive: bool = False
    existing: ExistingPolicy = ExistingPolicy.SKIP
    rules: TagRules = field(default_factory=TagRules)
    endpoint: str | None = None  # Hub endpoint; None means HF_ENDPOINT or huggingface.co


@dataclass
class TaggingReport:
    """What a run did. ``tags`` maps each written image to its tags in caption order."""

    provider_line: str = ""
    model_source: str = ""
    images_found: int = 0
    written: list[Path] = field(default_factory=list)
    kept_existing: list[Path] = field(default_factory=list)  # skipped: they already had a caption
    broken: list[tuple[Path, str]] = field(default_factory=list)  # (image, why it could not be read)
    tags: dict[Path, list[str]] = field(default_factory=dict)
    frequency: Counter = field(default_factory=Counter)  # tag -> images it was written for


def default_workers() -> int:
    """Decoding threads when none are asked for: enough to keep a GPU fed, no more than the machine has."""
    return max(1, min(4, os.cpu_count() or 1))


def iter_prepared(paths: Iterable[Path], side: int, workers: int, lookahead: int) -> Iterator[Prepared]:
    """Decode and preprocess ``paths`` in order, ``workers`` threads ahead of the consumer (0: inline)."""
    if workers <= 0:
        for path in paths:
            yield prepare_image(path, side)
        return
    source = iter(paths)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wd14-decode") as pool:
        pending: deque[Future[Prepared]] = deque()
        for path in source:
            pending.append(pool.submit(prepare_image, path, side))
            if len(pending) >= lookahead:
                break
        while pending:
            done = pending.popleft().result()
            following = next(source, None)
            if following is not None:
                pending.append(pool.submit(prepare_image, following, side))
            yield done


def run_batch(model: TaggerModel, arrays: list[np.ndarray]) -> np.ndarray:
    """Scores ``[len(arrays), n_tags]`` for preprocessed images, in chunks a fixed-batch model accepts."""
    step = model.fixed_batch or len(arrays)
    chunks = []
    for start in range(0, len(arrays), step):
        batch = np.stack(arrays[start:start + step])
        if model.fixed_batch and len(batch) < step:  # pad the last chunk of a fixed-batch model
            batch = np.concatenate([batch, np.repeat(batch[-1:], step - len(batch), axis=0)])
        scores = model.session.run([model.output_name], {model.input_name: batch})[0]
        chunks.append(np.asarray(scores)[: min(step, len(arrays) - start)])
    return np.concatenate(chunks)


def _check_outputs(model: TaggerModel, labels: Labels, files_model: Path, files_tags: Path) -> None:
    if model.n_outputs is not None and model.n_outputs != len(labels):
        raise CustomError(f"{files_model} has {model.n_outputs} outputs but {files_tags} lists {len(labels)} tags.",
                          hint="The two files come from different models: use the pair from one repo "
                               "(--force_download fetches them again).")


def tag_images(options: TaggerOptions, log: Log = print, progress: Progress | None = None) -> TaggingReport:
    """Tag every image of ``options.directory`` and write its caption file; return what happened.

    Raises :class:`CustomError` (naming the folder, file or option) for problems that stop the whole
    run: no folder, no images, an unusable model. One unreadable image never stops it.
    """
    if options.batch_size < 1:
        raise CustomError(f"--batch_size {options.batch_size} must be 1 or more.", option="--batch_size")
    extension = normalise_extension(options.caption_extension)
    report = TaggingReport()
    images = list_images(options.directory, options.recursive)
    report.images_found = len(images)
    if not images:
        hint = ("Put images (png jpg jpeg webp bmp) in it" +
                ("." if options.recursive else ", or add --recursive to search sub-folders."))
        raise CustomError(f"No images found in {options.directory}.", hint=hint)
    targets, report.kept_existing = plan_targets(images, extension, options.existing, log)
    if report.kept_existing:
        log(f"{len(report.kept_existing)} image(s) already have a {extension} caption and are left as they are "
            "(--overwrite replaces them, --append_tags adds to them).")

    files = resolve_model_files(options.repo_id, options.model_dir, options.force_download, options.endpoint)
    report.model_source = f"{files.model.parent} ({files.source})"
    log(f"Model: {report.model_source}")
    labels = read_labels(files.tags)
    model = load_model(files.model)
    _check_outputs(model, labels, files.model, files.tags)
    report.provider_line = model.provider_line
    log(model.provider_line)
    if not targets:
        return report

    workers = default_workers() if options.max_data_loader_n_workers is None else options.max_data_loader_n_workers
    by_image = {target.image: target for target in targets}
    # Two batches ahead per worker keeps every thread busy while the model runs.
    lookahead = max(2 * options.batch_size, 2 * max(workers, 1))
    batch: list[Prepared] = []
    done = 0
    for prepared in iter_prepared(list(by_image), model.side, workers, lookahead):
        if prepared.array is None:
            report.broken.append((prepared.path, prepared.error))
            log(f"Skipped {prepared.path}: {prepared.error}")
        else:
            batch.append(prepared)
        if len(batch) >= options.batch_size:
            _finish(model, labels, batch, by_image, options, extension, report)
            batch = []
        done += 1
        if progress is not None:
            progress(done, len(targets))
    if batch:
        _finish(model, labels, batch, by_image, options, extension, report)
    return report


def _finish(model: TaggerModel, labels: Labels, batch: list[Prepared], by_image: dict[Path, CaptionTarget],
            options: TaggerOptions, extension: str, report: TaggingReport) -> None:
    """Run one batch through the model and write its captions."""
    scores = run_batch(model, [item.array for item in batch])  # type: ignore[misc]
    if scores.shape[1] != len(labels):
        raise CustomError(f"The model gives {scores.shape[1]} scores but the tag list has {len(labels)} tags.",
                          hint="Use model.onnx and selected_tags.csv from the same repo (--force_download).")
    separator = options.rules.caption_separator
    for item, row in zip(batch, scores):
        target = by_image[item.path]
        tags = select_tags(row, labels, options.rules)
        line = separator.join(tags)
        if options.existing is ExistingPolicy.APPEND:
            text = merge_first_line(target.existing, line, lambda old, _new: merge_tags(old, tags, separator))
        else:
            text = line
        write_text_atomic(target.caption, text)
        report.written.append(item.path)
        report.tags[item.path] = tags
        report.frequency.update(tags)
