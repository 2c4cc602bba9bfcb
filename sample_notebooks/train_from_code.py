"""Train a LoRA from code, with the same managers the two widget notebooks click through.

Run it from the project folder (or paste the steps into a notebook cell by cell)::

    python sample_notebooks/train_from_code.py --images ~/my_pictures --base-model models/sd15.safetensors \\
        --project my_char --trigger ohwx --preset sd15

Each step is one function below, in the order the notebooks show them:

1. ``check_machine``   the environment report and the work folders (setup panel);
2. ``import_images``   copy a folder of images into ``datasets/<project>/<repeats>_<concept>`` (dataset panel);
3. ``validate``        decode every image; broken ones are moved to ``_rejected/``, never deleted;
4. ``tag``             WD14 tags into a caption file per image, then the trigger word in front (tagging and
                       caption panels); every caption change can be undone with ``DatasetManager.undo_captions``;
5. ``write_config``    a training preset plus your changes -> the checked TOML file (training panel);
6. ``train``           the trainer as a background process, followed through its events file (monitor panel).

Files go where the notebooks put them (``LORA_WORK_DIR`` moves them all). ``--tagger-dir`` takes a local
WD14 folder (``model.onnx`` + ``selected_tags.csv``); without it the tagger is downloaded once from the Hub.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))  # run from anywhere: the project's packages come first

from core.dataset_manager import DatasetManager  # noqa: E402
from core.datasets.captions import AddTrigger  # noqa: E402
from core.datasets.tagging import TaggingRequest  # noqa: E402
from core.errors import CoreError  # noqa: E402
from custom.errors import CustomError  # noqa: E402
from core.managers import SetupManager  # noqa: E402
from core.paths import ProjectPaths  # noqa: E402
from trainer.errors import TrainerError  # noqa: E402
from core.training import (  # noqa: E402
    ModelFacts, RunMonitor, TrainingForm, describe_model, live_checks, load_training_presets, start_run,
    write_run_config,
)


def check_machine(paths: ProjectPaths) -> bool:
    """Print the machine report, create the work folders; returns True when a CUDA GPU is there."""
    setup = SetupManager(paths)
    report = setup.environment()
    print("\n".join(report.summary_lines()))
    setup.prepare_folders()
    return bool(report.gpus and report.torch_cuda)


def import_images(manager: DatasetManager, images: Path, project: str, repeats: int, concept: str) -> Path:
    """Copy the images (and any captions beside them) in; returns the project's dataset folder."""
    result = manager.import_folder(images, project, repeats=repeats, concept=concept)
    print(result.summary())
    for warning in result.warnings:
        print(f"  warning: {warning}")
    return manager.folder(project)


def validate(manager: DatasetManager, dataset: Path) -> int:
    """Decode every image, move unusable ones aside; returns how many images are left to train on."""
    report = manager.validate(dataset)
    for line in report.summary_lines(limit=20):
        print(f"  {line}")
    if not report.ok:
        for line in manager.move_rejects(report).summary_lines():
            print(f"  {line}")
        report = manager.validate(dataset)
    return len(report.images)


def tag(manager: DatasetManager, dataset: Path, trigger: str, tagger_dir: Path | None, threshold: float) -> None:
    """WD14 tags for images without a caption, then the trigger word first in every caption."""
    request = TaggingRequest(folder=dataset, model_dir=tagger_dir, general_threshold=threshold,
                             download_dir=manager.paths.cache / "wd14")
    summary = manager.tag_dataset(request, log=print)
    print(f"  tagged {summary.written} image(s), kept {summary.kept_existing} existing caption(s)")
    if summary.frequency:
        print("  most common tags: " + ", ".join(f"{t} ({n})" for t, n in summary.frequency.most_common(8)))
    if trigger:
        manager.edit_captions(dataset, [AddTrigger(trigger)], recursive=True)  # every N_name folder
        print(f"  trigger word {trigger!r} added; undo with DatasetManager.undo_captions({str(dataset)!r})")


def write_config(paths: ProjectPaths, project: str, preset_key: str, base_model: Path, dataset: Path,
                 has_cuda: bool, changes: dict[str, object]) -> Path:
    """Preset values, then the paths and your changes; prints the live checks; returns the TOML file."""
    presets = load_training_presets()
    if preset_key not in presets:
        raise CoreError(f"Unknown preset {preset_key!r}.", f"Choose one of: {', '.join(presets)}.")
    values = dict(presets[preset_key].values)
    values.update(pretrained_model_name_or_path=str(base_model), train_data_dir=str(dataset), output_name=project)
    if not has_cuda:  # half precision is a GPU feature; on the CPU the trainer refuses fp16/bf16
        values.update(mixed_precision="no", save_precision="float")
    values.update(changes)
    form = TrainingForm(project=project, values=values)
    model = describe_model(base_model)
    checks = live_checks(form, paths, ModelFacts(family=model.family, v_prediction=model.v_prediction,
                                                 has_cuda=has_cuda))
    if checks.steps:
        print(f"  steps: {checks.steps.formula}")
    for finding in checks.findings:
        print(f"  {finding.level}: {finding.message} {finding.reason}".rstrip())
    if checks.errors:
        raise CoreError("The settings have errors (listed above).", "Change the values named there and rerun.")
    saved = write_run_config(form, paths)
    print(f"  config written: {saved.path}")
    return saved.path


def train(paths: ProjectPaths, config_file: Path, poll_s: float = 0.5) -> Path:
    """Start the trainer in the background and follow it to the end; returns the LoRA file."""
    monitor = RunMonitor(start_run(config_file, paths=paths))
    shown = 0
    try:
        while not monitor.ended:
            monitor.refresh()
            progress = monitor.progress
            if progress.step != shown and progress.total_steps:
                shown = progress.step
                loss = f", loss {progress.loss:.4f}" if progress.loss is not None else ""
                print(f"  step {progress.step}/{progress.total_steps}{loss}", flush=True)
            time.sleep(poll_s)
    except KeyboardInterrupt:  # Ctrl+C: a clean stop that saves the LoRA and the state, as the Stop button
        monitor.stop()
        raise
    progress = monitor.progress
    for message in progress.errors:
        print(f"  error: {message}")
    if progress.final_path is None:
        raise CoreError(f"The training ended without a LoRA (status {progress.status}).",
                        f"Read the trainer's log: {monitor.handle.log_file}")
    print(f"  LoRA saved: {progress.final_path}")
    return Path(progress.final_path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description="Import, check, tag and train a LoRA from code.")
    parser.add_argument("--images", type=Path, required=True, help="folder of images (captions beside them kept)")
    parser.add_argument("--base-model", type=Path, required=True, help="base model file or diffusers folder")
    parser.add_argument("--project", default="my_lora", help="project name (dataset, config and output folders)")
    parser.add_argument("--concept", default="concept", help="concept name of the image folder")
    parser.add_argument("--repeats", type=int, default=10, help="how often each image is shown per epoch")
    parser.add_argument("--trigger", default="", help="trigger word put first in every caption")
    parser.add_argument("--preset", default="sd15", help="training preset (core/training_presets.toml)")
    parser.add_argument("--tagger-dir", type=Path, help="local WD14 tagger folder (model.onnx, selected_tags.csv)")
    parser.add_argument("--threshold", type=float, default=0.35, help="WD14 general tag threshold")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="change a training option, e.g. --set max_train_steps=100 (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """All six steps; a user error (CoreError and the trainer's and tagger's) is printed with its hint."""
    args = parse_args(argv)
    changes = dict(item.split("=", 1) for item in args.set)  # text values: the options table types them
    paths = ProjectPaths.resolve()
    manager = DatasetManager(paths)
    try:
        print("1. The machine")
        has_cuda = check_machine(paths)
        print("2. Import")
        dataset = import_images(manager, args.images, args.project, args.repeats, args.concept)
        print("3. Validate")
        if validate(manager, dataset) == 0:
            raise CoreError("No usable image is left in the dataset.", "Check the images folder.")
        print("4. Tag")
        tag(manager, dataset, args.trigger, args.tagger_dir, args.threshold)
        print("5. Config")
        config_file = write_config(paths, args.project, args.preset, args.base_model, dataset, has_cuda, changes)
        print("6. Train")
        train(paths, config_file)
    except (CoreError, TrainerError, CustomError) as problem:
        message, hint = getattr(problem, "message", str(problem)), getattr(problem, "hint", "")
        print(f"Error: {message}" + (f"\nWhat to do: {hint}" if hint else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
