"""Shared pytest set-up: an offline, quiet environment and the tiny fixtures, built once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Make the whole session offline: no test may reach the Hub, even by accident."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    # The tiny test models are far too small to gain from two threads; one avoids thread sync costs.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # A private Hub cache, so nothing a developer has cached can make a test pass by luck.
    cache = Path(config.rootpath if hasattr(config, "rootpath") else PROJECT_ROOT) / ".pytest_cache" / "hf_home"
    os.environ["HF_HOME"] = str(cache)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tiny models are far too small to gain from a second thread, and lose to its sync cost."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def fixtures_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per test session that every built fixture lives under."""
    return tmp_path_factory.mktemp("fixtures")


@pytest.fixture(scope="session")
def tiny_sd15(fixtures_root: Path):
    """A tiny SD1.5-style model: diffusers folder, original-layout single file, config folder."""
    from tests.fixtures import build_sd15

    return build_sd15(fixtures_root / "sd15")


@pytest.fixture(scope="session")
def tiny_sdxl(fixtures_root: Path):
    """A tiny SDXL-style model with SDXL's real block layout."""
    from tests.fixtures import build_sdxl

    return build_sdxl(fixtures_root / "sdxl")


@pytest.fixture(scope="session")
def tiny_tagger(fixtures_root: Path):
    """A tiny WD14-style ONNX tagger with its selected_tags.csv."""
    from tests.fixtures import build_tagger

    return build_tagger(fixtures_root / "wd14_tagger")


@pytest.fixture(scope="session")
def image_set_template(fixtures_root: Path):
    """The odd-case image set, built once; tests that change files must use ``image_set``."""
    from tests.fixtures import build_image_set

    return build_image_set(fixtures_root / "images")


@pytest.fixture()
def image_set(tmp_path: Path):
    """A fresh copy of the odd-case image set that a test may modify."""
    from tests.fixtures import build_image_set

    return build_image_set(tmp_path / "images")
