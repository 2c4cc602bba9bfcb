"""WD14 tagger pipeline throughput against a plain one-image-at-a-time loop.

Run: ``python benchmarks/tagger.py [--images 48] [--rounds 3] [--batch_size 8]``. Uses the tiny
WD14 ONNX fixture (64 px input, a few microseconds of inference), so decoding and resizing, the
part the worker threads parallelise, dominate, as they do in front of a real model on a GPU.
The images are photo-sized JPEGs (about 1 MP, mixed orientations) written to a temporary folder.

Measured side by side, rounds interleaved so a noisy neighbour hits every variant alike:

1. plain loop: decode, preprocess, infer (batch 1), write the caption, one image after another;
2. ``tag_images`` with 1 decoding worker (batched inference overlaps decoding);
3. ``tag_images`` with 2 decoding workers.

Prints median images per second, each pipeline's ratio to the plain loop, and the CPU time per
image (all threads), which shows the pipeline's own overhead even when other work shares the CPUs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never touch the network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the fixtures package imports transformers; keep it quiet

SIZES = ((1280, 853), (853, 1280), (1024, 1024), (1200, 900))


def _images(folder: Path, count: int) -> list[Path]:
    """Smooth colour fields with grain, saved as JPEG q92: decodes like a photo of that size."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(11)
    paths = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        base = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height),
                                                                                      Image.Resampling.BICUBIC)
        grain = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(np.asarray(base, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
        path = folder / f"photo_{index:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(path)
    return paths


def _timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process over all threads) for one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def _plain_loop(model_dir: Path, folder: Path) -> None:
    """Seconds for the plainest correct loop over the same work, batch 1, no threads."""
    import numpy as np

    from custom.captioners.files import list_images, write_text_atomic
    from custom.wd14.labels import read_labels
    from custom.wd14.model import load_model
    from custom.wd14.postprocess import TagRules, select_tags
    from custom.wd14.preprocess import prepare_image

    model = load_model(model_dir / "model.onnx")
    labels = read_labels(model_dir / "selected_tags.csv")
    rules = TagRules()
    for path in list_images(folder, recursive=False):
        prepared = prepare_image(path, model.side)
        scores = model.session.run([model.output_name], {model.input_name: prepared.array[np.newaxis]})[0][0]
        write_text_atomic(path.with_suffix(".bench"), ", ".join(select_tags(scores, labels, rules)))


def _pipeline(model_dir: Path, folder: Path, workers: int, batch_size: int) -> None:
    from custom.captioners.files import ExistingPolicy
    from custom.wd14.pipeline import TaggerOptions, tag_images

    options = TaggerOptions(directory=folder, model_dir=model_dir, batch_size=batch_size,
                            max_data_loader_n_workers=workers, caption_extension=".bench",
                            existing=ExistingPolicy.OVERWRITE)
    report = tag_images(options, log=lambda _: None)
    assert not report.broken and len(report.written) == report.images_found


def main(argv: list[str] | None = None) -> int:
    """Measure and print images per second and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args(argv)
    from tests.fixtures.tagger import build_tagger

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tagger = build_tagger(root / "tagger")
        folder = root / "photos"
        _images(folder, args.images)
        _plain_loop(tagger.model_dir, folder)  # warm-up: file cache, onnxruntime, numpy
        runs: dict[str, list[tuple[float, float]]] = {"plain": [], "w1": [], "w2": []}
        for _ in range(args.rounds):
            runs["plain"].append(_timed(lambda: _plain_loop(tagger.model_dir, folder)))
            runs["w1"].append(_timed(lambda: _pipeline(tagger.model_dir, folder, 1, args.batch_size)))
            runs["w2"].append(_timed(lambda: _pipeline(tagger.model_dir, folder, 2, args.batch_size)))
    rate = {name: args.images / statistics.median(w for w, _ in values) for name, values in runs.items()}
    cpu = {name: 1000 * statistics.median(c for _, c in values) / args.images for name, values in runs.items()}
    print(f"tiny WD14 tagger, {args.images} JPEGs of about 1 MP, batch {args.batch_size}, "
          f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"plain loop (batch 1, no threads) {rate['plain']:7.1f} images/s  {cpu['plain']:6.1f} CPU ms/image")
    for name, label in (("w1", "pipeline, 1 worker      "), ("w2", "pipeline, 2 workers     ")):
        print(f"{label}         {rate[name]:7.1f} images/s  {cpu[name]:6.1f} CPU ms/image"
              f"   ratio {rate[name] / rate['plain']:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
