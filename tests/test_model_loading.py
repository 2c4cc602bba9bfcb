"""Model loading: detection, the three kinds of source, the bundled configs, the vae option, errors.

Everything loads the tiny fixtures for real through diffusers; nothing reaches the Hub.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.fixtures.sd_models import TinyModel
from trainer.checkpoint_layout import clip_g_to_open_clip, vae_to_ldm
from trainer.config import load_training_config
from trainer.errors import TrainerError
from trainer.models import (
    BundledConfigs,
    ModelSpec,
    detect_architecture,
    detect_source,
    load_model,
    read_keys_and_shapes,
    resolve_source,
)
from trainer.models.bundled import CONFIGS_ROOT, SOURCES_FILE
from trainer.models.family_sd import StableDiffusionAdapter


FAMILY = {"sd15": "sd1", "sdxl": "sdxl"}


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def tiny(request: pytest.FixtureRequest) -> TinyModel:
    """Each tiny model in turn."""
    return request.getfixturevalue(f"tiny_{request.param}")


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().float() for key, value in module.state_dict().items()}


def _assert_same_weights(left: torch.nn.Module, right: torch.nn.Module) -> None:
    a, b = _state(left), _state(right)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _bundled_from_fixture(tiny: TinyModel, root: Path, calls: list[tuple[str, str]]) -> BundledConfigs:
    """Bundled configs made from the fixture's configs, with a tokenizer 'fetch' that copies the fixture's.

    This is how the bundled-config path runs for real offline: same code, tiny architecture.
    """
    kind = "sd15" if tiny.family == "sd15" else "sdxl"
    bundle = root / "bundle" / kind
    shutil.copytree(tiny.config_dir, bundle, ignore=shutil.ignore_patterns("tokenizer*"))
    components = ["tokenizer"] + (["tokenizer_2"] if tiny.family == "sdxl" else [])
    sources = {name: {"repo_id": f"fixture/{name}", "subfolder": name} for name in components}
    (bundle / SOURCES_FILE).write_text(json.dumps(sources))

    def fetch(repo_id: str, subfolder: str, dest: Path) -> None:
        calls.append((repo_id, subfolder))
        shutil.copytree(tiny.config_dir / subfolder, dest)

    return BundledConfigs(root=root / "bundle", cache_dir=root / "cache", fetch_tokenizer=fetch)


# ---------------------------------------------------------------- loading


def test_folder_and_single_file_load_the_same_model(tiny: TinyModel) -> None:
    folder = load_model(ModelSpec(str(tiny.diffusers_dir)))
    single = load_model(ModelSpec(str(tiny.single_file), model_config=str(tiny.config_dir)))
    assert folder.family == single.family == FAMILY[tiny.family]
    assert folder.architecture.source_kind == "diffusers_folder"
    assert single.architecture.source_kind == "single_file"
    assert single.model_name == tiny.single_file.name and folder.model_name == "diffusers"
    _assert_same_weights(folder.unet, single.unet)
    _assert_same_weights(folder.vae, single.vae)
    assert len(folder.text_encoders) == len(single.text_encoders) == (2 if tiny.family == "sdxl" else 1)
    for left, right in zip(folder.text_encoders, single.text_encoders):
        _assert_same_weights(left, right)
    for loaded in (folder, single):
        for module in [loaded.unet, loaded.vae, *loaded.text_encoders]:
            assert not module.training
            assert not any(p.requires_grad for p in module.parameters())
        assert loaded.noise_scheduler.config.prediction_type == "epsilon"
        assert loaded.adapter.family == loaded.family


def test_bundled_configs_path_runs_from_single_file_for_real(tiny: TinyModel, tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []
    bundled = _bundled_from_fixture(tiny, tmp_path, calls)
    loaded = load_model(ModelSpec(str(tiny.single_file)), bundled=bundled)
    reference = load_model(ModelSpec(str(tiny.diffusers_dir)))
    _assert_same_weights(loaded.unet, reference.unet)
    for left, right in zip(loaded.text_encoders, reference.text_encoders):
        _assert_same_weights(left, right)
    expected = [("fixture/tokenizer", "tokenizer")] + ([("fixture/tokenizer_2", "tokenizer_2")] if tiny.family == "sdxl" else [])
    assert calls == expected
    # The prepared folder is cached: a second load fetches nothing.
    load_model(ModelSpec(str(tiny.single_file)), bundled=bundled)
    assert len(calls) == len(expected)
    assert [ids.tolist() for ids in loaded.adapter.tokenize(["a photo of the cat"])] == [
        ids.tolist() for ids in reference.adapter.tokenize(["a photo of the cat"])
    ]


def test_bundled_configs_offline_say_to_set_model_config(tmp_path: Path) -> None:
    # HF_HUB_OFFLINE=1 and a private, empty Hub cache (conftest): the real fetch must fail clearly.
    with pytest.raises(TrainerError) as caught:
        BundledConfigs(cache_dir=tmp_path).prepare("sdxl")
    assert caught.value.option == "model_config"
    assert "stabilityai/stable-diffusion-xl-base-1.0" in caught.value.message
    assert "model_config" in caught.value.hint
    assert not list(tmp_path.glob("*sdxl*")), "a failed fetch must leave no half-built folder"


def test_checkpoint_ckpt_file_loads_like_safetensors(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(tiny_sd15.single_file))}, ckpt)
    assert detect_architecture(read_keys_and_shapes(ckpt)).family == "sd1"
    loaded = load_model(ModelSpec(str(ckpt), model_config=str(tiny_sd15.config_dir)))
    _assert_same_weights(loaded.unet, load_model(ModelSpec(str(tiny_sd15.diffusers_dir))).unet)


def test_dtype_and_vae_precision(tiny_sdxl: TinyModel, tiny_sd15: TinyModel) -> None:
    half = load_model(ModelSpec(str(tiny_sdxl.diffusers_dir)), dtype=torch.float16)
    assert half.unet.dtype == torch.float16
    assert all(te.dtype == torch.float16 for te in half.text_encoders)
    assert half.vae.dtype == torch.float32  # SDXL VAE with force_upcast stays fp32 in fp16
    bf16 = load_model(ModelSpec(str(tiny_sdxl.diffusers_dir)), dtype=torch.bfloat16)
    assert bf16.vae.dtype == torch.bfloat16
    kept = load_model(ModelSpec(str(tiny_sd15.diffusers_dir), no_half_vae=True), dtype=torch.bfloat16)
    assert kept.vae.dtype == torch.float32 and kept.unet.dtype == torch.bfloat16


def test_scheduler_follows_v_parameterization_and_zero_terminal_snr(tiny_sd15: TinyModel) -> None:
    plain = load_model(ModelSpec(str(tiny_sd15.diffusers_dir)))
    assert plain.noise_scheduler.alphas_cumprod[-1] > 1e-3
    vpred = load_model(ModelSpec(str(tiny_sd15.diffusers_dir), v_parameterization=True, zero_terminal_snr=True))
    assert vpred.v_parameterization
    assert vpred.noise_scheduler.config.prediction_type == "v_prediction"
    assert float(vpred.noise_scheduler.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-6)
    assert any("epsilon" in warning for warning in vpred.warnings)  # the fixture's scheduler says epsilon


def test_model_spec_from_training_config(tmp_path: Path) -> None:
    config = load_training_config(overrides={
        "pretrained_model_name_or_path": str(tmp_path / "m.safetensors"), "v_parameterization": True,
        "clip_skip": 2, "max_token_length": 150, "no_half_vae": True,
    }, cwd=tmp_path)
    spec = ModelSpec.from_config(config)
    assert spec.pretrained_model_name_or_path == str(tmp_path / "m.safetensors")
    assert (spec.v_parameterization, spec.clip_skip, spec.max_token_length, spec.no_half_vae) == (True, 2, 150, True)
    assert spec.model_config is None and spec.vae is None and not spec.v2
    with pytest.raises(TrainerError, match="No base model"):
        ModelSpec.from_config(load_training_config(cwd=tmp_path))


def _tiny_sd2(tiny_sd15: TinyModel, tmp_path: Path) -> tuple[Path, Path]:
    """An SD2-layout single file (OpenCLIP-style text encoder keys) and its config folder, from the SD1.5 fixture.

    The text encoder's weights go under ``cond_stage_model.model.`` in OpenCLIP's names, as in
    real SD2 files; the config says ``gelu`` as OpenCLIP ViT-H does.
    """
    from transformers import CLIPTextModel

    tensors = {k: v for k, v in load_file(str(tiny_sd15.single_file)).items() if not k.startswith("cond_stage_model.")}
    text_encoder = CLIPTextModel.from_pretrained(tiny_sd15.diffusers_dir / "text_encoder", local_files_only=True)
    tensors.update(clip_g_to_open_clip(text_encoder.state_dict(), prefix="cond_stage_model.model."))
    single = tmp_path / "sd2_tiny.safetensors"
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(single))
    config = tmp_path / "sd2_config"
    shutil.copytree(tiny_sd15.config_dir, config)
    te_config = config / "text_encoder" / "config.json"
    te_config.write_text(json.dumps({**json.loads(te_config.read_text()), "hidden_act": "gelu"}))
    return single, config


def test_sd2_single_file_loads_through_the_open_clip_layout(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    single, config = _tiny_sd2(tiny_sd15, tmp_path)
    architecture = detect_architecture(read_keys_and_shapes(single))
    assert architecture.family == "sd2" and "OpenCLIP" in architecture.evidence
    loaded = load_model(ModelSpec(str(single), model_config=str(config), v2=True, v_parameterization=True))
    assert loaded.family == "sd2" and not loaded.warnings
    assert loaded.adapter.base_model_version == "sd_v2_v"
    assert loaded.noise_scheduler.config.prediction_type == "v_prediction"
    reference = load_model(ModelSpec(str(tiny_sd15.diffusers_dir)))
    _assert_same_weights(loaded.text_encoders[0], reference.text_encoders[0])
    _assert_same_weights(loaded.unet, reference.unet)
    assert loaded.text_encoders[0].config.hidden_act == "gelu"
    with torch.no_grad():
        assert loaded.adapter.encode_prompts(["a cat"], clip_skip=2).encoder_hidden_states.shape == (1, 77, 32)


# ---------------------------------------------------------------- detection


def test_detect_single_files_and_folders(tiny: TinyModel) -> None:
    family = FAMILY[tiny.family]
    from_file = detect_architecture(read_keys_and_shapes(tiny.single_file), str(tiny.single_file))
    from_folder = detect_source(resolve_source(str(tiny.diffusers_dir)))
    assert from_file.family == from_folder.family == family
    width = 80 if tiny.family == "sdxl" else 32  # te1 + te2 widths for SDXL
    assert from_file.context_dim == from_folder.context_dim == width
    marker = "conditioner.embedders.1.model" if family == "sdxl" else "cond_stage_model.transformer"
    assert marker in from_file.evidence and from_file.has_vae
    assert from_folder.prediction_type == "epsilon"


def _sd_keys(text_encoder_keys: dict[str, tuple[int, ...]], conv_in_channels: int = 4) -> dict[str, tuple[int, ...]]:
    keys = {
        "model.diffusion_model.input_blocks.0.0.weight": (320, conv_in_channels, 3, 3),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3),
    }
    return {**keys, **text_encoder_keys}


def test_detect_sd2_refiner_and_inpainting_from_keys() -> None:
    sd2 = detect_architecture(_sd_keys({"cond_stage_model.model.token_embedding.weight": (49408, 1024)}))
    assert sd2.family == "sd2" and sd2.context_dim == 1024 and "OpenCLIP ViT-H" in sd2.evidence
    with pytest.raises(TrainerError, match="refiner"):
        detect_architecture(_sd_keys({"conditioner.embedders.0.model.text_projection": (1280, 1280)}))
    with pytest.raises(TrainerError, match="9 input channels"):
        detect_architecture(_sd_keys({"cond_stage_model.transformer.text_model.x": (1,)}, conv_in_channels=9))
    with pytest.raises(TrainerError, match="unknown architecture"):
        detect_architecture(_sd_keys({}))


def test_detect_rejects_a_lora_file_and_random_tensors(tmp_path: Path) -> None:
    lora = tmp_path / "my_lora.safetensors"
    save_file({
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }, str(lora))
    with pytest.raises(TrainerError) as caught:
        load_model(ModelSpec(str(lora)))
    assert str(lora) in caught.value.message and "not a Stable Diffusion checkpoint" in caught.value.message
    assert "LoRA" in caught.value.message and "network_weights" in caught.value.hint

    random = tmp_path / "random.safetensors"
    save_file({"some.weight": torch.ones(3)}, str(random))
    with pytest.raises(TrainerError, match="not a Stable Diffusion checkpoint") as caught:
        load_model(ModelSpec(str(random)))
    assert str(random) in caught.value.message


def test_corrupt_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(TrainerError, match="corrupt") as caught:
        load_model(ModelSpec(str(corrupt)))
    assert str(corrupt) in caught.value.message

    missing = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(TrainerError, match="not found") as caught:
        load_model(ModelSpec(str(missing)))
    assert caught.value.option == "pretrained_model_name_or_path" and str(missing) in caught.value.message

    folder = tmp_path / "not_a_model"
    folder.mkdir()
    with pytest.raises(TrainerError, match="model_index.json"):
        load_model(ModelSpec(str(folder)))


def test_hub_repo_offline_gives_a_clear_error() -> None:
    with pytest.raises(TrainerError) as caught:
        load_model(ModelSpec("nobody-here/no-such-model"))
    assert "nobody-here/no-such-model" in caught.value.message and "connection" in caught.value.hint


def test_model_config_of_another_family_is_refused(tiny_sd15: TinyModel, tiny_sdxl: TinyModel) -> None:
    with pytest.raises(TrainerError, match="describes a sdxl model") as caught:
        load_model(ModelSpec(str(tiny_sd15.single_file), model_config=str(tiny_sdxl.config_dir)))
    assert caught.value.option == "model_config"


def test_model_config_without_tokenizer_is_refused(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    config = tmp_path / "configs_only"
    shutil.copytree(tiny_sd15.config_dir, config, ignore=shutil.ignore_patterns("tokenizer"))
    with pytest.raises(TrainerError, match="no tokenizer folder") as caught:
        load_model(ModelSpec(str(tiny_sd15.single_file), model_config=str(config)))
    assert caught.value.option == "model_config"


def test_v2_flag_on_an_sd1_model_warns(tiny_sd15: TinyModel) -> None:
    loaded = load_model(ModelSpec(str(tiny_sd15.diffusers_dir), v2=True))
    assert loaded.family == "sd1"
    assert any("v2 is set" in warning for warning in loaded.warnings)


# ---------------------------------------------------------------- the vae option


def _changed_vae(tiny: TinyModel) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny.diffusers_dir, subfolder="vae", local_files_only=True)
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(1.0)
        vae.encoder.down_blocks[1].resnets[0].conv_shortcut.weight.mul_(-1.0)
    return vae


def test_vae_swap_from_folder_and_original_layout_file(tiny: TinyModel, tmp_path: Path) -> None:
    changed = _changed_vae(tiny)
    folder = tmp_path / "my_vae"
    changed.save_pretrained(folder)
    single = tmp_path / "my_vae.safetensors"
    original_layout = vae_to_ldm(changed.state_dict(), prefix="")
    save_file({key: value.contiguous() for key, value in original_layout.items()}, str(single))

    from_folder = load_model(ModelSpec(str(tiny.diffusers_dir), vae=str(folder)))
    from_file = load_model(ModelSpec(str(tiny.single_file), model_config=str(tiny.config_dir), vae=str(single)))
    for loaded in (from_folder, from_file):
        _assert_same_weights(loaded.vae, changed)
    assert from_file.vae_name == "my_vae.safetensors"
    original = load_model(ModelSpec(str(tiny.diffusers_dir))).vae
    assert not torch.equal(original.decoder.conv_out.bias, from_file.vae.decoder.conv_out.bias)


def test_checkpoint_without_vae_needs_the_vae_option(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    no_vae = tmp_path / "no_vae.safetensors"
    tensors = load_file(str(tiny_sd15.single_file))
    save_file({k: v for k, v in tensors.items() if not k.startswith("first_stage_model.")}, str(no_vae))
    with pytest.raises(TrainerError, match="no VAE") as caught:
        load_model(ModelSpec(str(no_vae), model_config=str(tiny_sd15.config_dir)))
    assert caught.value.option == "vae"
    loaded = load_model(ModelSpec(str(no_vae), model_config=str(tiny_sd15.config_dir),
                                  vae=str(tiny_sd15.diffusers_dir)))
    _assert_same_weights(loaded.vae, load_model(ModelSpec(str(tiny_sd15.diffusers_dir))).vae)


def test_vae_option_rejects_a_lora_file(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    lora = tmp_path / "not_a_vae.safetensors"
    save_file({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(TrainerError, match="LoRA") as caught:
        load_model(ModelSpec(str(tiny_sd15.diffusers_dir), vae=str(lora)))
    assert caught.value.option == "vae"


# ---------------------------------------------------------------- bundled configs and adapters


def _parameters_on_meta(cls, config: dict) -> int:
    with torch.device("meta"):
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind, unet, text", [
    ("sd15", 859_520_964, [123_060_480]),
    ("sd2_512", 865_910_724, [340_387_840]),
    ("sd2_768_v", 865_910_724, [340_387_840]),
    ("sdxl", 2_567_463_684, [123_060_480, 694_659_840]),
])
def test_bundled_configs_describe_the_real_models(kind: str, unet: int, text: list[int]) -> None:
    """Built on the meta device, the bundled architectures have the published parameter counts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    root = CONFIGS_ROOT / kind
    assert _parameters_on_meta(UNet2DConditionModel, UNet2DConditionModel.load_config(root / "unet")) == unet
    assert _parameters_on_meta(AutoencoderKL, AutoencoderKL.load_config(root / "vae")) == 83_653_863
    encoders = [("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)][: len(text)]
    for (name, cls), count in zip(encoders, text):
        assert _parameters_on_meta(cls, CLIPTextConfig.from_pretrained(root / name)) == count
    index = json.loads((root / "model_index.json").read_text())
    sources = json.loads((root / SOURCES_FILE).read_text())
    assert sorted(sources) == sorted(name for name in index if name.startswith("tokenizer"))
    predicted = json.loads((root / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]
    assert predicted == ("v_prediction" if kind == "sd2_768_v" else "epsilon")


def test_adapter_metadata_strings() -> None:
    vae_config = {"block_out_channels": [128, 256, 512, 512], "scaling_factor": 0.18215}
    expected = {
        ("sd1", False): ("sd_v1", "stable-diffusion-v1/lora"),
        ("sd2", False): ("sd_v2", "stable-diffusion-v2-512/lora"),
        ("sd2", True): ("sd_v2_v", "stable-diffusion-v2-768-v/lora"),
    }
    for (family, vpred), (version, arch) in expected.items():
        adapter = StableDiffusionAdapter(family, None, None, vae_config, vpred)
        assert (adapter.base_model_version, adapter.modelspec_architecture) == (version, arch)
        assert adapter.te_prefixes == ["lora_te"] and adapter.vae_scale_factor == 8
        assert adapter.latent_scaling_factor == pytest.approx(0.18215)


def test_sdxl_adapter_metadata_and_unet_lora_paths(tiny_sdxl: TinyModel, tiny_sd15: TinyModel) -> None:
    xl = load_model(ModelSpec(str(tiny_sdxl.diffusers_dir))).adapter
    assert (xl.base_model_version, xl.modelspec_architecture) == ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora")
    assert xl.te_prefixes == ["lora_te1", "lora_te2"]
    assert xl.vae_scale_factor == 8 and xl.latent_scaling_factor == pytest.approx(0.13025)
    path = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    assert xl.unet_lora_path(path) == "input_blocks.4.1.transformer_blocks.0.attn1.to_q"
    assert xl.unet_lora_path("up_blocks.0.attentions.2.proj_out") == "output_blocks.2.1.proj_out"
    sd = load_model(ModelSpec(str(tiny_sd15.diffusers_dir))).adapter
    assert sd.unet_lora_path(path.replace("down_blocks.1", "down_blocks.0")) == path.replace("down_blocks.1", "down_blocks.0")
