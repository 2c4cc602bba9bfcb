"""Command line: ``python -m trainer.train_network --config_file CFG.toml [--dataset_config DS.toml] [--KEY VALUE ...]``.

Also runs under ``accelerate launch -m trainer.train_network ...``. Keys are sd-scripts option
names (see docs/OPTIONS.md); command-line keys override the file. Errors are printed as a message
with what to do, without a traceback unless ``--debug`` is given, and recorded in the events file.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from trainer.config import TrainingConfig, load_training_config, parse_cli_overrides
from trainer.errors import TrainerError
from trainer.events import EventWriter

OOM_HINT = ("Lower the memory use: gradient_checkpointing = true, train_batch_size = 1, cache_latents = true, "
            "cache_text_encoder_outputs = true with network_train_unet_only = true (SDXL), mixed_precision bf16/fp16, "
            "a smaller resolution or network_dim, or optimizer_type AdamW8bit / Adafactor.")

USAGE = __doc__


def split_arguments(argv: Sequence[str]) -> tuple[Path | None, bool, dict]:
    """Pull out ``--config_file`` and ``--debug``; everything else is an option override."""
    config_file: Path | None = None
    debug = False
    rest: list[str] = []
    items = list(argv)
    index = 0
    while index < len(items):
        token = items[index]
        if token in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        if token == "--debug":
            debug = True
        elif token == "--config_file" or token.startswith("--config_file="):
            if "=" in token:
                config_file = Path(token.split("=", 1)[1])
            else:
                if index + 1 >= len(items):
                    raise TrainerError("--config_file needs a file name.", hint="--config_file my_lora.toml")
                index += 1
                config_file = Path(items[index])
        else:
            rest.append(token)
        index += 1
    return config_file, debug, parse_cli_overrides(rest)


def _start_event(session) -> dict:
    scan, plan, config = session.scan, session.plan, session.config
    return {
        "family": session.model.family,
        "architecture": session.model.architecture.evidence if hasattr(session.model.architecture, "evidence") else "",
        "settings": {name: config[name] for name in sorted(config.explicit)},
        "images": len(scan.records),
        "images_with_repeats": scan.num_train_images,
        "skipped": len(scan.skipped),
        "buckets": [{"width": w, "height": h, "images": c.images, "with_repeats": c.with_repeats}
                    for (w, h), c in scan.bucket_table.items()],
        "batches_per_epoch": plan.batches_per_epoch,
        "epochs": plan.epochs,
        "total_steps": plan.total_steps,
        "output": session.paths.final,
        "processes": session.accelerator.num_processes,
    }


def run_training(config: TrainingConfig) -> Path:
    """Train as configured; returns the final LoRA path. Raises TrainerError on a user-fixable problem."""
    import torch

    from trainer.loop import LoopState, train
    from trainer.saving.lora_file import output_paths
    from trainer.session import events_path, prepare_session

    torch.set_num_threads(max(1, torch.get_num_threads()))
    paths = output_paths(config.output_dir or ".", config.output_name)
    # Only the main process writes events. The launchers (accelerate, torchrun) set RANK; asking
    # accelerate's PartialState here would be too early on CPU-only machines (it reports every
    # process as the main one until the Accelerator has read ACCELERATE_USE_CPU).
    main_process = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"
    events = EventWriter(events_path(config, paths) if config.output_dir else None, enabled=main_process)
    started = time.time()
    state = LoopState()

    def request_stop(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        state.stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        session = prepare_session(config, events)
        events.emit("start", **_start_event(session))
        result = train(session, state)
        skipped = [{"path": item.path, "reason": item.reason} for item in session.scan.skipped]
        events.emit("done", path=result.path, steps=result.steps, epochs=result.epochs,
                    seconds=round(time.time() - started, 2), stopped=result.stopped, final_loss=result.final_loss,
                    skipped_images=skipped)
        if skipped:
            print(f"{len(skipped)} image(s) could not be read and were skipped:", file=sys.stderr)
            for item in skipped:
                print(f"  {item['path']}: {item['reason']}", file=sys.stderr)
        return result.path
    except TrainerError as problem:
        events.emit("error", message=problem.message, hint=problem.hint, option=problem.option)
        raise
    except torch.cuda.OutOfMemoryError as problem:
        events.emit("error", message="CUDA ran out of memory.", hint=OOM_HINT)
        raise TrainerError("The GPU ran out of memory (CUDA out of memory).", hint=OOM_HINT) from problem
    except Exception as problem:
        events.emit("error", message=f"{type(problem).__name__}: {problem}",
                    hint="This looks like a bug; run again with --debug and report the traceback.")
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        events.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 done, 1 user error, 2 bug)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        config_file, debug, overrides = split_arguments(argv)
        config = load_training_config(config_file, overrides)
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        path = run_training(config)
    except TrainerError as problem:
        if debug:
            traceback.print_exc()
        print(f"error: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    except Exception:  # a bug: show it in full
        traceback.print_exc()
        return 2
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
