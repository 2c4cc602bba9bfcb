"""The tiny WD14 tagger and the odd image set are what later tests trust: prove they are what they claim."""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageFile, ImageOps

from tests.fixtures.images import ImageSet, build_image_set
from tests.fixtures.tagger import TinyTagger, build_tagger, reference_scores

GENERAL_THRESHOLD = 0.35
CHARACTER_THRESHOLD = 0.85
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


# ---------------------------------------------------------------- tagger helpers

def _solid(rgb: tuple[int, int, int], size: int) -> np.ndarray:
    """An HxWx3 RGB float32 image of one colour."""
    return np.broadcast_to(np.array(rgb, np.float32), (size, size, 3)).copy()


def _halves(top: tuple[int, int, int], bottom: tuple[int, int, int], size: int) -> np.ndarray:
    img = _solid(bottom, size)
    img[: size // 2] = top
    return img


def _texture(seed: int, size: int) -> np.ndarray:
    """A smooth seeded colour field, like a blurry photo."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB")
    return np.asarray(small.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def _bgr_batch(*rgb_images: np.ndarray) -> np.ndarray:
    """Stack RGB images into the BGR NHWC batch a correct tagger feeds."""
    return np.ascontiguousarray(np.stack(rgb_images)[..., ::-1])


@pytest.fixture(scope="module")
def session(tiny_tagger: TinyTagger) -> ort.InferenceSession:
    return ort.InferenceSession(str(tiny_tagger.model_path), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: batch.astype(np.float32)})[0]


def _scores(session: ort.InferenceSession, tagger: TinyTagger, batch: np.ndarray) -> dict[str, float]:
    """Scores of the first image of ``batch`` by tag name."""
    out = _run(session, batch)[0]
    return {name: float(p) for (name, _), p in zip(tagger.tags, out)}


def _csv_rows(tagger: TinyTagger) -> list[dict[str, str]]:
    with tagger.tags_csv.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- tagger: model

def test_model_loads_with_wd14_shapes(tiny_tagger: TinyTagger, session: ort.InferenceSession) -> None:
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    size = tiny_tagger.input_size
    assert tiny_tagger.model_path.parent == tiny_tagger.model_dir == tiny_tagger.tags_csv.parent
    assert not isinstance(inp.shape[0], int)  # dynamic batch
    assert inp.shape[1:] == [size, size, 3]
    assert inp.type == "tensor(float)"
    assert out.shape[1] == len(_csv_rows(tiny_tagger)) == len(tiny_tagger.tags)


def test_model_agrees_with_numpy_reference(tiny_tagger: TinyTagger, session: ort.InferenceSession) -> None:
    size = tiny_tagger.input_size
    noise = np.random.default_rng(3).integers(0, 256, (size, size, 3)).astype(np.float32)
    batch = _bgr_batch(_solid(RED, size), _texture(1, size), noise)
    got = _run(session, batch)
    want = reference_scores(batch)
    assert got.shape == want.shape == (3, len(tiny_tagger.tags))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.all((got >= 0) & (got <= 1)) and np.ptp(got, axis=0).max() > 0.5  # rows really differ


def test_channel_order_changes_scores(tiny_tagger: TinyTagger, session: ort.InferenceSession) -> None:
    size = tiny_tagger.input_size
    right = _scores(session, tiny_tagger, _bgr_batch(_solid(RED, size)))
    # Feeding RGB as if it were BGR: the model sees a blue image.
    wrong = _scores(session, tiny_tagger, np.stack([_solid(RED, size)]))
    assert right["red_background"] > CHARACTER_THRESHOLD and right["blue_background"] < GENERAL_THRESHOLD
    assert wrong["blue_background"] > CHARACTER_THRESHOLD and wrong["red_background"] < GENERAL_THRESHOLD
    textured = _texture(5, size)
    delta = _run(session, _bgr_batch(textured)) - _run(session, np.stack([textured]))
    assert np.abs(delta).max() > 0.01


@pytest.mark.parametrize("pad_axis", [0, 1], ids=["wide", "tall"])
def test_padding_colour_changes_scores(tiny_tagger: TinyTagger, session: ort.InferenceSession, pad_axis: int) -> None:
    size = tiny_tagger.input_size
    content = _solid(RED, size)
    quarter = size // 4
    padded = {}
    for name, colour in (("white", WHITE), ("black", BLACK)):
        img = content.copy()
        strips = [slice(0, quarter), slice(size - quarter, size)]
        for strip in strips:  # centred 2:1 content, padding on both sides
            if pad_axis == 0:
                img[strip] = colour
            else:
                img[:, strip] = colour
        padded[name] = _scores(session, tiny_tagger, _bgr_batch(img))
    assert padded["white"]["white_background"] > GENERAL_THRESHOLD
    assert padded["black"]["white_background"] < GENERAL_THRESHOLD
    assert padded["white"]["white_background"] - padded["black"]["white_background"] > 0.3


def test_spatial_layout_changes_scores(tiny_tagger: TinyTagger, session: ort.InferenceSession) -> None:
    size = tiny_tagger.input_size
    upright = _scores(session, tiny_tagger, _bgr_batch(_halves(RED, WHITE, size)))
    flipped = _scores(session, tiny_tagger, _bgr_batch(_halves(WHITE, RED, size)))
    assert upright["hakurei_reimu"] > CHARACTER_THRESHOLD
    assert flipped["hakurei_reimu"] < GENERAL_THRESHOLD


FIRING = [
    ("red", lambda s: _solid(RED, s), "red_background", GENERAL_THRESHOLD),
    ("blue", lambda s: _solid(BLUE, s), "blue_background", GENERAL_THRESHOLD),
    ("green", lambda s: _solid(GREEN, s), "long_hair", GENERAL_THRESHOLD),
    ("yellow", lambda s: _solid((255, 255, 0), s), "^_^", GENERAL_THRESHOLD),
    ("cyan", lambda s: _solid((0, 255, 255), s), "hatsune_miku", CHARACTER_THRESHOLD),
    ("red_over_white", lambda s: _halves(RED, WHITE, s), "hakurei_reimu", CHARACTER_THRESHOLD),
    ("blue_over_green", lambda s: _halves(BLUE, GREEN, s), "sky", GENERAL_THRESHOLD),
    ("white", lambda s: _solid(WHITE, s), "white_background", GENERAL_THRESHOLD),
]


@pytest.mark.parametrize(("make", "tag", "threshold"), [f[1:] for f in FIRING], ids=[f[0] for f in FIRING])
def test_documented_examples_fire(tiny_tagger: TinyTagger, session: ort.InferenceSession, make, tag: str,
                                  threshold: float) -> None:
    scores = _scores(session, tiny_tagger, _bgr_batch(make(tiny_tagger.input_size)))
    assert scores[tag] > threshold
    # Only the wired character may pass the character threshold on these inputs.
    characters = {n for n, c in tiny_tagger.tags if c == 4}
    assert {n for n in characters if scores[n] > CHARACTER_THRESHOLD} <= {tag}


@pytest.mark.parametrize(("colour", "rating"), [(WHITE, "general"), (BLACK, "sensitive")])
def test_rating_argmax_follows_brightness(tiny_tagger: TinyTagger, session: ort.InferenceSession, colour,
                                          rating: str) -> None:
    out = _run(session, _bgr_batch(_solid(colour, tiny_tagger.input_size)))[0]
    ratings = [n for n, c in tiny_tagger.tags if c == 9]
    assert ratings[int(np.argmax(out[: len(ratings)]))] == rating


def test_typical_images_straddle_the_general_threshold(tiny_tagger: TinyTagger,
                                                       session: ort.InferenceSession) -> None:
    size = tiny_tagger.input_size
    out = _run(session, _bgr_batch(*(_texture(seed, size) for seed in range(4))))
    general = [i for i, (_, c) in enumerate(tiny_tagger.tags) if c == 0]
    for row in out:
        above = int((row[general] > GENERAL_THRESHOLD).sum())
        assert 0 < above < len(general)


# ---------------------------------------------------------------- tagger: CSV and build

def test_csv_has_standard_layout(tiny_tagger: TinyTagger) -> None:
    first_line = tiny_tagger.tags_csv.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "tag_id,name,category,count"
    rows = _csv_rows(tiny_tagger)
    categories = [int(r["category"]) for r in rows]
    runs = [c for i, c in enumerate(categories) if i == 0 or categories[i - 1] != c]
    assert runs == [9, 0, 4]
    assert [r["name"] for r in rows[:4]] == ["general", "sensitive", "questionable", "explicit"]
    names = [r["name"] for r in rows]
    assert "^_^" in names and "long_hair" in names and "hatsune_miku" in names
    assert tuple((r["name"], int(r["category"])) for r in rows) == tiny_tagger.tags
    assert all(r["tag_id"].isdigit() and r["count"].isdigit() for r in rows)


def test_tagger_build_is_idempotent_and_deterministic(tiny_tagger: TinyTagger, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (tiny_tagger.model_path, tiny_tagger.tags_csv)}
    again = build_tagger(tiny_tagger.model_dir)
    assert again == tiny_tagger
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten
    fresh = build_tagger(tmp_path / "other")
    assert fresh.model_path.read_bytes() == tiny_tagger.model_path.read_bytes()
    assert fresh.tags_csv.read_bytes() == tiny_tagger.tags_csv.read_bytes()


def test_tagger_rebuilds_after_stale_stamp(tmp_path: Path) -> None:
    built = build_tagger(tmp_path / "t")
    good = built.model_path.read_bytes()
    built.model_path.write_bytes(b"half a model")
    (built.model_dir / ".fixture_version").write_text("old\n", encoding="utf-8")
    assert build_tagger(tmp_path / "t").model_path.read_bytes() == good


# ---------------------------------------------------------------- image set helpers

def _reference_rgb(path: Path) -> Image.Image:
    """What a correct loader does: EXIF rotation, 16-bit scaling, alpha composited on white, RGB."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            im = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), "L")
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if has_alpha:
            rgba = im.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")
        return im.convert("RGB")


def _centre(im: Image.Image) -> tuple[int, int, int]:
    return im.getpixel((im.width // 2, im.height // 2))


def _lossy(path: Path) -> bool:
    """JPEG (and, conservatively, any WebP) may drift by a few levels; PNG and BMP must be exact."""
    return path.suffix.lower() in (".jpg", ".jpeg", ".webp")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- image set

def test_layout_is_sd_scripts_n_name(image_set_template: ImageSet) -> None:
    s = image_set_template
    assert len(s.subsets) >= 2
    assert {p.name for p in s.subsets} == {"10_ohwx woman", "3_style"}
    for subset in s.subsets:
        assert subset.parent == s.root and subset.is_dir()
        assert re.fullmatch(r"\d+_.+", subset.name)
    assert all(p.parent in s.subsets for p in s.good + s.broken + s.orphan_captions)
    # Several aspect ratios, so buckets differ.
    ratios = {round(w / h, 2) for w, h in s.expected_size.values()}
    assert len(ratios) >= 5 and min(ratios) < 0.8 and max(ratios) > 1.5


def test_good_images_decode(image_set_template: ImageSet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    s = image_set_template
    modes = set()
    for path in s.good:
        with Image.open(path) as im:
            im.load()
            assert im.width >= 64 and im.height >= 64
            modes.add(im.mode)
            assert ImageOps.exif_transpose(im).size == s.expected_size[path]
    assert {"CMYK", "I;16", "P", "RGBA", "LA", "RGB"} <= modes
    assert {p.suffix for p in s.good} >= {".png", ".PNG", ".jpg", ".JPG", ".jpeg", ".webp", ".WEBP", ".bmp"}


def test_broken_files_fail_to_decode(image_set_template: ImageSet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    s = image_set_template
    assert len(s.broken) == 4
    assert any(p.stat().st_size == 0 for p in s.broken)
    for path in s.broken:
        assert path.suffix.lower() in (".png", ".jpg")
        with pytest.raises(OSError):  # UnidentifiedImageError is an OSError too
            with Image.open(path) as im:
                im.load()


def test_expected_rgb_holds_for_a_correct_conversion(image_set_template: ImageSet) -> None:
    s = image_set_template
    assert len(s.expected_rgb) >= 8
    for path, want in s.expected_rgb.items():
        got = _centre(_reference_rgb(path))
        slack = s.rgb_tolerance if _lossy(path) else 0
        assert max(abs(a - b) for a, b in zip(got, want)) <= slack, (path.name, got, want)


def test_naive_conversion_gets_the_odd_modes_wrong(image_set_template: ImageSet) -> None:
    """The fixture must catch a loader that just calls convert("RGB"): those pixels differ."""
    s = image_set_template
    by_name = {p.name: p for p in s.expected_rgb}
    for name in ("gray16.png", "palette_alpha.png", "rgba_hole.PNG", "la_alpha.png", "style_a.WEBP"):
        with Image.open(by_name[name]) as im:
            naive = _centre(im.convert("RGB"))
        assert naive != s.expected_rgb[by_name[name]], name
    with Image.open(by_name["exif_rot6.jpg"]) as im:
        assert im.size[::-1] == s.expected_size[by_name["exif_rot6.jpg"]]  # unrotated is landscape


def test_odd_names_exist_on_disk(image_set_template: ImageSet) -> None:
    s = image_set_template
    on_disk = {name for subset in s.subsets for name in os.listdir(subset)}
    assert {"tall_crlf.JPG", "rgba_hole.PNG", "style_a.WEBP", "style_d.Jpeg", "猫_café.png", "notes.md"} <= on_disk
    assert any(not name.isascii() for name in on_disk)
    assert {p.name for p in s.non_images} == {"notes.md"}


def test_captions_decode_to_expected_text(image_set_template: ImageSet) -> None:
    s = image_set_template
    raw = {p.name: s.caption_files[p].read_bytes() for p in s.captions}
    assert raw["wide_bom.jpg"].startswith(b"\xef\xbb\xbf") and b"\r" not in raw["wide_bom.jpg"]
    assert b"\r\n" in raw["tall_crlf.JPG"] and not raw["tall_crlf.JPG"].startswith(b"\xef\xbb\xbf")
    assert raw["bom_crlf.jpeg"].startswith(b"\xef\xbb\xbf") and b"\r\n" in raw["bom_crlf.jpeg"]
    for image, text in s.captions.items():
        caption_file = s.caption_files[image]
        assert caption_file == image.with_suffix(".txt")
        decoded = caption_file.read_bytes().decode("utf-8-sig").replace("\r\n", "\n").strip()
        assert decoded == text and "\ufeff" not in text
    assert set(s.captions) | set(s.uncaptioned) == set(s.good)
    assert len(s.uncaptioned) >= 1
    for image in s.uncaptioned:
        assert not image.with_suffix(".txt").exists()
    for orphan in s.orphan_captions:
        assert orphan.is_file() and not [p for p in orphan.parent.iterdir() if p.stem == orphan.stem and p != orphan]


def test_duplicates_are_marked(image_set_template: ImageSet) -> None:
    s = image_set_template
    ((original, copy),) = s.duplicates
    assert original != copy and original.read_bytes() == copy.read_bytes()
    ((source, near),) = s.near_duplicates
    assert source.read_bytes() != near.read_bytes()

    def small(p: Path) -> np.ndarray:
        return np.asarray(_reference_rgb(p).resize((32, 32), Image.Resampling.BOX), dtype=np.float64)

    near_gap = np.abs(small(source) - small(near)).mean()
    others = [p for p in s.good if p not in (original, copy, near)]
    other_gaps = [np.abs(small(source) - small(p)).mean() for p in others]
    assert near_gap < 4 and min(other_gaps) > 4 * near_gap


def test_image_set_builds_byte_identical(image_set_template: ImageSet, tmp_path: Path) -> None:
    other = build_image_set(tmp_path / "again")
    first, second = _tree(image_set_template.root), _tree(other.root)
    assert first.keys() == second.keys()
    assert first == second


def test_image_set_rebuilds_cleanly_in_place(image_set: ImageSet) -> None:
    pristine = _tree(image_set.root)
    image_set.good[0].write_bytes(b"changed by a test")
    (image_set.subsets[0] / "added.png").write_bytes(b"junk")
    image_set.caption_files[image_set.good[1]].unlink()
    rebuilt = build_image_set(image_set.root)
    assert _tree(rebuilt.root) == pristine
    assert rebuilt.good == image_set.good


def test_image_set_refuses_to_wipe_a_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "my_photos"
    foreign.mkdir()
    (foreign / "keep.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        build_image_set(foreign)
    assert (foreign / "keep.jpg").read_bytes() == b"precious"
