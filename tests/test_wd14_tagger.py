"""The WD14 tagger, run for real on the tiny ONNX model, checked against a reference written here.

The reference below is deliberately plain and independent of ``custom.wd14``: it pads with PIL,
shrinks by repeating pixels and averaging blocks (exact area averaging), flips to BGR and runs the
fixture's numpy copy of the network. Decoding to RGB is the trainer's loader, tested elsewhere.
"""
from __future__ import annotations

import http.server
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from custom.captioners.files import ExistingPolicy
from custom.errors import CustomError
from custom.tag_images_by_wd14_tagger import main
from custom.wd14.model import resolve_model_files
from custom.wd14.pipeline import TaggerOptions, tag_images
from custom.wd14.postprocess import TagRules, parse_tag_replacement
from custom.wd14.preprocess import prepare_image
from tests.fixtures.images import ImageSet
from tests.fixtures.tagger import TinyTagger, reference_scores
from tests.loopback import serving
from trainer.data.images import load_image_rgb

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SIDE = 64
REPO = "SmilingWolf/wd-vit-tagger-v3"


# ---------------------------------------------------------------- the independent reference

def _ref_area(array: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Exact area shrink: repeat every pixel n_out/g times, then average blocks of n_in/g."""
    n_in = array.shape[axis]
    g = math.gcd(n_in, n_out)
    stretched = np.repeat(array, n_out // g, axis=axis)
    shape = list(stretched.shape)
    shape[axis:axis + 1] = [n_out, n_in // g]
    return stretched.reshape(shape).mean(axis=axis + 1)


def ref_input(image: Image.Image, pad: tuple[int, int, int] = (255, 255, 255), centred: bool = True,
              bgr: bool = True) -> np.ndarray:
    """WD14 preprocessing of an RGB image, written simply; the keyword arguments make deliberately wrong variants."""
    width, height = image.size
    square = max(width, height)
    canvas = Image.new("RGB", (square, square), pad)
    canvas.paste(image, (((square - width) // 2, (square - height) // 2) if centred else (0, 0)))
    if square > SIDE:
        array = _ref_area(_ref_area(np.asarray(canvas, np.float64), SIDE, 0), SIDE, 1)
    else:
        array = np.asarray(canvas.resize((SIDE, SIDE), Image.Resampling.BICUBIC), np.float64)
    return array[..., ::-1] if bgr else array


def ref_scores(tagger: TinyTagger, image: Image.Image, **variant) -> dict[str, float]:
    scores = reference_scores(ref_input(image, **variant)[None])[0]
    return {name: float(score) for (name, _), score in zip(tagger.tags, scores)}


def ref_tags(tagger: TinyTagger, scores: dict[str, float], general: float = 0.35, character: float = 0.85) -> list[str]:
    """Tags in selected_tags.csv order; underscores become spaces except in the fixture's two kaomoji."""
    tags = []
    for name, category in tagger.tags:
        limit = {0: general, 4: character}.get(category)
        if limit is not None and scores[name] >= limit:
            tags.append(name if name in ("^_^", ">_<") else name.replace("_", " "))
    return tags


# ---------------------------------------------------------------- helpers

def _solid(rgb: tuple[int, int, int], size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, rgb)


def _halves(top: tuple[int, int, int], bottom: tuple[int, int, int], size: int) -> Image.Image:
    image = _solid(bottom, (size, size))
    image.paste(top, (0, 0, size, size // 2))
    return image


def _save(folder: Path, images: dict[str, Image.Image]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, image in images.items():
        paths[name] = folder / name
        image.save(paths[name])
    return paths


def _caption(image: Path, extension: str = ".txt") -> str:
    return image.with_suffix(extension).read_text(encoding="utf-8")


def _options(tagger: TinyTagger, folder: Path, **changes) -> TaggerOptions:
    rules = changes.pop("rules", TagRules())
    return TaggerOptions(directory=folder, model_dir=tagger.model_dir, rules=rules, **changes)


def _quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------- the fixture image set against the reference

def test_fixture_set_matches_the_reference(tiny_tagger: TinyTagger, image_set: ImageSet) -> None:
    before = {path: path.read_bytes() for path in image_set.caption_files.values()}
    report = tag_images(_options(tiny_tagger, image_set.root, recursive=True, batch_size=3,
                                 max_data_loader_n_workers=2, caption_extension=".tags"), log=_quiet)
    assert sorted(report.written) == sorted(image_set.good)
    assert sorted(path for path, _ in report.broken) == sorted(image_set.broken)
    assert all(reason for _, reason in report.broken)
    nearest = 1.0
    for image in image_set.good:
        scores = ref_scores(tiny_tagger, load_image_rgb(image))
        expected = ref_tags(tiny_tagger, scores)
        assert _caption(image, ".tags") == ", ".join(expected), image.name
        assert report.tags[image] == expected
        nearest = min(nearest, *(abs(s - 0.35) for n, s in scores.items()))
    # Agreement is only meaningful if no score sits on the threshold within float error.
    assert nearest > 1e-4
    for image in image_set.broken:
        assert not image.with_suffix(".tags").exists()
    # Other caption files are not touched, and the tags vary between images (not one constant caption).
    assert {path: path.read_bytes() for path in image_set.caption_files.values()} == before
    assert len({tuple(tags) for tags in report.tags.values()}) > 5
    assert report.frequency == Counter(tag for tags in report.tags.values() for tag in tags)


def test_preprocessing_matches_reference_for_shrinking_and_enlarging(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    images = {
        "odd_wide.png": Image.fromarray(rng.integers(0, 256, (61, 97, 3), dtype=np.uint8)),  # shrink, pad rows
        "odd_tall.png": Image.fromarray(rng.integers(0, 256, (150, 70, 3), dtype=np.uint8)),  # shrink, pad columns
        "small.png": Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),  # enlarge
        "exact.png": Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),  # no resize at all
    }
    for name, path in _save(tmp_path, images).items():
        prepared = prepare_image(path, SIDE)
        assert prepared.array is not None and prepared.array.dtype == np.float32
        assert prepared.array.shape == (SIDE, SIDE, 3)
        np.testing.assert_allclose(prepared.array, ref_input(images[name]), atol=2e-3, err_msg=name)


# ---------------------------------------------------------------- each preprocessing step proven

def test_channel_order_is_bgr(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    paths = _save(tmp_path, {"red.png": _solid((255, 0, 0), (80, 80)), "blue.png": _solid((0, 0, 255), (80, 80))})
    # The test can tell: fed as RGB, red would read as blue.
    assert ref_scores(tiny_tagger, _solid((255, 0, 0), (80, 80)), bgr=False)["blue_background"] > 0.9
    tag_images(_options(tiny_tagger, tmp_path), log=_quiet)
    red, blue = _caption(paths["red.png"]).split(", "), _caption(paths["blue.png"]).split(", ")
    assert "red background" in red and "blue background" not in red
    assert "blue background" in blue and "red background" not in blue


def test_padding_is_white_and_centred(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    strip, band = _solid((0, 0, 0), (96, 32)), _solid((255, 0, 0), (128, 64))
    # The test can tell: black padding loses white_background; pasting at the top (not centred) puts red
    # over white, which is what hakurei_reimu detects.
    assert ref_scores(tiny_tagger, strip)["white_background"] > 0.35
    assert ref_scores(tiny_tagger, strip, pad=(0, 0, 0))["white_background"] < 0.35
    assert ref_scores(tiny_tagger, band)["hakurei_reimu"] < 0.35
    assert ref_scores(tiny_tagger, band, centred=False)["hakurei_reimu"] > 0.85
    paths = _save(tmp_path, {"strip.png": strip, "band.png": band})
    tag_images(_options(tiny_tagger, tmp_path), log=_quiet)
    assert "white background" in _caption(paths["strip.png"]).split(", ")
    band_tags = _caption(paths["band.png"]).split(", ")
    assert "hakurei reimu" not in band_tags and "white background" in band_tags


def test_transparency_becomes_white(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    hidden_black = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    path = tmp_path / "clear.png"
    hidden_black.save(path)
    tag_images(_options(tiny_tagger, tmp_path, rules=TagRules(rating="first")), log=_quiet)
    tags = _caption(path).split(", ")
    assert tags[0] == "general" and "white background" in tags  # black would rate "sensitive", no white tag


# ---------------------------------------------------------------- thresholds

def test_general_and_character_thresholds_apply_to_their_own_tags(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    images = {"green.png": _solid((0, 153, 0), (64, 64)), "pink.png": _halves((255, 128, 128), (255, 255, 255), 64)}
    long_hair = ref_scores(tiny_tagger, images["green.png"])["long_hair"]
    reimu = ref_scores(tiny_tagger, images["pink.png"])["hakurei_reimu"]
    assert 0.55 < long_hair < 0.8 and 0.4 < reimu < 0.6  # between the two defaults: swapped thresholds would show
    paths = _save(tmp_path, images)

    def run(**rules) -> tuple[list[str], list[str]]:
        tag_images(_options(tiny_tagger, tmp_path, existing=ExistingPolicy.OVERWRITE, rules=TagRules(**rules)),
                   log=_quiet)
        return _caption(paths["green.png"]).split(", "), _caption(paths["pink.png"]).split(", ")

    green, pink = run()
    assert "long hair" in green and "hakurei reimu" not in pink
    green, pink = run(general_threshold=0.85, character_threshold=0.35)
    assert "long hair" not in green and "hakurei reimu" in pink


def test_thresh_flag_sets_both_unless_one_is_given(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    paths = _save(tmp_path, {"pink.png": _halves((255, 128, 128), (255, 255, 255), 64)})
    assert main([str(tmp_path), "--model_dir", str(tiny_tagger.model_dir), "--thresh", "0.3"]) == 0
    assert "hakurei reimu" in _caption(paths["pink.png"])
    assert main([str(tmp_path), "--model_dir", str(tiny_tagger.model_dir), "--thresh", "0.3",
                 "--character_threshold", "0.9", "--overwrite"]) == 0
    assert "hakurei reimu" not in _caption(paths["pink.png"])


# ---------------------------------------------------------------- tag options

def test_characters_firing_do_not_crash_and_can_go_first(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    images = {"cyan.png": _solid((0, 255, 255), (64, 64)), "reimu.png": _halves((255, 0, 0), (255, 255, 255), 64)}
    paths = _save(tmp_path, images)
    tag_images(_options(tiny_tagger, tmp_path, batch_size=2), log=_quiet)
    cyan = _caption(paths["cyan.png"]).split(", ")
    assert cyan == ref_tags(tiny_tagger, ref_scores(tiny_tagger, images["cyan.png"]))
    assert cyan[-1] == "hatsune miku"  # csv order: characters after general tags
    tag_images(_options(tiny_tagger, tmp_path, existing=ExistingPolicy.OVERWRITE,
                        rules=TagRules(character_tags_first=True)), log=_quiet)
    assert _caption(paths["cyan.png"]).split(", ")[0] == "hatsune miku"
    assert _caption(paths["reimu.png"]).split(", ")[0] == "hakurei reimu"


def test_rating_tags_only_when_asked(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    paths = _save(tmp_path, {"black.png": _solid((0, 0, 0), (64, 64)), "white.png": _solid((255, 255, 255), (64, 64))})
    tag_images(_options(tiny_tagger, tmp_path), log=_quiet)
    for path in paths.values():
        assert not {"general", "sensitive"} & set(_caption(path).split(", "))
    tag_images(_options(tiny_tagger, tmp_path, existing=ExistingPolicy.OVERWRITE, rules=TagRules(rating="first")),
               log=_quiet)
    assert _caption(paths["black.png"]).split(", ")[0] == "sensitive"
    assert _caption(paths["white.png"]).split(", ")[0] == "general"
    tag_images(_options(tiny_tagger, tmp_path, existing=ExistingPolicy.OVERWRITE, rules=TagRules(rating="last")),
               log=_quiet)
    assert _caption(paths["white.png"]).split(", ")[-1] == "general"


def test_underscores_replaced_except_kaomoji(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    paths = _save(tmp_path, {"yellow.png": _solid((255, 255, 0), (64, 64)), "green.png": _solid((0, 255, 0), (64, 64))})
    tag_images(_options(tiny_tagger, tmp_path), log=_quiet)
    assert "^_^" in _caption(paths["yellow.png"]).split(", ")
    assert "long hair" in _caption(paths["green.png"]).split(", ")
    assert main([str(tmp_path), "--model_dir", str(tiny_tagger.model_dir), "--no-remove_underscore",
                 "--overwrite"]) == 0
    assert "long_hair" in _caption(paths["green.png"]).split(", ")


def test_undesired_replacement_always_first_and_separator(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    image = _solid((0, 255, 0), (64, 64))
    paths = _save(tmp_path, {"green.png": image})
    plain = ref_tags(tiny_tagger, ref_scores(tiny_tagger, image))
    assert "long hair" in plain and "1girl" in plain and plain[0] != "solo"
    code = main([str(tmp_path), "--model_dir", str(tiny_tagger.model_dir), "--undesired_tags", "1girl",
                 "--tag_replacement", r"long_hair,long locks\, green;smile,grin", "--always_first_tags", "solo",
                 "--caption_separator", " | "])
    assert code == 0
    expected = ["solo"] + [{"long hair": r"long locks, green", "smile": "grin"}.get(t, t)
                           for t in plain if t not in ("1girl", "solo")]
    assert _caption(paths["green.png"]) == " | ".join(expected)


def test_tag_replacement_parsing() -> None:
    assert parse_tag_replacement(r"a,b;c\;d,e\,f;") == (("a", "b"), ("c;d", "e,f"))
    with pytest.raises(CustomError) as caught:
        parse_tag_replacement("a,b,c")
    assert caught.value.option == "--tag_replacement"


def test_existing_captions_skip_overwrite_append(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    image = _solid((0, 255, 0), (64, 64))
    paths = _save(tmp_path, {"green.png": image})
    caption = paths["green.png"].with_suffix(".txt")
    original = "\ufeffmy trigger, Long_Hair, by hand\r\nsecond line\r\n".encode("utf-8")
    caption.write_bytes(original)
    report = tag_images(_options(tiny_tagger, tmp_path), log=_quiet)
    assert caption.read_bytes() == original and report.kept_existing == [paths["green.png"]] and not report.written
    tag_images(_options(tiny_tagger, tmp_path, existing=ExistingPolicy.APPEND), log=_quiet)
    new = [tag for tag in ref_tags(tiny_tagger, ref_scores(tiny_tagger, image)) if tag != "long hair"]
    assert caption.read_text(encoding="utf-8") == ", ".join(["my trigger", "Long_Hair", "by hand"] + new) + "\nsecond line"
    tag_images(_options(tiny_tagger, tmp_path, existing=ExistingPolicy.OVERWRITE), log=_quiet)
    assert caption.read_text(encoding="utf-8") == ", ".join(ref_tags(tiny_tagger, ref_scores(tiny_tagger, image)))
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*tmp"))  # no temp files left


def test_unreadable_caption_is_left_alone_and_image_extension_refused(tiny_tagger: TinyTagger, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    paths = _save(tmp_path, {"a.png": _solid((0, 255, 0), (64, 64)), "b.png": _solid((255, 0, 0), (64, 64))})
    latin1 = "caf\xe9, old tags".encode("latin-1")
    paths["a.png"].with_suffix(".txt").write_bytes(latin1)
    report = tag_images(_options(tiny_tagger, tmp_path, existing=ExistingPolicy.APPEND), log=print)
    assert paths["a.png"].with_suffix(".txt").read_bytes() == latin1 and report.written == [paths["b.png"]]
    assert "a.txt" in capsys.readouterr().out
    image_bytes = paths["b.png"].read_bytes()
    for extension in (".png", "JPG", "", "../x"):
        with pytest.raises(CustomError) as caught:
            tag_images(_options(tiny_tagger, tmp_path, caption_extension=extension, existing=ExistingPolicy.OVERWRITE),
                       log=_quiet)
        assert caught.value.option == "--caption_extension"
    assert paths["b.png"].read_bytes() == image_bytes


def test_batching_and_workers_do_not_change_results(tiny_tagger: TinyTagger, image_set: ImageSet) -> None:
    runs = []
    for batch, workers in ((1, 0), (4, 2)):
        report = tag_images(_options(tiny_tagger, image_set.root, recursive=True, batch_size=batch,
                                     max_data_loader_n_workers=workers, existing=ExistingPolicy.OVERWRITE,
                                     caption_extension=".wd"), log=_quiet)
        runs.append({path: path.with_suffix(".wd").read_bytes() for path in report.written})
    assert runs[0] == runs[1] and len(runs[0]) == len(image_set.good)


# ---------------------------------------------------------------- command line

def test_cli_names_broken_images_and_keeps_going(tiny_tagger: TinyTagger, image_set: ImageSet,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(image_set.root), "--model_dir", str(tiny_tagger.model_dir), "--recursive", "--onnx",
                 "--caption_extension", "wd", "--batch_size", "4", "--frequency_tags"])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err
    for broken in image_set.broken:
        assert str(broken) in out
    assert f"Wrote {len(image_set.good)} caption file(s)" in out
    assert [line for line in out.splitlines() if "ExecutionProvider" in line] == [
        f"onnxruntime {ort.__version__}: running on the CPU (CPUExecutionProvider; install onnxruntime-gpu for CUDA)"]
    assert "Tag frequency:" in out
    assert all(path.with_suffix(".wd").is_file() for path in image_set.good)


def test_cli_errors_are_one_message_without_traceback(tiny_tagger: TinyTagger, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing"), "--model_dir", str(tiny_tagger.model_dir)]) == 1
    err = capsys.readouterr().err
    assert "missing" in err and "What to do" in err and "Traceback" not in err
    (tmp_path / "sub").mkdir()
    _solid((9, 9, 9), (8, 8)).save(tmp_path / "sub" / "a.png")
    assert main([str(tmp_path), "--model_dir", str(tiny_tagger.model_dir)]) == 1
    assert "--recursive" in capsys.readouterr().err
    assert main([str(tmp_path), "--recursive", "--model_dir", str(tiny_tagger.model_dir),
                 "--tag_replacement", "a,b,c"]) == 1
    assert "--tag_replacement" in capsys.readouterr().err
    # No model folder and no network (the test session is offline): told what to do, nothing written.
    assert main([str(tmp_path), "--recursive", "--model_dir", str(tmp_path / "models")]) == 1
    err = capsys.readouterr().err
    assert "--model_dir" in err and "Traceback" not in err
    assert not (tmp_path / "sub" / "a.txt").exists()
    with pytest.raises(CustomError):
        main([str(tmp_path / "missing"), "--model_dir", str(tiny_tagger.model_dir), "--debug"])


# ---------------------------------------------------------------- model files: offline folder, download once

class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers /<owner>/<name>/resolve/<revision>/<file> like the Hub, and counts every request."""

    files: dict[str, bytes] = {}
    requests: list[tuple[str, str]] = []

    def _send(self, body: bool) -> None:
        type(self).requests.append((self.command, self.path))
        parts = self.path.split("?")[0].strip("/").split("/")
        data = self.files.get(parts[-1]) if len(parts) == 5 and parts[2] == "resolve" else None
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.send_header("ETag", f'"{hash(data) & 0xFFFFFFFF:08x}{len(data)}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._send(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._send(body=True)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def fake_hub(tiny_tagger: TinyTagger) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    handler = type("Hub", (_FakeHub,), {"requests": [], "files": {
        "model.onnx": tiny_tagger.model_path.read_bytes(), "selected_tags.csv": tiny_tagger.tags_csv.read_bytes()}})
    with serving(handler) as base:
        yield base, handler.requests


def _gets(requests: list[tuple[str, str]]) -> Counter:
    return Counter(path.rsplit("/", 1)[-1] for method, path in requests if method == "GET")


def test_offline_model_dir_needs_no_hub(tiny_tagger: TinyTagger) -> None:
    # The session is offline (conftest): any Hub call would raise, so success means none was made.
    files = resolve_model_files("SmilingWolf/wd-vit-tagger-v3", tiny_tagger.model_dir)
    assert files.source == "folder" and files.model == tiny_tagger.model_path and files.tags == tiny_tagger.tags_csv


def test_cli_downloads_into_hf_cache_once(fake_hub, tmp_path: Path) -> None:
    endpoint, requests = fake_hub
    images = tmp_path / "images"
    paths = _save(images, {"red.png": _solid((255, 0, 0), (40, 40))})
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(PROJECT_ROOT))

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "custom.tag_images_by_wd14_tagger", str(images), "--repo_id",
                               REPO, "--overwrite", *extra], env=env, cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=120)

    first = run()
    assert first.returncode == 0, first.stderr
    assert _gets(requests) == {"model.onnx": 1, "selected_tags.csv": 1}
    assert "red background" in _caption(paths["red.png"])
    assert list((tmp_path / "hf").rglob("model.onnx"))
    requests.clear()
    second = run()
    assert second.returncode == 0, second.stderr
    assert requests == []  # not even a metadata request: the cache is trusted
    third = run("--force_download")
    assert third.returncode == 0, third.stderr
    assert _gets(requests) == {"model.onnx": 1, "selected_tags.csv": 1}


def test_model_dir_download_is_reused(fake_hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    endpoint, requests = fake_hub
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the session is offline; this test has its own Hub
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    first = resolve_model_files(REPO, tmp_path / "models", endpoint=endpoint)
    assert first.source == "downloaded" and first.model.parent == tmp_path / "models" / "SmilingWolf_wd-vit-tagger-v3"
    assert _gets(requests) == {"model.onnx": 1, "selected_tags.csv": 1}
    requests.clear()
    again = resolve_model_files(REPO, tmp_path / "models", endpoint=endpoint)
    assert replace(again, source="downloaded") == first and again.source == "folder" and requests == []
    forced = resolve_model_files(REPO, tmp_path / "models", force_download=True, endpoint=endpoint)
    assert forced.model.read_bytes() == first.model.read_bytes() and _gets(requests)["model.onnx"] == 1


def test_command_line_reports_a_bad_folder_without_a_traceback(tmp_path: Path, capsys) -> None:
    from custom.tag_images_by_wd14_tagger import main

    assert main([str(tmp_path / "no_such_folder"), "--onnx"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "no_such_folder" in err and "Traceback" not in err
