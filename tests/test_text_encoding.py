"""Caption encoding by the family adapters, checked against the text encoders called directly."""
from __future__ import annotations

import pytest
import torch
from transformers import CLIPTokenizer

from tests.fixtures.sd_models import TinyModel
from trainer.errors import TrainerError
from trainer.models import LoadedModel, ModelSpec, load_model, text_encoder_lora_path
from trainer.models.family import tokenize_chunks


SHORT = ["a photo of the cat", "the cat sitting on a mat"]
# About 110 tokens with this tokenizer's few merges: reaches the second chunk.
LONG = ["a photo of the cat, " * 14 + "standing and smiling", "short"]


@pytest.fixture(scope="module")
def sd15(tiny_sd15: TinyModel) -> LoadedModel:
    """The tiny SD1.5 model, loaded once for this module."""
    return load_model(ModelSpec(str(tiny_sd15.diffusers_dir)))


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl: TinyModel) -> LoadedModel:
    """The tiny SDXL model, loaded once for this module."""
    return load_model(ModelSpec(str(tiny_sdxl.diffusers_dir)))


def _plain_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    """The standard 77-token encoding (BOS, tokens, EOS, padding), straight from the tokenizer."""
    return tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


# ---------------------------------------------------------------- SD1


def test_sd_shapes_for_75_150_and_225_tokens(sd15: LoadedModel) -> None:
    adapter = sd15.adapter
    with torch.no_grad():
        assert adapter.encode_prompts(SHORT).encoder_hidden_states.shape == (2, 77, 32)
        assert adapter.encode_prompts(SHORT, max_token_length=150).encoder_hidden_states.shape == (2, 152, 32)
        assert adapter.encode_prompts(SHORT, max_token_length=225).encoder_hidden_states.shape == (2, 227, 32)
        assert adapter.encode_prompts(SHORT).pooled is None
    with pytest.raises(TrainerError, match="max_token_length"):
        adapter.encode_prompts(SHORT, max_token_length=100)


def test_sd_default_encoding_is_the_plain_last_hidden_state(sd15: LoadedModel) -> None:
    text_encoder, tokenizer = sd15.text_encoders[0], sd15.tokenizers[0]
    ids = _plain_ids(tokenizer, SHORT)
    assert torch.equal(sd15.adapter.tokenize(SHORT)[0][:, 0], ids)
    with torch.no_grad():
        expected = text_encoder(ids).last_hidden_state
        assert torch.allclose(sd15.adapter.encode_prompts(SHORT).encoder_hidden_states, expected, atol=1e-6)


def test_clip_skip_2_is_the_normed_penultimate_layer(sd15: LoadedModel) -> None:
    text_encoder, tokenizer = sd15.text_encoders[0], sd15.tokenizers[0]
    with torch.no_grad():
        hidden = text_encoder(_plain_ids(tokenizer, SHORT), output_hidden_states=True).hidden_states[-2]
        expected = torch.nn.functional.layer_norm(
            hidden, (hidden.shape[-1],), text_encoder.final_layer_norm.weight, text_encoder.final_layer_norm.bias,
            text_encoder.config.layer_norm_eps,
        )
        skip_1 = sd15.adapter.encode_prompts(SHORT, clip_skip=1).encoder_hidden_states
        skip_2 = sd15.adapter.encode_prompts(SHORT, clip_skip=2).encoder_hidden_states
    assert torch.allclose(skip_2, expected, atol=1e-5)
    assert not torch.allclose(skip_1, skip_2, atol=1e-3)
    with pytest.raises(TrainerError, match="clip_skip"):
        sd15.adapter.encode_prompts(SHORT, clip_skip=9)


def test_chunked_short_caption_matches_the_unchunked_encoding(sd15: LoadedModel) -> None:
    with torch.no_grad():
        plain = sd15.adapter.encode_prompts(SHORT).encoder_hidden_states
        chunked = sd15.adapter.encode_prompts(SHORT, max_token_length=150).encoder_hidden_states
    # BOS and the first chunk's 75 inner positions are the same; position 76 is already the
    # second chunk's first inner state (its EOS), and the last position is the last chunk's EOS.
    assert torch.allclose(chunked[:, :76], plain[:, :76], atol=1e-6)
    assert not torch.allclose(chunked[:, 76], plain[:, 76], atol=1e-4)


def test_long_caption_chunks_and_joined_states(sd15: LoadedModel) -> None:
    tokenizer, text_encoder = sd15.tokenizers[0], sd15.text_encoders[0]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    tokens = tokenizer(LONG[0], add_special_tokens=False).input_ids
    assert 75 < len(tokens) < 150
    ids = sd15.adapter.tokenize(LONG, max_token_length=150)[0]
    assert ids.shape == (2, 2, 77)
    assert ids[0, 0].tolist() == [bos, *tokens[:75], eos]
    assert ids[0, 1].tolist() == [bos, *tokens[75:], eos] + [eos] * (75 - len(tokens[75:]))
    with torch.no_grad():
        states = sd15.adapter.encode_tokens([ids]).encoder_hidden_states
        each = [text_encoder(ids[:, chunk]).last_hidden_state for chunk in range(2)]
    assert states.shape == (2, 152, 32)
    assert torch.allclose(states[:, 0], each[0][:, 0], atol=1e-6)
    assert torch.allclose(states[:, 1:76], each[0][:, 1:76], atol=1e-6)
    assert torch.allclose(states[:, 76:151], each[1][:, 1:76], atol=1e-6)
    assert torch.allclose(states[:, 151], each[1][:, 76], atol=1e-6)


def test_chunks_pad_with_the_pad_token_when_it_is_not_eos(sd15: LoadedModel, tiny_sd15: TinyModel) -> None:
    """OpenCLIP tokenizers (SD2, SDXL's second) pad with '!': an unreached chunk is BOS, EOS, '!'..."""
    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd15.diffusers_dir / "tokenizer", pad_token="!")
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    assert pad != eos
    ids = tokenize_chunks(tokenizer, ["the cat"], 150)
    words = tokenizer("the cat", add_special_tokens=False).input_ids
    assert ids[0, 0].tolist() == [bos, *words, eos] + [pad] * (75 - len(words))
    assert ids[0, 1].tolist() == [bos, eos] + [pad] * 75


def test_encoding_works_with_grad_for_text_encoder_training(sd15: LoadedModel, sdxl: LoadedModel) -> None:
    for loaded in (sd15, sdxl):
        layer_weights = [loaded.adapter.text_encoder_module_root(i).encoder.layers[0].mlp.fc1.weight
                         for i in range(len(loaded.text_encoders))]
        try:
            for weight in layer_weights:
                weight.requires_grad_(True)
            result = loaded.adapter.encode_prompts(SHORT, clip_skip=2, max_token_length=150)
            loss = result.encoder_hidden_states.square().mean()
            if result.pooled is not None:
                loss = loss + result.pooled.square().mean()
            loss.backward()
            assert all(weight.grad is not None and weight.grad.abs().sum() > 0 for weight in layer_weights)
        finally:
            for weight in layer_weights:
                weight.requires_grad_(False)
                weight.grad = None


# ---------------------------------------------------------------- SDXL


def test_sdxl_shapes_and_pooled(sdxl: LoadedModel) -> None:
    with torch.no_grad():
        plain = sdxl.adapter.encode_prompts(SHORT)
        long = sdxl.adapter.encode_prompts(SHORT, max_token_length=150)
    te1, te2 = sdxl.text_encoders
    assert plain.encoder_hidden_states.shape == (2, 77, te1.config.hidden_size + te2.config.hidden_size) == (2, 77, 80)
    assert plain.pooled.shape == (2, te2.config.projection_dim) == (2, 32)
    assert long.encoder_hidden_states.shape == (2, 152, 80)
    assert torch.allclose(long.pooled, plain.pooled, atol=1e-6)  # pooled comes from the first chunk


def test_sdxl_encoding_matches_the_encoders_called_directly(sdxl: LoadedModel) -> None:
    (te1, te2), (tok1, tok2) = sdxl.text_encoders, sdxl.tokenizers
    with torch.no_grad():
        out1 = te1(_plain_ids(tok1, SHORT), output_hidden_states=True)
        out2 = te2(_plain_ids(tok2, SHORT), output_hidden_states=True)
        result = sdxl.adapter.encode_prompts(SHORT, clip_skip=2)  # clip_skip is ignored for SDXL
    expected = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
    assert torch.allclose(result.encoder_hidden_states, expected, atol=1e-6)
    assert torch.allclose(result.pooled, out2.text_embeds, atol=1e-6)


def test_sdxl_time_ids_and_a_unet_step(sdxl: LoadedModel, sd15: LoadedModel) -> None:
    with torch.no_grad():
        cond = sdxl.adapter.encode_prompts(SHORT)
    added = sdxl.adapter.unet_added_conditioning(
        [(1024, 768), (832, 1216)], [(0, 32), (16, 0)], [(1024, 1024), (832, 1216)], cond.pooled, torch.float16, "cpu",
    )
    assert added["time_ids"].dtype == torch.float16 and added["text_embeds"].dtype == torch.float16
    assert added["time_ids"].tolist() == [[1024, 768, 0, 32, 1024, 1024], [832, 1216, 16, 0, 832, 1216]]
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        added = {key: value.float() for key, value in added.items()}
        out = sdxl.unet(latents, torch.tensor([10, 500]), cond.encoder_hidden_states, added_cond_kwargs=added).sample
        assert out.shape == latents.shape and torch.isfinite(out).all()
        sd_cond = sd15.adapter.encode_prompts(SHORT, max_token_length=150)
        assert sd15.adapter.unet_added_conditioning([(8, 8)] * 2, [(0, 0)] * 2, [(8, 8)] * 2, None,
                                                    torch.float32, "cpu") is None
        sd_out = sd15.unet(latents, torch.tensor([10, 500]), sd_cond.encoder_hidden_states).sample
        assert sd_out.shape == latents.shape


# ---------------------------------------------------------------- LoRA naming of text-encoder modules


def test_text_encoder_lora_paths_read_text_model_encoder_layers(sd15: LoadedModel, sdxl: LoadedModel) -> None:
    roots = [sd15.adapter.text_encoder_module_root(0), *(sdxl.adapter.text_encoder_module_root(i) for i in (0, 1))]
    for root in roots:
        names = dict(root.named_modules())
        assert "encoder.layers.0.self_attn.q_proj" in names
        assert text_encoder_lora_path("encoder.layers.0.self_attn.q_proj") == "text_model.encoder.layers.0.self_attn.q_proj"
    # transformers 5 keeps CLIPTextModelWithProjection wrapped: its own paths carry text_model. already.
    te2_names = [name for name, _ in sdxl.text_encoders[1].named_modules()]
    assert "text_model.encoder.layers.1.mlp.fc2" in te2_names
    assert text_encoder_lora_path("text_model.encoder.layers.1.mlp.fc2") == "text_model.encoder.layers.1.mlp.fc2"
    with pytest.raises(IndexError):
        sd15.adapter.text_encoder_module_root(1)
