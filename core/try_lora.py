""""Try it": draw the same prompt and seed with a LoRA at several strengths, side by side.

The base model (diffusers folder or single file) is loaded once with the trainer's loader and
kept by a :class:`LoraTryout`, so trying another LoRA or prompt on the same base is quick. For
each strength the LoRA's deltas are added to the layers' weights (the trainer's
``merge_into_model``, in float64, as the merge tool does) and the original weights are put back
before the next strength, so strength 0 draws exactly what the base model draws. Prompts are
encoded and images drawn by the trainer's own sampling code (the family adapter's encoding,
``build_pipeline``, ``make_scheduler``), so a strength-1 image shows what training samples showed.

Plain LoRA and LoCon files only (the kinds the merge tool handles); others raise a CoreError.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import CoreError

DEFAULT_STRENGTHS = (0.0, 0.5, 1.0)
# Beyond +-2 a LoRA only burns the picture; a typo like "10" for "1.0" is far likelier than intent.
STRENGTH_RANGE = (-2.0, 2.0)


def parse_strengths(text: str, default: Sequence[float] = ()) -> tuple[float, ...]:
    """Strengths typed as "0, 0.5, 1" (commas and/or spaces); ``default`` when the text is empty.

    Raises CoreError naming the bad entry when one is not a number or lies outside ``STRENGTH_RANGE``.
    """
    low, high = STRENGTH_RANGE
    values = []
    for entry in str(text or "").replace(",", " ").split():
        try:
            value = float(entry)
        except ValueError:
            raise CoreError(f"Strength {entry!r} in {text!r} is not a number.",
                            "Write numbers separated by commas, e.g. 0, 0.5, 1.") from None
        if not low <= value <= high:  # also refuses nan and inf
            raise CoreError(f"Strength {entry} in {text!r} is outside {low:g} to {high:g}.",
                            "Use strengths between -2 and 2; 1 is the LoRA as trained, 0 is without it.")
        values.append(value)
    return tuple(values) if values else tuple(float(v) for v in default)


def default_prompt(trigger_words: Sequence[str], typed: str = "", lora_name: str = "the LoRA") -> str:
    """The prompt to draw: what the user typed, else the LoRA's trigger words joined by commas.

    Raises CoreError when both are empty, since a blank prompt shows nothing about the LoRA.
    """
    if typed.strip():
        return typed.strip()
    words = [word.strip() for word in trigger_words if word.strip()]
    if not words:
        raise CoreError(f"The prompt is empty and {lora_name} records no trigger words.",
                        "Write a prompt describing what the LoRA was trained on.")
    return ", ".join(words)


def prompt_for_lora(typed: str, lora: str | Path) -> str:
    """``default_prompt`` with the trigger words read from the LoRA file (only when nothing was typed)."""
    if typed.strip():
        return typed.strip()
    from core.utilities_manager import inspect_lora

    return default_prompt(inspect_lora(lora).trigger_words, typed, Path(str(lora).strip()).name or "the LoRA")


@dataclass(frozen=True)
class TryoutSettings:
    """How to draw: the same for every strength."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 42
    steps: int = 20
    guidance_scale: float = 7.0
    sampler: str = "euler_a"
    width: int | None = None  # None: the family's size (512 SD1/SD2, 1024 SDXL)
    height: int | None = None
    clip_skip: int | None = None


@dataclass
class TryoutResult:
    """One image per strength (same order) and the labelled side-by-side grid."""

    strengths: list[float]
    images: list[Any]  # PIL images
    grid: Any  # PIL image, len(strengths) * width wide
    settings: TryoutSettings
    lora: Path
    warnings: list[str] = field(default_factory=list)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _lora_is_v_pred(lora: Path) -> bool:
    from trainer.saving.lora_file import read_lora_file

    try:
        _, metadata = read_lora_file(lora)
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the merge step with its name
        return False
    return metadata.get("modelspec.prediction_type") == "v" or metadata.get("ss_v_parameterization") == "True"


class LoraTryout:
    """A base model loaded once, to draw LoRAs on at several strengths."""

    def __init__(self, base_model: str | Path, *, model_config: str | None = None, device: str | None = None,
                 v_parameterization: bool | None = None) -> None:
        self.base_model = str(base_model)
        self.model_config = model_config
        self.device = device or _default_device()
        self.v_parameterization = v_parameterization
        self._model: Any = None

    @property
    def key(self) -> tuple[str, str | None, str]:
        """What identifies the loaded model (the panel reuses a tryout while this stays the same)."""
        return (self.base_model, self.model_config, self.device)

    def _load(self, v_pred: bool) -> Any:
        import torch

        from trainer.errors import TrainerError
        from trainer.models.loader import ModelSpec, load_model

        if self._model is not None and self._model.v_parameterization == v_pred:
            return self._model
        if not self.base_model.strip():
            raise CoreError("No base model chosen for 'try it'.", "Pick the base model the LoRA was trained on.")
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        spec = ModelSpec(pretrained_model_name_or_path=self.base_model, model_config=self.model_config,
                         v_parameterization=v_pred)
        try:
            self._model = load_model(spec, device=self.device, dtype=dtype)
        except TrainerError as error:
            raise CoreError(error.message, error.hint) from None
        return self._model

    def run(self, lora: str | Path, settings: TryoutSettings, strengths: Sequence[float] = DEFAULT_STRENGTHS,
            on_image: Callable[[int, float], None] | None = None) -> TryoutResult:
        """Draw ``settings`` once per strength; ``on_image(index, strength)`` after each image."""
        from trainer.errors import TrainerError
        from trainer.tools.merge_lora import merge_into_model

        lora_path = Path(str(lora).strip()).expanduser()
        if not lora_path.is_file():
            raise CoreError(f"The LoRA file {lora_path} does not exist.", "Pick the LoRA file again.")
        if not settings.prompt.strip():
            raise CoreError("The prompt is empty.", "Write a prompt, usually starting with the trigger words.")
        values = [float(s) for s in strengths]
        if not values or len(values) > 8:
            raise CoreError(f"{len(values)} strengths given.", "Give between 1 and 8 strengths, e.g. 0, 0.5, 1.")
        v_pred = self.v_parameterization if self.v_parameterization is not None else _lora_is_v_pred(lora_path)
        model = self._load(v_pred)
        originals = _layer_weights(model)
        images = []
        try:
            for index, strength in enumerate(values):
                _restore(originals)
                if strength != 0.0:
                    try:
                        merge_into_model(model, lora_path, strength)
                    except TrainerError as error:
                        raise CoreError(error.message, error.hint) from None
                images.append(_draw(model, settings, self.device))
                if on_image:
                    on_image(index, strength)
        finally:
            _restore(originals)  # the loaded base stays clean for the next try
        return TryoutResult(values, images, side_by_side(images, [f"strength {s:g}" for s in values]), settings,
                            lora_path, list(model.warnings))


def _layer_weights(model: Any) -> dict[int, tuple[Any, Any]]:
    """A copy of every weight a LoRA can touch, keyed by layer identity."""
    from trainer.networks.targets import collect_targets

    targets = collect_targets(model.unet, model.text_encoders, model.adapter.te_prefixes,
                              model.adapter.unet_lora_path, 1, 1, True, True)
    return {id(t.module): (t.module, t.module.weight.detach().clone()) for t in targets}


def _restore(originals: dict[int, tuple[Any, Any]]) -> None:
    import torch

    with torch.no_grad():
        for module, weight in originals.values():
            module.weight.copy_(weight)


def _draw(model: Any, settings: TryoutSettings, device: str) -> Any:
    """One image through the trainer's sampling pieces: same encoding and schedulers as training samples."""
    import torch

    from trainer.errors import TrainerError
    from trainer.sampling.generate import build_pipeline
    from trainer.sampling.samplers import make_scheduler

    try:
        scheduler = make_scheduler(settings.sampler, model.v_parameterization, False)
    except TrainerError as error:
        raise CoreError(error.message, error.hint) from None
    size = 1024 if model.family == "sdxl" else 512
    width, height = settings.width or size, settings.height or size
    if width % 8 or height % 8:
        raise CoreError(f"Size {width}x{height} is not a multiple of 8.", "Use sizes such as 512, 768 or 1024.")
    pipeline = build_pipeline(model, scheduler)
    # On a GPU the parts are fp16 but an SDXL VAE stays fp32; autocast lets them meet, as in training samples.
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=device.startswith("cuda"))
    with torch.no_grad(), autocast:
        encoded = model.adapter.encode_prompts([settings.prompt, settings.negative_prompt], settings.clip_skip, None)
        states = encoded.encoder_hidden_states.to(device)
        arguments = {"prompt_embeds": states[0:1], "negative_prompt_embeds": states[1:2]}
        if encoded.pooled is not None:
            pooled = encoded.pooled.to(device)
            arguments.update(pooled_prompt_embeds=pooled[0:1], negative_pooled_prompt_embeds=pooled[1:2])
        # A CPU generator gives the same starting noise on any device: one seed, one picture.
        generator = torch.Generator(device="cpu").manual_seed(int(settings.seed))
        result = pipeline(**arguments, height=height, width=width, num_inference_steps=int(settings.steps),
                          guidance_scale=float(settings.guidance_scale), generator=generator, output_type="pil")
    return result.images[0]


def side_by_side(images: Sequence[Any], labels: Sequence[str] = ()) -> Any:
    """One row of images (``len(images) * width`` wide), each labelled in its top-left corner."""
    from PIL import Image, ImageDraw

    if not images:
        raise CoreError("No images to put side by side.", "Give at least one strength.")
    width, height = images[0].size
    grid = Image.new("RGB", (width * len(images), height), "white")
    for index, image in enumerate(images):
        grid.paste(image.convert("RGB").resize((width, height)), (index * width, 0))
    draw = ImageDraw.Draw(grid)
    for index, label in enumerate(labels):
        x = index * width + 4
        box = draw.textbbox((x, 4), label)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill="black")
        draw.text((x, 4), label, fill="white")
    return grid


def try_lora(base_model: str | Path, lora: str | Path, settings: TryoutSettings,
             strengths: Sequence[float] = DEFAULT_STRENGTHS, *, model_config: str | None = None,
             device: str | None = None) -> TryoutResult:
    """Load ``base_model`` and draw ``lora`` at each strength (one-off; keep a :class:`LoraTryout` to reuse)."""
    return LoraTryout(base_model, model_config=model_config, device=device).run(lora, settings, strengths)
