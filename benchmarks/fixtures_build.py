"""How long the offline test fixtures take to build, cold and when already built (cached).

Run: ``python benchmarks/fixtures_build.py``. The cached build is the baseline: the ratio shows
what a test session pays the first time, against reusing an existing build.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures import build_image_set, build_sd15, build_sdxl, build_tagger  # noqa: E402


def _timed(builder, dest: Path) -> float:
    started = time.perf_counter()
    builder(dest)
    return time.perf_counter() - started


def main() -> int:
    """Print cold and cached build times for every fixture."""
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"{'fixture':8s} {'cold s':>8s} {'cached s':>9s} {'ratio':>7s}")
        for name, builder in (("sd15", build_sd15), ("sdxl", build_sdxl), ("tagger", build_tagger),
                              ("images", build_image_set)):
            cold = _timed(builder, root / name)
            cached = _timed(builder, root / name)
            print(f"{name:8s} {cold:8.2f} {cached:9.3f} {cold / max(cached, 1e-6):7.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
