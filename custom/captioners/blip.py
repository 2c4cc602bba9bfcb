"""BLIP captions through transformers (``BlipForConditionalGeneration`` + ``BlipProcessor``).

The model comes from the Hugging Face Hub (cached under ``HF_HOME``, downloaded once) or from a
local folder. Generation is deterministic: beam search (``num_beams``; 1 is greedy), no sampling,
with the caption length bounded by ``min_length`` and ``max_length`` (in tokens).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from custom.errors import CustomError

DEFAULT_BLIP = "Salesforce/blip-image-captioning-large"


@dataclass(frozen=True)
class BlipSettings:
    """Which BLIP model and how it generates."""

    model: str = DEFAULT_BLIP  # Hub repo id or local folder
    num_beams: int = 3
    min_length: int = 5
    max_length: int = 75
    device: str | None = None  # None: CUDA when available, else CPU

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise CustomError(f"--num_beams {self.num_beams} must be 1 or more.", option="--num_beams")
        if not 0 <= self.min_length <= self.max_length:
            raise CustomError(f"--min_length {self.min_length} and --max_length {self.max_length} must satisfy "
                              "0 <= min <= max.", hint="For example --min_length 5 --max_length 75.",
                              option="--min_length")


class BlipCaptioner:
    """A :class:`custom.captioners.base.Captioner` running BLIP."""

    def __init__(self, settings: BlipSettings = BlipSettings()) -> None:
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.settings = settings
        self.name = settings.model
        self.device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        # Half precision only where it is fast and safe: on the GPU.
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        local = Path(settings.model).expanduser()
        looks_local = settings.model.startswith(("/", ".", "~")) or settings.model.count("/") > 1
        if looks_local and not local.is_dir():
            raise CustomError(f"BLIP model folder {local} does not exist.",
                              hint=f"Give a folder saved with save_pretrained, or a Hub repo id such as {DEFAULT_BLIP}.",
                              option="--model")
        source = str(local) if local.is_dir() else settings.model
        try:
            self.processor = BlipProcessor.from_pretrained(source)
            self.model = BlipForConditionalGeneration.from_pretrained(source, dtype=self.dtype)
        except (OSError, ValueError) as problem:  # missing files / bad repo ids (huggingface_hub's are ValueErrors)
            raise CustomError(
                f"Cannot load the BLIP model {settings.model!r}: {' '.join(str(problem).split())[:200]}",
                hint=f"Give a Hub repo id such as {DEFAULT_BLIP} (needs the internet once) or a local folder "
                     "saved with save_pretrained; offline mode (HF_HUB_OFFLINE) only finds models already cached.",
                option="--model") from problem
        self.model.to(self.device).eval()

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Captions for a batch of RGB images, in order."""
        import torch

        if not images:
            return []
        inputs = self.processor(images=list(images), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            tokens = self.model.generate(
                pixel_values=pixels, num_beams=self.settings.num_beams, do_sample=False,
                min_length=self.settings.min_length, max_length=self.settings.max_length,
            )
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]
