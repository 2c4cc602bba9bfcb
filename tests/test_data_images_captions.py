"""Image decoding (odd modes, broken files) and captions: reading them and sd-scripts' augmentations."""
from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from trainer.data.blueprint import SubsetSpec
from trainer.data.captions import caption_path, process_caption, read_caption, read_caption_file, tags_of
from trainer.data.images import is_image_file, load_image_rgb, try_load_image_rgb
from trainer.errors import TrainerError

RULES = SubsetSpec(image_dir="unused")


def centre(image: Image.Image) -> tuple[int, int, int]:
    return image.getpixel((image.width // 2, image.height // 2))


def test_every_good_image_decodes_to_upright_rgb(image_set_template) -> None:
    for path in image_set_template.good:
        image = load_image_rgb(path)
        assert image.mode == "RGB", path.name
        assert image.size == image_set_template.expected_size[path], path.name  # exif_rot6.jpg: 96x160


def test_odd_modes_give_the_colour_a_viewer_shows(image_set_template) -> None:
    tolerance = image_set_template.rgb_tolerance
    assert len(image_set_template.expected_rgb) >= 8
    for path, expected in image_set_template.expected_rgb.items():
        got = centre(load_image_rgb(path))
        assert all(abs(g - e) <= tolerance for g, e in zip(got, expected)), (path.name, got, expected)


def test_sixteen_bit_is_scaled_not_clipped(image_set_template) -> None:
    path = next(p for p in image_set_template.good if p.name == "gray16.png")
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    assert centre(load_image_rgb(path)) == (150, 150, 150)  # 38550 / 257; a clipping convert gives 255


def test_alpha_is_composited_on_white_exactly(image_set_template) -> None:
    by_name = {p.name: p for p in image_set_template.good}
    assert centre(load_image_rgb(by_name["la_alpha.png"])) == (204, 204, 204)  # black at 20% over white
    assert centre(load_image_rgb(by_name["rgba_hole.PNG"])) == (255, 255, 255)  # hidden RGB is dark blue
    assert centre(load_image_rgb(by_name["palette_alpha.png"])) == (255, 255, 255)


def test_broken_files_raise_a_trainer_error_naming_the_file(image_set_template) -> None:
    assert len(image_set_template.broken) == 4
    for path in image_set_template.broken:
        with pytest.raises(TrainerError) as caught:
            load_image_rgb(path)
        assert str(path) in str(caught.value)
        assert caught.value.hint
        image, reason = try_load_image_rgb(path)
        assert image is None and reason and str(path) not in reason and len(reason) <= 120
    empty = next(p for p in image_set_template.broken if p.name == "empty.png")
    assert "empty" in try_load_image_rgb(empty)[1]
    truncated = next(p for p in image_set_template.broken if p.name == "truncated.jpg")
    assert "truncated" in try_load_image_rgb(truncated)[1]


def test_decompression_bomb_guard_is_an_error_not_a_warning(image_set_template) -> None:
    path = next(p for p in image_set_template.good if p.name == "plain_rgb.png")  # 128x128
    with pytest.raises(TrainerError) as caught:
        load_image_rgb(path, max_pixels=128 * 128 - 1)
    assert "decompression-bomb" in str(caught.value) and str(path) in str(caught.value)
    assert load_image_rgb(path, max_pixels=128 * 128).size == (128, 128)


def test_missing_file_is_a_trainer_error(tmp_path: Path) -> None:
    with pytest.raises(TrainerError) as caught:
        load_image_rgb(tmp_path / "gone.png")
    assert "gone.png" in str(caught.value)


@pytest.mark.parametrize(("name", "expected"), [
    ("a.png", True), ("a.PNG", True), ("a.Jpeg", True), ("a.jpg", True), ("a.webp", True), ("a.BMP", True),
    ("a.txt", False), ("a.md", False), ("a.gif", False), ("png", False), ("a.png.txt", False),
])
def test_is_image_file_by_extension_any_case(name: str, expected: bool) -> None:
    assert is_image_file(Path(name)) is expected


# --- reading captions -------------------------------------------------------------------------

def test_fixture_captions_read_right_with_bom_and_crlf(image_set_template) -> None:
    for image, expected in image_set_template.captions.items():
        assert read_caption(image, ".txt") == expected, image.name
    for image in image_set_template.uncaptioned:
        assert read_caption(image, ".txt") is None
    bom_crlf = next(p for p in image_set_template.good if p.name == "bom_crlf.jpeg")
    assert read_caption(bom_crlf, ".txt") == "ohwx woman, café, 猫"
    assert read_caption(bom_crlf, "txt") == "ohwx woman, café, 猫"  # a missing dot is added


def test_caption_path_replaces_the_extension() -> None:
    assert caption_path(Path("/d/img.PNG"), ".caption") == Path("/d/img.caption")
    assert caption_path(Path("/d/a.b.jpg"), ".txt") == Path("/d/a.b.txt")


def test_first_non_empty_line_is_the_caption_and_extra_lines_are_counted(tmp_path: Path) -> None:
    image = tmp_path / "img.png"
    (tmp_path / "img.txt").write_bytes(b"\r\n   \r\nfirst, tag \r\nsecond\r\n\r\nthird\r\n")
    found = read_caption_file(image, ".txt")
    assert found is not None and (found.text, found.ignored_lines) == ("first, tag", 2)
    (tmp_path / "img.txt").write_bytes(b"\xef\xbb\xbf  \n")
    found = read_caption_file(image, ".txt")
    assert found is not None and (found.text, found.ignored_lines) == ("", 0)
    assert read_caption(image, ".txt") == ""


def test_non_utf8_caption_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "img.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(TrainerError) as caught:
        read_caption(tmp_path / "img.png", ".txt")
    assert str(tmp_path / "img.txt") in str(caught.value) and "UTF-8" in caught.value.hint


# --- process_caption ----------------------------------------------------------------------------

def test_no_augmentation_leaves_the_caption_as_written() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    assert process_caption("a,b ,  c", RULES, rng, 1) == "a,b ,  c"
    assert rng.getstate() == state  # nothing drawn when nothing is random


def test_prefix_and_suffix_are_joined_with_a_space() -> None:
    rules = replace(RULES, caption_prefix="ohwx", caption_suffix="masterpiece")
    assert process_caption("red dress, smiling", rules, random.Random(0), 1) == "ohwx red dress, smiling masterpiece"


def test_caption_dropout_rates_zero_and_one() -> None:
    always = replace(RULES, caption_dropout_rate=1.0)
    never = replace(RULES, caption_dropout_rate=0.0)
    assert all(process_caption("a, b", always, random.Random(seed), 1) == "" for seed in range(20))
    assert all(process_caption("a, b", never, random.Random(seed), 1) == "a, b" for seed in range(20))


def test_caption_dropout_rate_half_drops_about_half() -> None:
    rules = replace(RULES, caption_dropout_rate=0.5)
    rng = random.Random(3)
    dropped = sum(process_caption("a, b", rules, rng, 1) == "" for _ in range(1000))
    assert 420 < dropped < 580


def test_dropout_every_n_epochs_uses_one_based_epochs() -> None:
    rules = replace(RULES, caption_dropout_every_n_epochs=2)
    got = [process_caption("a, b", rules, random.Random(0), epoch) for epoch in (1, 2, 3, 4)]
    assert got == ["a, b", "", "a, b", ""]


def test_keep_tokens_pins_the_first_tags_while_shuffling() -> None:
    rules = replace(RULES, shuffle_caption=True, keep_tokens=2)
    caption = "ohwx, woman, red, green, blue, yellow, white"
    orders = set()
    for seed in range(30):
        out = process_caption(caption, rules, random.Random(seed), 1).split(", ")
        assert out[:2] == ["ohwx", "woman"]
        assert sorted(out[2:]) == sorted(["red", "green", "blue", "yellow", "white"])
        orders.add(tuple(out))
    assert len(orders) > 10


def test_shuffle_is_deterministic_given_the_rng_and_uses_it_like_sd_scripts() -> None:
    rules = replace(RULES, shuffle_caption=True, keep_tokens=1)
    caption = "ohwx,  a, b,c, d, e"
    first = process_caption(caption, rules, random.Random(42), 1)
    assert first == process_caption(caption, rules, random.Random(42), 1)
    flexible = ["a", "b", "c", "d", "e"]
    random.Random(42).shuffle(flexible)  # one shuffle of the non-kept tags, nothing drawn before it
    assert first == ", ".join(["ohwx"] + flexible)


def test_keep_tokens_separator_fixes_the_head_and_the_marker_is_removed() -> None:
    rules = replace(RULES, keep_tokens_separator="|||")
    caption = "ohwx, 1girl ||| red, blue, green"
    assert process_caption(caption, rules, random.Random(0), 1) == "ohwx, 1girl, red, blue, green"
    shuffled = replace(rules, shuffle_caption=True, keep_tokens=5)  # the separator wins over keep_tokens
    for seed in range(20):
        out = process_caption(caption, shuffled, random.Random(seed), 1)
        assert out.startswith("ohwx, 1girl, ") and "|||" not in out
        assert sorted(out.split(", ")[2:]) == ["blue", "green", "red"]


def test_second_separator_pins_a_tail() -> None:
    rules = replace(RULES, keep_tokens_separator="|||", shuffle_caption=True)
    for seed in range(20):
        out = process_caption("ohwx ||| a, b, c, d ||| best quality, 4k", rules, random.Random(seed), 1)
        assert out.startswith("ohwx, ") and out.endswith(", best quality, 4k")


def test_tag_dropout_keeps_fixed_tags_only_at_rate_one() -> None:
    rules = replace(RULES, caption_tag_dropout_rate=1.0, keep_tokens=1)
    assert process_caption("ohwx, a, b, c", rules, random.Random(0), 1) == "ohwx"
    rules = replace(RULES, caption_tag_dropout_rate=0.0, keep_tokens=1)
    assert process_caption("ohwx, a, b, c", rules, random.Random(0), 1) == "ohwx, a, b, c"
    rules = replace(RULES, caption_tag_dropout_rate=0.5)
    kept = [len(process_caption("a, b, c, d", rules, random.Random(seed), 1).split(", ")) for seed in range(200)]
    assert 1.6 < sum(kept) / len(kept) < 2.4


def test_prefix_joins_the_first_tag_as_in_sd_scripts() -> None:
    # sd-scripts adds the prefix before splitting, so with keep_tokens=1 "ohwx a" is the kept tag.
    rules = replace(RULES, caption_prefix="ohwx", keep_tokens=1, shuffle_caption=True)
    for seed in range(10):
        assert process_caption("a, b, c", rules, random.Random(seed), 1).startswith("ohwx a, ")


def test_tags_of_counts_like_ss_tag_frequency() -> None:
    assert tags_of("Red Dress, smiling,, red dress ", RULES) == ["red dress", "smiling", "red dress"]
    assert tags_of("ohwx ||| a, b", replace(RULES, keep_tokens_separator="|||")) == ["ohwx", "a", "b"]
