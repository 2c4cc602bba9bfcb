"""The model-family protocol and the CLIP text-encoding helpers the SD and SDXL adapters share.

A family adapter is everything the training loop and the LoRA writer need to know about one
model family: how to turn captions into the UNet's conditioning, which extra conditioning the
UNet takes, how LoRA keys are named, and the metadata strings. Adding a family means one new
adapter module implementing :class:`FamilyAdapter`.

Long captions (``max_token_length`` 150 or 225) follow sd-scripts' documented scheme: the
caption's tokens are cut into 75-token chunks, each chunk is wrapped as ``BOS + 75 tokens + EOS``
(padded to 77) and encoded on its own, and the results are joined by keeping the first chunk's
BOS state, the 75 inner states of every chunk and the last chunk's final state:
``77 + 75 * (n - 1)`` positions in all.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from trainer.errors import TrainerError

if TYPE_CHECKING:
    import torch

CHUNK_TOKENS = 75  # caption tokens per chunk
CONTEXT_LENGTH = CHUNK_TOKENS + 2  # with BOS and EOS: CLIP's 77 positions


@dataclass
class Conditioning:
    """What the UNet is conditioned on for one batch.

    ``encoder_hidden_states`` is ``(B, 77 + 75*(n-1), width)``; ``pooled`` (SDXL only) is the
    second encoder's projected EOS embedding, ``(B, projection_dim)``.
    """

    encoder_hidden_states: "torch.Tensor"
    pooled: "torch.Tensor | None" = None


class FamilyAdapter(Protocol):
    """What one model family provides to the loop, the network builder and the saver."""

    family: str
    base_model_version: str  # ss_base_model_version
    modelspec_architecture: str  # modelspec.architecture
    te_prefixes: list[str]  # LoRA key prefixes, one per text encoder
    vae_scale_factor: int  # pixels per latent pixel along each side
    latent_scaling_factor: float  # multiplies VAE latents before the UNet sees them

    def tokenize(self, captions: Sequence[str], max_token_length: int | None = None) -> list["torch.Tensor"]:
        """Token ids per tokenizer, each ``(B, n_chunks, 77)``."""
        ...

    def encode_tokens(self, token_ids: Sequence["torch.Tensor"], clip_skip: int | None = None) -> Conditioning:
        """Run the text encoder(s) on :meth:`tokenize`'s output (with or without grad)."""
        ...

    def encode_prompts(
        self, captions: Sequence[str], clip_skip: int | None = None, max_token_length: int | None = None
    ) -> Conditioning:
        """:meth:`tokenize` then :meth:`encode_tokens`."""
        ...

    def unet_added_conditioning(
        self,
        original_sizes: Sequence[tuple[int, int]],
        crop_top_lefts: Sequence[tuple[int, int]],
        target_sizes: Sequence[tuple[int, int]],
        pooled: "torch.Tensor | None",
        dtype: "torch.dtype",
        device: "torch.device | str",
    ) -> dict[str, "torch.Tensor"] | None:
        """The UNet's ``added_cond_kwargs`` (SDXL), or None."""
        ...

    def text_encoder_module_root(self, index: int) -> "torch.nn.Module":
        """The module whose ``named_modules()`` paths, through :func:`text_encoder_lora_path`, name LoRA keys."""
        ...

    def unet_lora_path(self, module_path: str) -> str:
        """The path a UNet module's LoRA key is named after (dots still in place)."""
        ...


# ---------------------------------------------------------------- shared CLIP helpers


def clip_text_transformer(text_encoder: Any) -> Any:
    """The CLIP text transformer inside a HF text encoder (``embeddings``, ``encoder``, ``final_layer_norm``).

    transformers 5 flattened ``CLIPTextModel`` (it *is* the transformer), while
    ``CLIPTextModelWithProjection`` and transformers 4 keep it under ``.text_model``.
    """
    return getattr(text_encoder, "text_model", text_encoder)


def text_encoder_lora_path(module_path: str) -> str:
    """Map a module path inside a CLIP text encoder to the ``text_model.encoder.layers...`` form LoRA keys use.

    Accepts paths relative to :func:`clip_text_transformer` (``encoder.layers.0.mlp.fc1``) and
    paths relative to a wrapping model (``text_model.encoder.layers.0.mlp.fc1``) alike.
    """
    inner = module_path[len("text_model."):] if module_path.startswith("text_model.") else module_path
    return f"text_model.{inner}" if inner else "text_model"


def chunk_count(max_token_length: int | None) -> int:
    """How many 75-token chunks a caption is encoded in (1 for the default 75)."""
    if max_token_length is None:
        return 1
    if max_token_length <= 0 or max_token_length % CHUNK_TOKENS:
        raise TrainerError(
            f"max_token_length must be 75, 150 or 225, not {max_token_length}.",
            hint="Use a multiple of 75.", option="max_token_length",
        )
    return max_token_length // CHUNK_TOKENS


def tokenize_chunks(tokenizer: Any, captions: Sequence[str], max_token_length: int | None) -> "torch.Tensor":
    """Token ids ``(B, n, 77)``: each chunk is ``BOS, up to 75 caption tokens, EOS, PAD...``.

    Tokens beyond ``75 * n`` are dropped. A chunk the caption does not reach holds
    ``BOS, EOS, PAD...``; for CLIP-L tokenizers PAD is EOS, for OpenCLIP ones it is ``!``.
    """
    import torch

    chunks = chunk_count(max_token_length)
    limit = chunks * CHUNK_TOKENS
    encoded = tokenizer(
        list(captions), add_special_tokens=False, truncation=True, max_length=limit, padding=False,
    )["input_ids"]
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad is None:  # a tokenizer without a pad token pads with EOS, as CLIP-L's does
        pad = eos
    rows = []
    for tokens in encoded:
        row = []
        for index in range(chunks):
            part = list(tokens[index * CHUNK_TOKENS:(index + 1) * CHUNK_TOKENS])
            row.append([bos, *part, eos] + [pad] * (CHUNK_TOKENS - len(part)))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


def join_chunks(states: "torch.Tensor") -> "torch.Tensor":
    """``(B, n, 77, D)`` chunk states to ``(B, 77 + 75*(n-1), D)``: first BOS, every inner state, last EOS."""
    import torch

    batch, chunks, _, width = states.shape
    if chunks == 1:
        return states[:, 0]
    inner = states[:, :, 1:-1].reshape(batch, chunks * CHUNK_TOKENS, width)
    return torch.cat([states[:, 0, :1], inner, states[:, -1, -1:]], dim=1)


def run_text_encoder(text_encoder: Any, token_ids: "torch.Tensor", want_hidden_states: bool) -> Any:
    """Encode ``(B, n, 77)`` ids as one ``(B*n, 77)`` batch on the encoder's device."""
    flat = token_ids.reshape(-1, token_ids.shape[-1]).to(text_encoder.device)
    return text_encoder(flat, output_hidden_states=want_hidden_states, return_dict=True)


def unflatten_chunks(flat: "torch.Tensor", token_ids: "torch.Tensor") -> "torch.Tensor":
    """``(B*n, ...)`` back to ``(B, n, ...)`` using the ids' batch and chunk counts."""
    return flat.reshape(token_ids.shape[0], token_ids.shape[1], *flat.shape[1:])


def hidden_state_from_end(output: Any, from_end: int, option: str = "clip_skip") -> "torch.Tensor":
    """``hidden_states[-from_end]``, with a clear error when the encoder has fewer layers."""
    layers = len(output.hidden_states) - 1  # the first entry is the embeddings' output
    if from_end > layers:
        raise TrainerError(
            f"clip_skip {from_end} asks for more layers than the text encoder has ({layers}).",
            hint="Use 1 or 2.", option=option,
        )
    return output.hidden_states[-from_end]
