"""The tiny SD1.5/SDXL fixtures load through diffusers' public API, and the layout converter is exact."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors import safe_open
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from tests.fixtures.sd_models import TinyModel, build_sd15, build_sdxl
from tests.fixtures.tokenizer import END_TOKEN, START_TOKEN, bytes_to_unicode
from trainer.checkpoint_layout import (
    SD1_CLIP_PREFIX,
    UNetLayout,
    clip_g_to_open_clip,
    clip_l_to_ldm,
    unet_module_to_ldm,
    vae_to_ldm,
)


PIPELINES = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}
COMPONENTS = {"sd15": ("unet", "vae", "text_encoder"), "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2")}

# Layouts written out by hand from the real models' configs, not from the fixtures.
SDXL_LAYOUT = UNetLayout(2, down_has_attention=(False, True, True), up_has_attention=(True, True, False))
SD15_REAL_LAYOUT = UNetLayout(
    2, down_has_attention=(True, True, True, False), up_has_attention=(False, True, True, True)
)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def tiny(request: pytest.FixtureRequest) -> TinyModel:
    """Each tiny model in turn, from the session-wide fixtures in conftest.py."""
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture(scope="module")
def loaded(tiny: TinyModel):
    """The model loaded both ways: from the diffusers folder and from the single file."""
    cls = PIPELINES[tiny.family]
    from_folder = cls.from_pretrained(tiny.diffusers_dir, local_files_only=True)
    from_file = cls.from_single_file(str(tiny.single_file), config=str(tiny.config_dir), local_files_only=True)
    return from_folder, from_file


def _single_file_keys(path: Path) -> set[str]:
    with safe_open(str(path), framework="pt") as handle:
        return set(handle.keys())


# ---------------------------------------------------------------- loading through the public API


def test_builder_returns_the_promised_layout(tiny: TinyModel) -> None:
    assert tiny.single_file.name == f"{tiny.family}_tiny.safetensors"
    assert (tiny.diffusers_dir / "model_index.json").is_file()
    expected = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    if tiny.family == "sdxl":
        expected |= {"text_encoder_2", "tokenizer_2"}
    assert expected <= {p.name for p in tiny.diffusers_dir.iterdir() if p.is_dir()}
    config_files = [p for p in tiny.config_dir.rglob("*") if p.is_file()]
    assert (tiny.config_dir / "unet" / "config.json") in config_files
    assert not [p for p in config_files if p.suffix in (".safetensors", ".bin")], "config_dir must hold no weights"


def test_from_pretrained_components_are_fp32_and_tiny(tiny: TinyModel, loaded) -> None:
    from_folder, _ = loaded
    assert type(from_folder) is PIPELINES[tiny.family]
    for name in COMPONENTS[tiny.family]:
        parameters = list(getattr(from_folder, name).parameters())
        assert all(p.dtype == torch.float32 for p in parameters)
        assert sum(p.numel() for p in parameters) < 1_500_000
    assert from_folder.vae_scale_factor == 8
    if tiny.family == "sdxl":
        assert from_folder.text_encoder.config.hidden_size != from_folder.text_encoder_2.config.hidden_size


def test_single_file_loads_every_tensor_exactly(tiny: TinyModel, loaded) -> None:
    from_folder, from_file = loaded
    assert type(from_file) is PIPELINES[tiny.family]
    for name in COMPONENTS[tiny.family]:
        expected = getattr(from_folder, name).state_dict()
        actual = getattr(from_file, name).state_dict()
        assert set(actual) == set(expected), f"{name}: key sets differ"
        for key, tensor in expected.items():
            assert actual[key].device.type == "cpu", f"{name}.{key} was left unloaded"
            assert torch.equal(actual[key], tensor), f"{name}.{key} differs"
    assert type(from_file.scheduler) is type(from_folder.scheduler)


def test_single_file_holds_exactly_the_pipeline_tensors(tiny: TinyModel, loaded) -> None:
    from_folder, _ = loaded
    total = sum(len(getattr(from_folder, name).state_dict()) for name in COMPONENTS[tiny.family])
    # The OpenCLIP layout fuses q, k and v: three tensors become one per layer and kind.
    if tiny.family == "sdxl":
        total -= 2 * 2 * from_folder.text_encoder_2.config.num_hidden_layers
    assert len(_single_file_keys(tiny.single_file)) == total


@pytest.mark.parametrize("source", ["folder", "single_file"])
def test_tiny_inference_gives_latents_and_images(tiny: TinyModel, loaded, source: str) -> None:
    pipe = loaded[0] if source == "folder" else loaded[1]
    pipe.set_progress_bar_config(disable=True)
    common = {"prompt": "a photo of the cat", "num_inference_steps": 2, "height": 64, "width": 64}
    latents = pipe(**common, output_type="latent", generator=torch.Generator().manual_seed(0)).images
    assert tuple(latents.shape) == (1, 4, 8, 8)
    assert torch.isfinite(latents).all()
    image = pipe(**common, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3)
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


def test_both_loads_generate_the_same_latents(tiny: TinyModel, loaded) -> None:
    outputs = []
    for pipe in loaded:
        pipe.set_progress_bar_config(disable=True)
        outputs.append(
            pipe("a cat", num_inference_steps=1, height=64, width=64, output_type="latent",
                 generator=torch.Generator().manual_seed(3)).images
        )
    assert torch.equal(outputs[0], outputs[1])


def test_tokenizer_loads_offline_and_applies_merges(tiny: TinyModel) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(tiny.config_dir / "tokenizer", local_files_only=True)
    ids = tokenizer("A photo of the cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77
    tokens = tokenizer.convert_ids_to_tokens(ids[:7])
    assert tokens == [START_TOKEN, "a</w>", "photo</w>", "of</w>", "the</w>", "cat</w>", END_TOKEN]
    assert ids[-1] == tokenizer.convert_tokens_to_ids(END_TOKEN)
    assert len(tokenizer) == 2 * 256 + 15 + 2  # bytes, bytes + </w>, merges, 2 special tokens


def test_bytes_to_unicode_is_a_printable_bijection() -> None:
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "\u0120"  # space becomes "Ġ" as in GPT-2/CLIP
    assert all(not ch.isspace() and ch.isprintable() for ch in table.values())


# ---------------------------------------------------------------- real-model key names


def test_sd15_single_file_uses_real_sd15_names(tiny_sd15: TinyModel) -> None:
    keys = _single_file_keys(tiny_sd15.single_file)
    for key in (
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",  # up level 0 has no attention in SD1.5
        "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.ff.net.2.weight",
        "model.diffusion_model.time_embed.2.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "cond_stage_model.transformer.text_model.encoder.layers.2.self_attn.q_proj.weight",
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
    ):
        assert key in keys, key
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in keys
    with safe_open(str(tiny_sd15.single_file), framework="pt") as handle:
        # SD1.5 (use_linear_projection False) keeps proj_in as a 1x1 conv.
        assert handle.get_slice("model.diffusion_model.input_blocks.1.1.proj_in.weight").get_shape() == [16, 16, 1, 1]
        assert handle.get_slice("first_stage_model.decoder.mid.attn_1.q.weight").get_shape() == [16, 16, 1, 1]
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in keys)


def test_sdxl_single_file_uses_real_sdxl_names(tiny_sdxl: TinyModel) -> None:
    keys = _single_file_keys(tiny_sdxl.single_file)
    for key in (
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.1.attn2.to_v.weight",
        "model.diffusion_model.input_blocks.6.0.op.weight",
        "model.diffusion_model.output_blocks.2.2.conv.weight",
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.output_blocks.8.0.out_layers.3.weight",
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.label_emb.0.2.weight",
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
        "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight",
        "conditioner.embedders.1.model.positional_embedding",
        "conditioner.embedders.1.model.ln_final.weight",
    ):
        assert key in keys, key
    # In SDXL the first two up levels have attention, so their upsamplers sit in slot 2, not 1.
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" not in keys
    assert not any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in keys)
    assert not any(k.startswith("model.diffusion_model.input_blocks.9.") for k in keys)


def test_sdxl_text_projection_is_stored_transposed(tiny_sdxl: TinyModel) -> None:
    encoder = CLIPTextModelWithProjection.from_pretrained(tiny_sdxl.diffusers_dir / "text_encoder_2")
    hf_weight = encoder.text_projection.weight  # [projection_dim, hidden]
    with safe_open(str(tiny_sdxl.single_file), framework="pt") as handle:
        stored = handle.get_tensor("conditioner.embedders.1.model.text_projection")
    assert tuple(stored.shape) == (48, 32) and tuple(hf_weight.shape) == (32, 48)
    assert torch.equal(stored, hf_weight.T)


# ---------------------------------------------------------------- unet_module_to_ldm by hand

TB = "transformer_blocks"  # names inside transformer blocks are the same in both layouts


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"down_blocks.1.attentions.0.{TB}.0.attn1.to_q", f"input_blocks.4.1.{TB}.0.attn1.to_q"),
        (f"down_blocks.2.attentions.1.{TB}.1.attn2.to_out.0", f"input_blocks.8.1.{TB}.1.attn2.to_out.0"),
        ("down_blocks.1.attentions.0.proj_in", "input_blocks.4.1.proj_in"),
        ("down_blocks.0.resnets.0", "input_blocks.1.0"),
        ("down_blocks.0.resnets.1.conv1.weight", "input_blocks.2.0.in_layers.2.weight"),
        ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
        ("down_blocks.2.resnets.1.time_emb_proj", "input_blocks.8.0.emb_layers.1"),
        ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
        ("down_blocks.1.downsamplers.0.conv.bias", "input_blocks.6.0.op.bias"),
        ("mid_block.resnets.0.norm1", "middle_block.0.in_layers.0"),
        (f"mid_block.attentions.0.{TB}.1.ff.net.0.proj", f"middle_block.1.{TB}.1.ff.net.0.proj"),
        ("mid_block.resnets.1.norm2.bias", "middle_block.2.out_layers.0.bias"),
        ("up_blocks.0.resnets.0.conv2", "output_blocks.0.0.out_layers.3"),
        ("up_blocks.0.attentions.2.proj_out", "output_blocks.2.1.proj_out"),
        ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),
        ("up_blocks.1.upsamplers.0.conv.weight", "output_blocks.5.2.conv.weight"),
        (f"up_blocks.1.attentions.0.{TB}.0.attn1.to_k", f"output_blocks.3.1.{TB}.0.attn1.to_k"),
        ("up_blocks.2.resnets.2.conv_shortcut", "output_blocks.8.0.skip_connection"),
        ("conv_in", "input_blocks.0.0"),
        ("time_embedding.linear_1.weight", "time_embed.0.weight"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2.bias", "label_emb.0.2.bias"),
        ("conv_norm_out.weight", "out.0.weight"),
        ("conv_out", "out.2"),
    ],
)
def test_unet_module_to_ldm_sdxl(path: str, expected: str) -> None:
    assert unet_module_to_ldm(path, SDXL_LAYOUT) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [  # the real SD1.5 UNet: 4 levels, attention in all down levels but the last
        (f"down_blocks.0.attentions.0.{TB}.0.attn1.to_q", f"input_blocks.1.1.{TB}.0.attn1.to_q"),
        ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
        ("down_blocks.2.downsamplers.0.conv", "input_blocks.9.0.op"),
        ("down_blocks.3.resnets.1", "input_blocks.11.0"),
        ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
        ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
        ("up_blocks.2.upsamplers.0.conv", "output_blocks.8.2.conv"),
        ("up_blocks.3.attentions.2.proj_out", "output_blocks.11.1.proj_out"),
        ("up_blocks.3.resnets.2.conv_shortcut.weight", "output_blocks.11.0.skip_connection.weight"),
    ],
)
def test_unet_module_to_ldm_sd15(path: str, expected: str) -> None:
    assert unet_module_to_ldm(path, SD15_REAL_LAYOUT) == expected


def test_unet_module_to_ldm_is_general_in_layers_per_block() -> None:
    one = UNetLayout(1, down_has_attention=(True,) * 4, up_has_attention=(True,) * 4)
    assert unet_module_to_ldm("down_blocks.2.resnets.0", one) == "input_blocks.5.0"
    assert unet_module_to_ldm("down_blocks.1.downsamplers.0.conv", one) == "input_blocks.4.0.op"
    assert unet_module_to_ldm("up_blocks.1.attentions.1", one) == "output_blocks.3.1"
    assert unet_module_to_ldm("up_blocks.1.upsamplers.0.conv", one) == "output_blocks.3.2.conv"
    three = UNetLayout(3, down_has_attention=(False, True), up_has_attention=(True, False))
    assert unet_module_to_ldm("down_blocks.1.attentions.2", three) == "input_blocks.7.1"
    assert unet_module_to_ldm("down_blocks.0.downsamplers.0.conv", three) == "input_blocks.4.0.op"
    assert unet_module_to_ldm("up_blocks.0.upsamplers.0.conv", three) == "output_blocks.3.2.conv"
    assert unet_module_to_ldm("up_blocks.1.resnets.3", three) == "output_blocks.7.0"


@pytest.mark.parametrize(
    "path",
    [
        "down_blocks.2.downsamplers.0.conv",  # the deepest level does not downsample
        "up_blocks.2.upsamplers.0.conv",  # nor does the last up level upsample
        "down_blocks.0.attentions.0.proj_in",  # SDXL's first level has no attention
        "up_blocks.2.attentions.0.proj_in",
        "down_blocks.0.resnets.2",  # two layers per down level
        "up_blocks.0.resnets.3",  # three per up level
        "down_blocks.3.resnets.0",
        "down_blocks.0.resnets.0.nonsense",
        "mid_block.resnets.2",
        "down_blocks.1",
        "add_time_proj",
    ],
)
def test_unet_module_to_ldm_rejects_paths_outside_the_layout(path: str) -> None:
    with pytest.raises(ValueError):
        unet_module_to_ldm(path, SDXL_LAYOUT)


def test_unet_layout_from_fixture_configs(loaded, tiny: TinyModel) -> None:
    layout = UNetLayout.from_config(loaded[0].unet.config)
    if tiny.family == "sdxl":
        assert layout == SDXL_LAYOUT
    else:
        assert layout == UNetLayout(2, down_has_attention=(True, False), up_has_attention=(False, True))


# ---------------------------------------------------------------- other converters


def test_clip_l_output_always_carries_text_model() -> None:
    weight = torch.arange(6.0).reshape(2, 3)
    flat = clip_l_to_ldm({"encoder.layers.0.mlp.fc1.weight": weight})
    nested = clip_l_to_ldm({"text_model.encoder.layers.0.mlp.fc1.weight": weight})
    assert flat == nested == {SD1_CLIP_PREFIX + "text_model.encoder.layers.0.mlp.fc1.weight": weight}
    with pytest.raises(ValueError):
        clip_l_to_ldm({"text_projection.weight": weight})


def test_open_clip_fuses_qkv_in_order() -> None:
    q, k, v = (torch.full((2, 2), float(n)) for n in (1, 2, 3))
    sd = {f"text_model.encoder.layers.0.self_attn.{n}_proj.weight": t for n, t in zip("qkv", (q, k, v))}
    out = clip_g_to_open_clip(sd, prefix="")
    assert list(out) == ["transformer.resblocks.0.attn.in_proj_weight"]
    assert torch.equal(out["transformer.resblocks.0.attn.in_proj_weight"], torch.cat([q, k, v]))
    with pytest.raises(ValueError):
        clip_g_to_open_clip({"text_model.encoder.layers.0.self_attn.q_proj.bias": torch.zeros(2)})


def test_vae_decoder_levels_are_reversed_and_attention_becomes_conv() -> None:
    linear = torch.ones(4, 4)
    sd = {
        "decoder.up_blocks.0.upsamplers.0.conv.weight": torch.zeros(1),
        "decoder.up_blocks.2.resnets.1.conv_shortcut.bias": torch.zeros(1),
        "decoder.up_blocks.3.resnets.0.norm1.weight": torch.zeros(1),
        "encoder.mid_block.attentions.0.to_out.0.weight": linear,
        "encoder.mid_block.attentions.0.group_norm.bias": torch.zeros(4),
        "encoder.mid_block.resnets.1.conv2.weight": torch.zeros(1),
        "encoder.conv_norm_out.weight": torch.zeros(1),
    }
    out = vae_to_ldm(sd, prefix="")
    assert set(out) == {
        "decoder.up.3.upsample.conv.weight",
        "decoder.up.1.block.1.nin_shortcut.bias",
        "decoder.up.0.block.0.norm1.weight",
        "encoder.mid.attn_1.proj_out.weight",
        "encoder.mid.attn_1.norm.bias",
        "encoder.mid.block_2.conv2.weight",
        "encoder.norm_out.weight",
    }
    assert tuple(out["encoder.mid.attn_1.proj_out.weight"].shape) == (4, 4, 1, 1)
    # A subset without the deepest level needs the level count spelled out.
    partial = vae_to_ldm({"decoder.up_blocks.0.upsamplers.0.conv.weight": linear}, prefix="", num_levels=4)
    assert list(partial) == ["decoder.up.3.upsample.conv.weight"]
    with pytest.raises(ValueError):
        vae_to_ldm({"encoder.mid_block.attentions.1.to_q.weight": linear})


# ---------------------------------------------------------------- determinism and idempotency


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_builds_are_byte_identical(family: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    first: TinyModel = request.getfixturevalue(f"tiny_{family}")
    second = {"sd15": build_sd15, "sdxl": build_sdxl}[family](tmp_path / family)
    assert second.single_file != first.single_file
    assert second.single_file.read_bytes() == first.single_file.read_bytes()
    unet_file = Path("unet") / "diffusion_pytorch_model.safetensors"
    assert (second.diffusers_dir / unet_file).read_bytes() == (first.diffusers_dir / unet_file).read_bytes()


def test_second_build_reuses_the_first(tmp_path: Path) -> None:
    first = build_sd15(tmp_path / "m")
    files = sorted(p for p in (tmp_path / "m").rglob("*") if p.is_file())
    before = {p: os.stat(p).st_mtime_ns for p in files}
    again = build_sd15(tmp_path / "m")
    assert again == first
    assert sorted(p for p in (tmp_path / "m").rglob("*") if p.is_file()) == files
    assert {p: os.stat(p).st_mtime_ns for p in files} == before
    # A build missing its stamp (say, interrupted) is not trusted: it is rebuilt, to the same bytes.
    original = first.single_file.read_bytes()
    stamp = next(p for p in files if p.name.endswith("stamp.json"))
    stamp.unlink()
    rebuilt = build_sd15(tmp_path / "m")
    assert stamp.is_file() and os.stat(rebuilt.single_file).st_mtime_ns != before[first.single_file]
    assert rebuilt.single_file.read_bytes() == original
