"""Caption a folder of images in natural language: ``python -m custom.captioners DIR [options]``.

Existing captions are kept unless ``--overwrite`` (replace) or ``--append`` (add the sentence
after the existing caption, separated by ``--append_separator``). Errors are printed without a
traceback unless ``--debug``; unreadable images are named and skipped.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from custom.captioners.base import Captioner, CaptionRunOptions, caption_folder
from custom.captioners.blip import DEFAULT_BLIP, BlipSettings
from custom.captioners.files import ExistingPolicy, list_images
from custom.errors import report_cli_error


def _blip(args: argparse.Namespace) -> Captioner:
    from custom.captioners.blip import BlipCaptioner

    return BlipCaptioner(BlipSettings(model=args.model or DEFAULT_BLIP, num_beams=args.num_beams,
                                      min_length=args.min_length, max_length=args.max_length, device=args.device))


# One line per captioner: its command-line name and how to build it from the arguments.
BUILDERS: dict[str, Callable[[argparse.Namespace], Captioner]] = {"blip": _blip}


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments."""
    parser = argparse.ArgumentParser(prog="python -m custom.captioners",
                                     description="Write a natural-language caption for every image in DIR.")
    parser.add_argument("directory", metavar="DIR", type=Path, help="folder with the images")
    parser.add_argument("--captioner", choices=sorted(BUILDERS), default="blip", help="which model family (blip)")
    parser.add_argument("--model", default=None, help=f"Hub repo id or local folder (default {DEFAULT_BLIP})")
    parser.add_argument("--batch_size", type=int, default=1, help="images per generate call (default 1)")
    parser.add_argument("--num_beams", type=int, default=3, help="beam search width; 1 is greedy (default 3)")
    parser.add_argument("--min_length", type=int, default=5, help="shortest caption in tokens (default 5)")
    parser.add_argument("--max_length", type=int, default=75, help="longest caption in tokens (default 75)")
    parser.add_argument("--caption_extension", default=".txt", help="extension of the caption files (default .txt)")
    parser.add_argument("--recursive", action="store_true", help="also caption images in sub-folders")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing captions (default: skip them)")
    existing.add_argument("--append", action="store_true", help="add the new caption after an existing one")
    parser.add_argument("--append_separator", default=", ", help="text between old and new caption (default ', ')")
    parser.add_argument("--max_data_loader_n_workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: CUDA when available)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        existing = (ExistingPolicy.OVERWRITE if args.overwrite
                    else ExistingPolicy.APPEND if args.append else ExistingPolicy.SKIP)
        options = CaptionRunOptions(directory=args.directory, caption_extension=args.caption_extension,
                                    recursive=args.recursive, batch_size=args.batch_size, existing=existing,
                                    append_separator=args.append_separator, workers=args.max_data_loader_n_workers)
        list_images(args.directory, args.recursive)  # a wrong folder fails now, not after loading a model
        captioner = BUILDERS[args.captioner](args)
        print(f"Captioning with {captioner.name}", flush=True)
        report = caption_folder(captioner, options, log=lambda text: print(text, flush=True))
    except KeyboardInterrupt:
        print("Stopped. Captions written so far are complete; the rest were not touched.", file=sys.stderr)
        return 130
    except Exception as problem:  # noqa: BLE001 - one line for the user, the traceback with --debug
        return report_cli_error(problem, args.debug)
    print(f"Wrote {len(report.written)} caption file(s) for {report.images_found} image(s) found.")
    if report.broken:
        print(f"Skipped {len(report.broken)} unreadable image(s): " + ", ".join(str(p) for p, _ in report.broken))
    return 0


if __name__ == "__main__":
    sys.exit(main())
