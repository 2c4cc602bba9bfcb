"""BLIP captions on a tiny random BLIP built offline here, and the shared captioning loop."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from custom.captioners import CaptionRunOptions, Captioner, ExistingPolicy, caption_folder
from custom.captioners.__main__ import main
from custom.errors import CustomError
from tests.fixtures.images import ImageSet

WORDS = ("a an the cat dog girl sits stands on red blue green white sky tree house with of in photo picture small "
         "big smiling dress beach").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight BLIP with a WordPiece vocabulary written here; 32 px images, one layer each side."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers import BlipImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny_blip")
    vocab = SPECIAL + WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True, bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    ids = {token: index for index, token in enumerate(vocab)}
    config = BlipConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 37, "max_position_embeddings": 64, "bos_token_id": ids["[DEC]"],
                     "pad_token_id": ids["[PAD]"], "sep_token_id": ids["[SEP]"], "eos_token_id": ids["[SEP]"]},
        vision_config={"hidden_size": 32, "image_size": 32, "patch_size": 8, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 37},
        projection_dim=32,
    )
    torch.manual_seed(1234)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def blip(tiny_blip: Path):
    from custom.captioners.blip import BlipCaptioner, BlipSettings

    return BlipCaptioner(BlipSettings(model=str(tiny_blip), num_beams=3, min_length=4, max_length=10, device="cpu"))


def _quiet(_: str) -> None:
    pass


def test_blip_captions_good_images_and_names_broken_ones(blip, image_set: ImageSet) -> None:
    before = {path: path.read_bytes() for path in image_set.caption_files.values()}
    options = CaptionRunOptions(directory=image_set.root, caption_extension="blip", recursive=True, batch_size=4)
    report = caption_folder(blip, options, log=_quiet)
    assert sorted(report.written) == sorted(image_set.good) and not report.empty
    assert sorted(path for path, _ in report.broken) == sorted(image_set.broken)
    first = {path: path.with_suffix(".blip").read_bytes() for path in image_set.good}
    for path, data in first.items():
        words = data.decode("utf-8").split()
        assert words and set(words) <= set(WORDS), path  # only vocabulary words, special tokens removed
        assert len(words) <= 10
    assert not any(path.with_suffix(".blip").exists() for path in image_set.broken)
    assert {path: path.read_bytes() for path in image_set.caption_files.values()} == before
    # Deterministic: a second run (overwriting) writes the same bytes.
    again = caption_folder(blip, CaptionRunOptions(directory=image_set.root, caption_extension=".blip",
                                                   recursive=True, batch_size=4, existing=ExistingPolicy.OVERWRITE),
                           log=_quiet)
    assert {path: path.with_suffix(".blip").read_bytes() for path in again.written} == first


def test_existing_captions_skip_append_overwrite(blip, tmp_path: Path) -> None:
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "a.png")
    caption = tmp_path / "a.txt"
    caption.write_bytes(b"my trigger, red\r\n")
    report = caption_folder(blip, CaptionRunOptions(directory=tmp_path), log=_quiet)
    assert caption.read_bytes() == b"my trigger, red\r\n" and report.kept_existing == [tmp_path / "a.png"]
    report = caption_folder(blip, CaptionRunOptions(directory=tmp_path, existing=ExistingPolicy.APPEND), log=_quiet)
    sentence = report.written[tmp_path / "a.png"]
    assert caption.read_text(encoding="utf-8") == f"my trigger, red, {sentence}"
    caption_folder(blip, CaptionRunOptions(directory=tmp_path, existing=ExistingPolicy.OVERWRITE), log=_quiet)
    assert caption.read_text(encoding="utf-8") == sentence


class SizeCaptioner:
    """A second captioner in a few lines: what adding Florence-2 or JoyCaption looks like."""

    name = "size"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        self.batches.append(len(images))
        return [f"an image of {image.width} by {image.height} pixels" for image in images]


def test_protocol_lets_another_captioner_plug_in(image_set: ImageSet) -> None:
    sizer = SizeCaptioner()
    assert isinstance(sizer, Captioner)
    report = caption_folder(sizer, CaptionRunOptions(directory=image_set.root, caption_extension=".size",
                                                     recursive=True, batch_size=5, workers=2), log=_quiet)
    assert sum(sizer.batches) == len(image_set.good) and max(sizer.batches) == 5
    for path, (width, height) in image_set.expected_size.items():
        # Each caption belongs to its own image (EXIF rotation applied): batches never mix them up.
        assert path.with_suffix(".size").read_text(encoding="utf-8") == f"an image of {width} by {height} pixels"
    assert len(report.written) == len(image_set.good)


def test_cli_captions_and_reports_errors(tiny_blip: Path, image_set: ImageSet,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    subset = image_set.subsets[0]
    code = main([str(subset), "--model", str(tiny_blip), "--num_beams", "2", "--max_length", "8",
                 "--batch_size", "3", "--caption_extension", ".cap", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err
    for broken in image_set.broken:
        assert str(broken) in out and not broken.with_suffix(".cap").exists()
    assert all(path.with_suffix(".cap").read_text(encoding="utf-8") for path in image_set.good if path.parent == subset)
    assert main([str(subset), "--model", str(subset / "no_such_model"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "no_such_model" in err and "What to do" in err and "Traceback" not in err
    # A Hub model that is not cached, in an offline session: a message, not a traceback.
    assert main([str(subset), "--model", "Salesforce/blip-image-captioning-large", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "Salesforce/blip-image-captioning-large" in err and "offline" in err and "Traceback" not in err
    assert main([str(subset), "--model", str(tiny_blip), "--min_length", "9", "--max_length", "4"]) == 1
    assert "--min_length" in capsys.readouterr().err
    with pytest.raises(CustomError):
        main([str(subset / "missing"), "--model", str(tiny_blip), "--debug"])
