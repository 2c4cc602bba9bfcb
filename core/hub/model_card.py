"""The README.md model card uploaded beside a LoRA: front matter for the Hub, a body for people.

Front matter (YAML) gives the Hub what it indexes: ``base_model`` (a Hub repo id), ``tags``
(lora, stable-diffusion[-xl], text-to-image), ``instance_prompt`` (the trigger words) and a
``widget`` per sample image. The body says which base model it is for, the trigger words, how to
load the file in ComfyUI, A1111/Forge and diffusers, the training settings read from the file's
``ss_*`` metadata (through ``trainer.tools.lora_info``) and the dataset's most frequent tags.

Nothing secret reaches the card: it is built only from the LoRA's metadata and the arguments.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import CoreError

# Architecture (as lora_info names it) -> the Hub repo a card names when nothing better is known.
DEFAULT_BASES = {
    "SDXL": "stabilityai/stable-diffusion-xl-base-1.0",
    "SD2": "stabilityai/stable-diffusion-2-1",
    "SD1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "SD1/SD2": "stable-diffusion-v1-5/stable-diffusion-v1-5",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# ss_* keys shown in the settings table, with the label people read.
SETTING_LABELS = {
    "ss_network_module": "Network module", "ss_network_dim": "Rank (network_dim)",
    "ss_network_alpha": "Alpha (network_alpha)", "ss_network_args": "Network arguments",
    "ss_learning_rate": "Learning rate", "ss_unet_lr": "UNet learning rate",
    "ss_text_encoder_lr": "Text encoder learning rate", "ss_optimizer": "Optimizer",
    "ss_lr_scheduler": "LR scheduler", "ss_num_epochs": "Epochs", "ss_epoch": "Epoch of this file",
    "ss_steps": "Steps", "ss_max_train_steps": "Max train steps", "ss_num_train_images": "Training images",
    "ss_seed": "Seed", "ss_clip_skip": "Clip skip", "ss_mixed_precision": "Mixed precision",
    "ss_noise_offset": "Noise offset", "ss_min_snr_gamma": "Min SNR gamma", "ss_resolution": "Resolution",
    "ss_training_comment": "Comment",
}


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states, gathered before rendering (tests and the panel can show it)."""

    title: str
    repo_id: str
    lora_file: str  # path of the LoRA inside the repo
    base_model: str  # Hub repo id for the front matter
    base_model_name: str  # what the LoRA's metadata calls its base (often a file name)
    architecture: str  # SD1, SD2, SDXL, SD1/SD2 or unknown
    trigger_words: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # sample image paths inside the repo
    settings: dict[str, str] = field(default_factory=dict)
    top_tags: list[tuple[str, int]] = field(default_factory=list)
    license: str | None = None
    description: str = ""


def _preset_repo_for(name: str) -> str | None:
    """The Hub repo of the preset whose file is ``name`` (``sd_xl_base_1.0[.safetensors]``), if any."""
    from core.models import load_presets

    wanted = Path(name).stem.lower()
    for preset in load_presets().values():
        parts = preset.source.split("/")
        if len(parts) >= 3 and Path(parts[-1]).stem.lower() == wanted:
            return "/".join(parts[:2])
    return None


def resolve_base_model(explicit: str | None, metadata_name: str, architecture: str) -> str:
    """The Hub id the front matter names: the user's choice, a known file's repo, or the family's base."""
    if explicit and explicit.strip():
        value = explicit.strip()
        if not _HUB_ID.match(value):
            raise CoreError(f"Base model {value!r} is not a Hugging Face repo id (owner/name).",
                            "Give the Hub id of the base model, e.g. stabilityai/stable-diffusion-xl-base-1.0, "
                            "or leave it empty to use the one the LoRA's metadata suggests.")
        return value
    name = (metadata_name or "").strip()
    if name:
        known = _preset_repo_for(name)
        if known:
            return known
        if _HUB_ID.match(name) and not name.endswith((".safetensors", ".ckpt")):
            return name  # trained straight from a Hub repo
    if architecture in DEFAULT_BASES:
        return DEFAULT_BASES[architecture]
    raise CoreError("Cannot tell which base model this LoRA is for (no metadata, unknown key names).",
                    "Fill in the base model's Hugging Face id (e.g. stabilityai/stable-diffusion-xl-base-1.0).")


def card_facts(lora_path: Path, repo_id: str, lora_file: str, images: list[str], *, base_model: str | None = None,
               trigger_words: list[str] | None = None, title: str | None = None, license: str | None = None,
               description: str = "") -> CardFacts:
    """Read the LoRA's metadata and combine it with the user's choices (theirs win)."""
    from trainer.errors import TrainerError
    from trainer.tools.lora_info import lora_info

    try:
        info = lora_info(lora_path)
    except TrainerError as error:
        raise CoreError(f"Cannot read the LoRA {lora_path}: {error.message}", error.hint) from None
    words = [w.strip() for w in (trigger_words if trigger_words is not None else info.trigger_words) if w.strip()]
    return CardFacts(
        title=title or Path(lora_file).stem, repo_id=repo_id, lora_file=lora_file,
        base_model=resolve_base_model(base_model, info.base_model, info.architecture),
        base_model_name=info.base_model, architecture=info.architecture, trigger_words=words, images=list(images),
        settings=dict(info.settings), top_tags=list(info.top_tags), license=license, description=description,
    )


def front_matter(facts: CardFacts) -> dict:
    """The YAML header as a dict (the Hub reads base_model, tags, instance_prompt, widget)."""
    tags = ["lora", "stable-diffusion"]
    if facts.architecture == "SDXL":
        tags.append("stable-diffusion-xl")
    tags += ["text-to-image", "diffusers"]
    data: dict = {"base_model": facts.base_model, "tags": tags, "pipeline_tag": "text-to-image",
                  "library_name": "diffusers"}
    if facts.license:
        data["license"] = facts.license
    if facts.trigger_words:
        data["instance_prompt"] = ", ".join(facts.trigger_words)
    prompt = ", ".join(facts.trigger_words) or facts.title
    if facts.images:
        data["widget"] = [{"text": prompt, "output": {"url": image}} for image in facts.images]
    return data


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _usage(facts: CardFacts) -> list[str]:
    stem = Path(facts.lora_file).stem
    prompt = ", ".join(facts.trigger_words + ["your prompt"])
    return [
        "## How to use", "",
        "**ComfyUI**: put the file in `ComfyUI/models/loras/`, add a *Load LoRA* node after the checkpoint loader "
        "and start with strength 0.8 - 1.0.", "",
        f"**AUTOMATIC1111 / Forge**: put the file in `models/Lora/` and add {_code(f'<lora:{stem}:1>')} "
        "to the prompt" + (", together with the trigger words." if facts.trigger_words else "."), "",
        "**diffusers**:", "", "```python", "import torch", "from diffusers import AutoPipelineForText2Image", "",
        f'pipe = AutoPipelineForText2Image.from_pretrained("{facts.base_model}", torch_dtype=torch.float16).to("cuda")',
        f'pipe.load_lora_weights("{facts.repo_id}", weight_name="{facts.lora_file}")',
        f'image = pipe("{prompt}").images[0]', "```", "",
    ]


def render_body(facts: CardFacts) -> str:
    """The Markdown people read on the model page."""
    lines = [f"# {facts.title}", ""]
    if facts.description:
        lines += [facts.description, ""]
    base = f"[{facts.base_model}](https://huggingface.co/{facts.base_model})"
    trained = f" (trained on {_code(facts.base_model_name)})" if facts.base_model_name else ""
    lines += [f"A LoRA for **{base}**{trained}, architecture {facts.architecture}.", ""]
    lines += ["## Trigger words", ""]
    lines += [", ".join(_code(w) for w in facts.trigger_words) if facts.trigger_words
              else "None: the LoRA applies without a trigger word.", ""]
    if facts.images:
        lines += ["## Samples", ""] + [f"![sample]({image})" for image in facts.images] + [""]
    lines += _usage(facts)
    if facts.settings:
        lines += ["## Training settings", "", "| setting | value |", "|---|---|"]
        for key, value in facts.settings.items():
            label = SETTING_LABELS.get(key, key)
            lines.append(f"| {label} | {_code(str(value)).replace('|', '/')} |")
        lines.append("")
    if facts.top_tags:
        lines += ["## Most frequent tags in the dataset", "",
                  ", ".join(f"{_code(tag)} ({count})" for tag, count in facts.top_tags), ""]
    lines += ["Trained with LoRA Easy Training (Jupyter widget edition).", ""]
    return "\n".join(lines)


def render_model_card(facts: CardFacts) -> str:
    """The whole README.md: ``---`` YAML front matter, then the body."""
    import yaml

    header = yaml.safe_dump(front_matter(facts), sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n{render_body(facts)}"
