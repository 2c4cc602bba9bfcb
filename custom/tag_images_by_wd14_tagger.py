"""Tag images with a WD14 tagger (SmilingWolf's ONNX models), writing one caption file per image.

Command line, with the flags of kohya's ``tag_images_by_wd14_tagger.py``::

    python -m custom.tag_images_by_wd14_tagger DIR [--repo_id ...] [--batch_size 8] ...

and importable for ``core``: :func:`tag_images` takes a :class:`TaggerOptions` and returns a
:class:`TaggingReport`. Differences from kohya's tool, all on the side of keeping the user's work:
an existing caption file is left alone unless ``--overwrite`` or ``--append_tags`` is given;
underscores are replaced by default (``--no-remove_underscore`` keeps them); ``--thresh`` sets
both thresholds only when given, otherwise general 0.35 and character 0.85 apply. Errors are
printed without a traceback unless ``--debug``; unreadable images are named and skipped.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from custom.captioners.files import ExistingPolicy  # noqa: E402
from custom.errors import CustomError, report_cli_error  # noqa: E402
from custom.wd14.model import DEFAULT_REPO, KNOWN_REPOS  # noqa: E402
from custom.wd14.pipeline import TaggerOptions, TaggingReport, tag_images  # noqa: E402
from custom.wd14.postprocess import (  # noqa: E402
    RATING_FIRST, RATING_LAST, RATING_NONE, TagRules, parse_tag_replacement, split_tags,
)

__all__ = ["TaggerOptions", "TaggingReport", "TagRules", "build_parser", "main", "options_from_args", "tag_images"]

GENERAL_DEFAULT = 0.35
CHARACTER_DEFAULT = 0.85


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kohya's flag names, plus --overwrite and --debug)."""
    parser = argparse.ArgumentParser(
        prog="python -m custom.tag_images_by_wd14_tagger",
        description="Write WD14 tags for every image in DIR to a caption file beside it.")
    parser.add_argument("train_data_dir", metavar="DIR", help="folder with the images")
    parser.add_argument("--repo_id", default=DEFAULT_REPO,
                        help=f"Hugging Face repo of the model (default {DEFAULT_REPO}); known: "
                             + ", ".join(repo.split("/")[1] for repo in KNOWN_REPOS))
    parser.add_argument("--model_dir", type=Path, default=None,
                        help="folder holding model.onnx and selected_tags.csv (used offline), or where to download "
                             "them (into <model_dir>/<owner>_<name>); default: the Hugging Face cache (HF_HOME)")
    parser.add_argument("--force_download", action="store_true", help="download the model again even if present")
    parser.add_argument("--batch_size", type=int, default=1, help="images per inference call (default 1)")
    parser.add_argument("--max_data_loader_n_workers", type=int, default=None,
                        help="threads decoding and resizing images (default min(4, CPUs); 0: no threads)")
    parser.add_argument("--thresh", type=float, default=None,
                        help="threshold for both kinds of tags unless set separately")
    parser.add_argument("--general_threshold", type=float, default=None,
                        help=f"threshold for general tags (default --thresh, else {GENERAL_DEFAULT})")
    parser.add_argument("--character_threshold", type=float, default=None,
                        help=f"threshold for character tags (default --thresh, else {CHARACTER_DEFAULT})")
    parser.add_argument("--caption_extension", "--caption_extention", dest="caption_extension", default=".txt",
                        help="extension of the caption files (default .txt)")
    parser.add_argument("--caption_separator", default=", ", help="text between tags (default ', ')")
    parser.add_argument("--remove_underscore", action=argparse.BooleanOptionalAction, default=True,
                        help="write 'long hair' for long_hair, except in kaomoji such as ^_^ (default on)")
    parser.add_argument("--undesired_tags", default="", help="tags never to write, separated like captions")
    parser.add_argument("--tag_replacement", default="",
                        help="source1,target1;source2,target2 (escape , and ; inside tags with a backslash)")
    parser.add_argument("--character_tags_first", action="store_true", help="character tags before general ones")
    parser.add_argument("--always_first_tags", default="",
                        help="tags moved to the front when present, e.g. '1girl,1boy'")
    parser.add_argument("--use_rating_tags", action="store_true", help="add the rating tag first")
    parser.add_argument("--use_rating_tags_as_last_tag", action="store_true", help="add the rating tag last")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--append_tags", action="store_true",
                          help="keep an existing caption and add the new tags it does not have")
    existing.add_argument("--overwrite", action="store_true", help="replace existing captions (default: skip them)")
    parser.add_argument("--frequency_tags", action="store_true", help="print how often each tag was written")
    parser.add_argument("--recursive", action="store_true", help="also tag images in sub-folders")
    parser.add_argument("--onnx", action="store_true", help="accepted for compatibility: ONNX is the only path")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _threshold(specific: float | None, shared: float | None, default: float) -> float:
    if specific is not None:
        return specific
    return shared if shared is not None else default


def options_from_args(args: argparse.Namespace) -> TaggerOptions:
    """Turn parsed arguments into typed options (raises :class:`CustomError` for bad values)."""
    separator = args.caption_separator
    if args.use_rating_tags_as_last_tag:
        rating = RATING_LAST
    else:
        rating = RATING_FIRST if args.use_rating_tags else RATING_NONE
    rules = TagRules(
        general_threshold=_threshold(args.general_threshold, args.thresh, GENERAL_DEFAULT),
        character_threshold=_threshold(args.character_threshold, args.thresh, CHARACTER_DEFAULT),
        remove_underscore=args.remove_underscore,
        undesired_tags=tuple(split_tags(args.undesired_tags, separator)),
        tag_replacement=parse_tag_replacement(args.tag_replacement),
        character_tags_first=args.character_tags_first,
        always_first_tags=tuple(split_tags(args.always_first_tags, separator)),
        rating=rating,
        caption_separator=separator,
    )
    if args.max_data_loader_n_workers is not None and args.max_data_loader_n_workers < 0:
        raise CustomError("--max_data_loader_n_workers must be 0 or more.", option="--max_data_loader_n_workers")
    if args.append_tags:
        existing = ExistingPolicy.APPEND
    else:
        existing = ExistingPolicy.OVERWRITE if args.overwrite else ExistingPolicy.SKIP
    return TaggerOptions(
        directory=Path(args.train_data_dir), repo_id=args.repo_id, model_dir=args.model_dir,
        force_download=args.force_download, batch_size=args.batch_size,
        max_data_loader_n_workers=args.max_data_loader_n_workers, caption_extension=args.caption_extension,
        recursive=args.recursive, existing=existing, rules=rules,
    )


def _summary(report: TaggingReport, extension: str) -> list[str]:
    lines = [f"Wrote {len(report.written)} caption file(s) ({extension}) for {report.images_found} image(s) found."]
    if report.kept_existing:
        lines.append(f"Left {len(report.kept_existing)} existing caption(s) unchanged.")
    if report.broken:
        lines.append(f"Skipped {len(report.broken)} unreadable image(s): "
                     + ", ".join(str(path) for path, _ in report.broken))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 also when some images were unreadable: they are named)."""
    args = build_parser().parse_args(argv)
    bar = None
    try:
        options = options_from_args(args)

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                from tqdm import tqdm
                bar = tqdm(total=total, unit="img", desc="tagging", file=sys.stderr, leave=False)
            bar.update(done - bar.n)

        report = tag_images(options, log=lambda text: print(text, flush=True), progress=progress)
    except KeyboardInterrupt:
        print("Stopped. Captions written so far are complete; the rest were not touched.", file=sys.stderr)
        return 130
    except Exception as problem:  # noqa: BLE001 - one line for the user, the traceback with --debug
        return report_cli_error(problem, args.debug)
    finally:
        if bar is not None:
            bar.close()
    for line in _summary(report, options.caption_extension):
        print(line)
    if args.frequency_tags and report.frequency:
        print("Tag frequency:")
        for tag, count in sorted(report.frequency.items(), key=lambda item: (-item[1], item[0])):
            print(f"  {tag}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
