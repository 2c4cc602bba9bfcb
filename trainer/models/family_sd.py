"""The SD1.x / SD2.x family adapter: one CLIP text encoder, no extra UNet conditioning.

``clip_skip`` follows sd-scripts: with clip_skip N > 1 the text condition is the output of the
N-th layer from the end, passed through the encoder's final layer norm (which the last layer's
output gets anyway). SD2's diffusers text encoder already stops one layer short of OpenCLIP's
24, so clip_skip 1 there is OpenCLIP's penultimate layer, as SD2 was trained.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.models.family import (
    Conditioning,
    clip_text_transformer,
    hidden_state_from_end,
    join_chunks,
    run_text_encoder,
    tokenize_chunks,
    unflatten_chunks,
)

if TYPE_CHECKING:
    import torch


@dataclass(eq=False)
class StableDiffusionAdapter:
    """SD1 (``family="sd1"``) and SD2 (``family="sd2"``) models."""

    family: str
    text_encoder: Any
    tokenizer: Any
    vae_config: Mapping[str, Any]
    v_parameterization: bool = False

    @property
    def base_model_version(self) -> str:
        """``ss_base_model_version``: sd_v1, sd_v2, or sd_v2_v for a v-prediction SD2."""
        if self.family == "sd1":
            return "sd_v1"
        return "sd_v2_v" if self.v_parameterization else "sd_v2"

    @property
    def modelspec_architecture(self) -> str:
        """``modelspec.architecture`` of a LoRA for this model."""
        if self.family == "sd1":
            return "stable-diffusion-v1/lora"
        return "stable-diffusion-v2-768-v/lora" if self.v_parameterization else "stable-diffusion-v2-512/lora"

    @property
    def te_prefixes(self) -> list[str]:
        """One text encoder, keys ``lora_te_*``."""
        return ["lora_te"]

    @property
    def vae_scale_factor(self) -> int:
        """8 for every SD VAE: one halving per level after the first."""
        return 2 ** (len(self.vae_config["block_out_channels"]) - 1)

    @property
    def latent_scaling_factor(self) -> float:
        """0.18215 for the SD1/SD2 VAE."""
        return float(self.vae_config["scaling_factor"])

    def tokenize(self, captions: Sequence[str], max_token_length: int | None = None) -> list["torch.Tensor"]:
        """One ``(B, n, 77)`` id tensor."""
        return [tokenize_chunks(self.tokenizer, captions, max_token_length)]

    def encode_tokens(self, token_ids: Sequence["torch.Tensor"], clip_skip: int | None = None) -> Conditioning:
        """The (chunk-joined) hidden states of layer ``-clip_skip``; no pooled output."""
        (ids,) = token_ids
        skip = clip_skip or 1
        output = run_text_encoder(self.text_encoder, ids, want_hidden_states=skip > 1)
        if skip > 1:
            states = hidden_state_from_end(output, skip)
            states = clip_text_transformer(self.text_encoder).final_layer_norm(states)
        else:
            states = output.last_hidden_state  # already through the final layer norm
        return Conditioning(join_chunks(unflatten_chunks(states, ids)))

    def encode_prompts(
        self, captions: Sequence[str], clip_skip: int | None = None, max_token_length: int | None = None
    ) -> Conditioning:
        """Tokenize and encode captions in one call."""
        return self.encode_tokens(self.tokenize(captions, max_token_length), clip_skip)

    def unet_added_conditioning(
        self,
        original_sizes: Sequence[tuple[int, int]],
        crop_top_lefts: Sequence[tuple[int, int]],
        target_sizes: Sequence[tuple[int, int]],
        pooled: "torch.Tensor | None",
        dtype: "torch.dtype",
        device: "torch.device | str",
    ) -> None:
        """SD1/SD2 UNets take no size or pooled-text conditioning."""
        return None

    def text_encoder_module_root(self, index: int) -> Any:
        """The CLIP text transformer; only index 0 exists."""
        if index != 0:
            raise IndexError(f"{self.family} has one text encoder, not index {index}")
        return clip_text_transformer(self.text_encoder)

    def unet_lora_path(self, module_path: str) -> str:
        """SD1/SD2 LoRA keys use the diffusers module path unchanged."""
        return module_path
