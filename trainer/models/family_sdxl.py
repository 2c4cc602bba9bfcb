"""The SDXL family adapter: two text encoders, pooled text and size/crop conditioning.

Text conditioning is the penultimate layer of CLIP-L and of OpenCLIP-bigG (no final layer norm),
concatenated on the width; the pooled embedding is bigG's projected EOS state (``text_embeds``)
of the first chunk. ``clip_skip`` is ignored: SDXL was trained on the penultimate layer only.
The UNet also takes ``time_ids`` = (original h, w, crop top, left, target h, w) per sample.
SDXL LoRA files name UNet modules in the original (SGM) layout, as sd-scripts writes them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.checkpoint_layout import UNetLayout, unet_module_to_ldm
from trainer.models.family import (
    Conditioning,
    clip_text_transformer,
    join_chunks,
    run_text_encoder,
    tokenize_chunks,
    unflatten_chunks,
)

if TYPE_CHECKING:
    import torch


@dataclass(eq=False)
class StableDiffusionXLAdapter:
    """SDXL base-architecture models (Pony, Illustrious, NoobAI, Animagine... included)."""

    text_encoders: Sequence[Any]
    tokenizers: Sequence[Any]
    unet_config: Mapping[str, Any]
    vae_config: Mapping[str, Any]
    v_parameterization: bool = False

    family = "sdxl"
    base_model_version = "sdxl_base_v1-0"
    # v-pred SDXL models share the architecture string; modelspec.prediction_type tells them apart.
    modelspec_architecture = "stable-diffusion-xl-v1-base/lora"

    def __post_init__(self) -> None:
        if len(self.text_encoders) != 2 or len(self.tokenizers) != 2:
            raise ValueError("SDXL needs two text encoders and two tokenizers")
        self._layout = UNetLayout.from_config(self.unet_config)

    @property
    def te_prefixes(self) -> list[str]:
        """CLIP-L is ``lora_te1``, OpenCLIP-bigG ``lora_te2``."""
        return ["lora_te1", "lora_te2"]

    @property
    def vae_scale_factor(self) -> int:
        """8: one halving per VAE level after the first."""
        return 2 ** (len(self.vae_config["block_out_channels"]) - 1)

    @property
    def latent_scaling_factor(self) -> float:
        """0.13025 for the SDXL VAE."""
        return float(self.vae_config["scaling_factor"])

    def tokenize(self, captions: Sequence[str], max_token_length: int | None = None) -> list["torch.Tensor"]:
        """Two ``(B, n, 77)`` id tensors; they differ in padding (EOS for CLIP-L, ``!`` for bigG)."""
        return [tokenize_chunks(tokenizer, captions, max_token_length) for tokenizer in self.tokenizers]

    def encode_tokens(self, token_ids: Sequence["torch.Tensor"], clip_skip: int | None = None) -> Conditioning:
        """Concatenated penultimate states of both encoders, and bigG's pooled projection."""
        import torch

        ids_1, ids_2 = token_ids
        out_1 = run_text_encoder(self.text_encoders[0], ids_1, want_hidden_states=True)
        out_2 = run_text_encoder(self.text_encoders[1], ids_2, want_hidden_states=True)
        states_1 = join_chunks(unflatten_chunks(out_1.hidden_states[-2], ids_1))
        states_2 = join_chunks(unflatten_chunks(out_2.hidden_states[-2], ids_2))
        pooled = unflatten_chunks(out_2.text_embeds, ids_2)[:, 0]
        hidden = torch.cat([states_1, states_2.to(states_1.dtype)], dim=-1)
        return Conditioning(hidden, pooled)

    def encode_prompts(
        self, captions: Sequence[str], clip_skip: int | None = None, max_token_length: int | None = None
    ) -> Conditioning:
        """Tokenize and encode captions in one call (``clip_skip`` is ignored for SDXL)."""
        return self.encode_tokens(self.tokenize(captions, max_token_length), clip_skip)

    def unet_added_conditioning(
        self,
        original_sizes: Sequence[tuple[int, int]],
        crop_top_lefts: Sequence[tuple[int, int]],
        target_sizes: Sequence[tuple[int, int]],
        pooled: "torch.Tensor | None",
        dtype: "torch.dtype",
        device: "torch.device | str",
    ) -> dict[str, "torch.Tensor"]:
        """``{"text_embeds": pooled, "time_ids": (B, 6)}``, sizes given as (height, width)."""
        import torch

        if pooled is None:
            raise ValueError("SDXL needs the pooled text embedding")
        if not len(original_sizes) == len(crop_top_lefts) == len(target_sizes) == pooled.shape[0]:
            raise ValueError("one original size, crop and target size per sample")
        rows = [
            [*map(float, original), *map(float, crop), *map(float, target)]
            for original, crop, target in zip(original_sizes, crop_top_lefts, target_sizes)
        ]
        time_ids = torch.tensor(rows, dtype=torch.float32).to(device=device, dtype=dtype)
        return {"text_embeds": pooled.to(device=device, dtype=dtype), "time_ids": time_ids}

    def text_encoder_module_root(self, index: int) -> Any:
        """The CLIP text transformer of encoder ``index`` (0 CLIP-L, 1 bigG)."""
        return clip_text_transformer(self.text_encoders[index])

    def unet_lora_path(self, module_path: str) -> str:
        """The SGM-layout path: ``down_blocks.1.attentions.0...`` -> ``input_blocks.4.1...``."""
        return unet_module_to_ldm(module_path, self._layout)
