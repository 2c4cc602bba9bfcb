"""The command line of the dataset manager: ``python -m core.dataset_manager <command> ...``.

Errors print as one message with what to do, without a traceback unless ``--debug``. Tokens are
read from the environment (``HF_TOKEN``), never from the command line, where they would land in
the shell history and the process list.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from core.datasets.captions import (
    MATCH_MODES, AddPrefix, AddSuffix, AddTrigger, CaptionEdit, DedupeTags, RemovePrefix, RemoveSuffix, RemoveTags,
    ReplaceText, ReplaceUnderscores, SortTags,
)
from core.datasets import validation
from core.datasets.statistics import BucketSettings
from core.datasets.validation import BROKEN_KINDS, ODD_MODE_KINDS, ValidationSettings
from core.errors import CoreError, cli_error

# The finding kinds a user can ask to move aside (missing captions are not a reason to reject an image).
_ALL_KINDS = BROKEN_KINDS + ODD_MODE_KINDS + (
    validation.TOO_SMALL, validation.DUPLICATE, validation.NEAR_DUPLICATE, validation.ORPHAN_CAPTION,
    validation.BAD_CAPTION, validation.EMPTY_CAPTION, validation.OUTSIDE_SUBSET)


def _kinds(text: str) -> tuple[str, ...]:
    chosen = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in chosen if k not in _ALL_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown kind(s) {unknown}; choose from {', '.join(_ALL_KINDS)}")
    return chosen


def _resolution(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a resolution like 512 or 768,512") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a resolution like 512 or 768,512")
    return parts[0], parts[1]


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, help="project folder name under datasets/")
    parser.add_argument("--repeats", type=int, default=10, help="repeats per epoch, the N of N_concept (default 10)")
    parser.add_argument("--concept", default="concept", help="concept name, the folder's default caption")
    parser.add_argument("--skip-existing", action="store_true", help="keep files already there instead of stopping")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="python -m core.dataset_manager",
                                     description="Import, check, measure and caption LoRA training datasets.")
    parser.add_argument("--datasets-dir", type=Path, help="datasets folder (default: LORA_DATASETS_DIR or ./datasets)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, what, helptext in (("import-zip", "zip", "a .zip file (keeps captions and sub-folders)"),
                                 ("import-folder", "source", "a folder on this server (copied, never moved)"),
                                 ("import-url", "url", "a direct .zip link or a huggingface.co/datasets/... page"),
                                 ("import-hf", "repo_id", "a Hugging Face dataset repo, owner/name"),
                                 ("import-booru", "url", "a booru search or pool through gallery-dl")):
        sub = commands.add_parser(name, help=f"import {helptext}")
        sub.add_argument(what)
        _import_arguments(sub)
        if name in ("import-zip", "import-url"):
            sub.add_argument("--max-unpacked-gb", type=float, default=20.0, help="zip-bomb guard (default 20)")
        if name == "import-hf":
            sub.add_argument("--revision")
            sub.add_argument("--subfolder")
        if name == "import-booru":
            sub.add_argument("--limit", type=int, default=100, help="at most this many images (default 100)")

    sub = commands.add_parser("clean-booru-tags", help="turn gallery-dl's img.jpg.txt tag files into img.txt captions")
    sub.add_argument("folder")

    sub = commands.add_parser("validate", help="decode every image and report problems; optionally fix them")
    sub.add_argument("folder")
    sub.add_argument("--min-side", type=int, default=256, help="flag images whose shorter side is below this")
    sub.add_argument("--max-pixels", type=int, default=None, help="decompression-bomb limit (default Pillow's)")
    sub.add_argument("--caption-extension", default=".txt")
    sub.add_argument("--move-rejects", type=_kinds, metavar="KINDS",
                     help=f"move files with these findings to _rejected/ (comma list; broken ones: {','.join(BROKEN_KINDS)})")
    sub.add_argument("--convert", choices=("png", "jpeg"), help="rewrite odd-mode images as RGB; originals to _originals/")
    sub.add_argument("--convert-kinds", type=_kinds, default=ODD_MODE_KINDS, metavar="KINDS",
                     help=f"which odd modes to convert (default {','.join(ODD_MODE_KINDS)})")

    sub = commands.add_parser("stats", help="counts, resolutions, the trainer's bucket table and steps, tag frequency")
    sub.add_argument("folder")
    sub.add_argument("--resolution", type=_resolution, default=(512, 512), help="512, or width,height")
    sub.add_argument("--batch-size", type=int, default=1)
    sub.add_argument("--epochs", type=int, default=10)
    sub.add_argument("--repeats", type=int, help="override every folder's repeats")
    sub.add_argument("--no-bucket", action="store_true", help="enable_bucket off (fixed size)")
    sub.add_argument("--min-bucket-reso", type=int, default=256)
    sub.add_argument("--max-bucket-reso", type=int, default=1024)
    sub.add_argument("--bucket-reso-steps", type=int, default=64)
    sub.add_argument("--bucket-no-upscale", action="store_true")
    sub.add_argument("--caption-extension", default=".txt")

    sub = commands.add_parser("caption", help="bulk caption edits with preview and undo (applied in the order listed)")
    sub.add_argument("folder")
    sub.add_argument("--recursive", action="store_true", help="also edit sub-folders")
    sub.add_argument("--dry-run", action="store_true", help="only show before/after, write nothing")
    sub.add_argument("--caption-extension", default=".txt")
    sub.add_argument("--no-create", action="store_true", help="never create caption files for uncaptioned images")
    sub.add_argument("--remove", action="append", default=[], metavar="TAG", help="remove this tag (repeatable)")
    sub.add_argument("--match", choices=MATCH_MODES, default="exact", help="how --remove matches (glob: '*hair')")
    sub.add_argument("--replace", nargs=2, action="append", default=[], metavar=("OLD", "NEW"),
                     help="replace a whole tag (NEW '' removes it); repeatable")
    sub.add_argument("--substring", action="store_true", help="--replace replaces any text, not whole tags")
    sub.add_argument("--underscores", action="store_true", help="long_hair -> long hair (kaomoji kept)")
    sub.add_argument("--dedupe", action="store_true", help="drop repeated tags")
    sub.add_argument("--sort", action="store_true", help="sort tags alphabetically")
    sub.add_argument("--keep-first", type=int, default=0, help="--sort leaves the first N tags in place")
    sub.add_argument("--remove-prefix")
    sub.add_argument("--remove-suffix")
    sub.add_argument("--add-trigger", metavar="WORD", help="put WORD first (or at --position), once")
    sub.add_argument("--position", default="0", help="trigger position: 0 = first, 'last', or an index")
    sub.add_argument("--add-prefix")
    sub.add_argument("--add-suffix")

    sub = commands.add_parser("undo", help="restore the captions from before the latest edit, byte for byte")
    sub.add_argument("folder")
    sub.add_argument("--snapshot", help="a snapshot id from 'history' (default: the latest not undone)")
    sub.add_argument("--force", action="store_true", help="restore even files changed since the edit")

    sub = commands.add_parser("history", help="list the caption edit snapshots of a folder")
    sub.add_argument("folder")
    return parser


def caption_edits(args: argparse.Namespace) -> list[CaptionEdit]:
    """The edit chain of a ``caption`` command, in the documented order."""
    edits: list[CaptionEdit] = []
    if args.remove:
        edits.append(RemoveTags(tuple(args.remove), args.match))
    edits += [ReplaceText(old, new, args.substring) for old, new in args.replace]
    if args.underscores:
        edits.append(ReplaceUnderscores())
    if args.remove_prefix:
        edits.append(RemovePrefix(args.remove_prefix))
    if args.remove_suffix:
        edits.append(RemoveSuffix(args.remove_suffix))
    if args.dedupe:
        edits.append(DedupeTags())
    if args.sort:
        edits.append(SortTags(args.keep_first))
    if args.add_trigger:
        if args.position == "last":
            position = None
        else:
            try:
                position = int(args.position)
            except ValueError:
                raise CoreError(f"--position must be a number or 'last', not {args.position!r}.", hint="Use 0 for first.") from None
        edits.append(AddTrigger(args.add_trigger, position))
    if args.add_prefix:
        edits.append(AddPrefix(args.add_prefix))
    if args.add_suffix:
        edits.append(AddSuffix(args.add_suffix))
    return edits


def _import(manager, args: argparse.Namespace) -> list[str]:
    common = {"on_conflict": "skip" if args.skip_existing else "error"}
    names = (args.project, args.repeats, args.concept)
    if args.command == "import-zip":
        result = manager.import_zip(args.zip, *names, max_unpacked_bytes=int(args.max_unpacked_gb * 1024**3), **common)
    elif args.command == "import-folder":
        result = manager.import_folder(args.source, *names, **common)
    elif args.command == "import-url":
        result = manager.import_url(args.url, *names, token=os.environ.get("HF_TOKEN") or None,
                                    max_unpacked_bytes=int(args.max_unpacked_gb * 1024**3), **common)
    elif args.command == "import-hf":
        result = manager.import_hf_dataset(args.repo_id, *names, revision=args.revision, subfolder=args.subfolder,
                                           token=os.environ.get("HF_TOKEN") or None, **common)
    else:
        result = manager.import_booru(args.url, *names, limit=args.limit, **common)
    return [result.summary(), *[f"warning: {w}" for w in result.warnings]]


def _validate(manager, args: argparse.Namespace) -> list[str]:
    settings = ValidationSettings(min_side=args.min_side, caption_extension=args.caption_extension,
                                  **({"max_pixels": args.max_pixels} if args.max_pixels else {}))
    report = manager.validate(args.folder, settings)
    lines = report.summary_lines()
    if args.convert:
        lines += manager.convert_images(report, args.convert_kinds, args.convert).summary_lines()
        if args.move_rejects:
            report = manager.validate(args.folder, settings)  # converted files have new names
    if args.move_rejects:
        lines += manager.move_rejects(report, args.move_rejects).summary_lines()
    return lines


def _dispatch(manager, args: argparse.Namespace) -> list[str]:
    if args.command.startswith("import-"):
        return _import(manager, args)
    if args.command == "clean-booru-tags":
        result = manager.clean_booru_tags(args.folder)
        return [f"wrote {len(result.written)} caption(s); raw tag files moved to _raw_tags/: {len(result.kept_aside)}",
                *[f"skipped {s}" for s in result.skipped]]
    if args.command == "validate":
        return _validate(manager, args)
    if args.command == "stats":
        settings = BucketSettings(resolution=args.resolution, enable_bucket=not args.no_bucket,
                                  min_bucket_reso=args.min_bucket_reso, max_bucket_reso=args.max_bucket_reso,
                                  bucket_reso_steps=args.bucket_reso_steps, bucket_no_upscale=args.bucket_no_upscale)
        stats = manager.statistics(args.folder, settings, batch_size=args.batch_size, epochs=args.epochs,
                                   repeats=args.repeats, caption_extension=args.caption_extension)
        return stats.summary_lines()
    if args.command == "caption":
        edits = caption_edits(args)
        if not edits:
            raise CoreError("No caption edit was chosen.", hint="Add e.g. --add-trigger ohwx or --underscores (see --help).")
        plan, snapshot = manager.edit_captions(args.folder, edits, dry_run=args.dry_run, recursive=args.recursive,
                                               caption_extension=args.caption_extension, create_missing=not args.no_create)
        lines = plan.preview_lines()
        if snapshot is not None:
            lines.append(f"Applied. Undo with: python -m core.dataset_manager undo {plan.folder}")
        elif args.dry_run:
            lines.append("Dry run: nothing was written.")
        return lines
    if args.command == "undo":
        result = manager.undo_captions(args.folder, args.snapshot, args.force)
        return [f"Undid {result.snapshot.snapshot_id} ({result.snapshot.description}): restored {len(result.restored)} "
                f"file(s), set aside {len(result.removed_created)} created file(s)."]
    snapshots = manager.caption_history(args.folder)
    return [f"{s.snapshot_id}{'  (undone)' if s.undone else ''}  {len(s.entries)} file(s)  {s.description}"
            for s in snapshots] or ["no caption edits recorded"]


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run one command, print its result. Exit 0 on success, 1 on a CoreError."""
    from core.dataset_manager import DatasetManager
    from core.paths import ProjectPaths

    args = build_parser().parse_args(argv)
    try:
        environ = dict(os.environ)
        if args.datasets_dir:
            environ["LORA_DATASETS_DIR"] = str(args.datasets_dir.expanduser().resolve())
        manager = DatasetManager(ProjectPaths.resolve(environ))
        for line in _dispatch(manager, args):
            print(line)
    except CoreError as problem:
        return cli_error(problem, args.debug)
    return 0
