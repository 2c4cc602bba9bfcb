"""The LoRA network on the tiny SD1.5 and SDXL models: targets, key names, maths, loading back.

The expected key stems and the merged weights are computed here from the models' own modules,
independently of ``trainer.networks``: the network's forward must equal a copy of the model whose
weights were changed by hand with ``up @ down * alpha / rank``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from tests.fixtures.sd_models import TinyModel
from trainer.checkpoint_layout import UNetLayout, unet_module_to_ldm
from trainer.errors import TrainerError
from trainer.networks import LoRANetwork, unet_target_stems
from trainer.saving import read_lora_file, save_lora_file


TE_PREFIXES = {"sd15": ["lora_te"], "sdxl": ["lora_te1", "lora_te2"]}
CLIP_TARGET_NAMES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1",
                     "mlp.fc2")


# ---------------------------------------------------------------- helpers (also used by test_lora_file)

def load_pipe(tiny: TinyModel):
    """A fresh float32 pipeline of a tiny model."""
    cls = StableDiffusionXLPipeline if tiny.family == "sdxl" else StableDiffusionPipeline
    return cls.from_pretrained(tiny.diffusers_dir)


def text_encoders(pipe) -> list[nn.Module]:
    second = getattr(pipe, "text_encoder_2", None)
    return [pipe.text_encoder] + ([second] if second is not None else [])


def unet_key_for(family: str, unet: nn.Module) -> Callable[[str], str]:
    if family != "sdxl":
        return lambda path: path
    layout = UNetLayout.from_config(unet.config)
    return lambda path: unet_module_to_ldm(path, layout)


def build_network(tiny: TinyModel, pipe, dim: int = 4, alpha: float = 2.0, conv_dim: int | None = None,
                  conv_alpha: float | None = None, seed: int = 0, **kwargs) -> LoRANetwork:
    """A network with random (non-zero) up weights, so its effect is real."""
    torch.manual_seed(seed)
    network = LoRANetwork.create(
        pipe.unet, text_encoders(pipe), TE_PREFIXES[tiny.family], unet_key_for(tiny.family, pipe.unet),
        dim=dim, alpha=alpha, conv_dim=conv_dim, conv_alpha=conv_alpha, **kwargs,
    )
    with torch.no_grad():
        for module in network.loras.values():
            module.lora_up.weight.normal_(0.0, 0.2)
    return network


def expected_unet_stems(family: str, unet: nn.Module, include_conv: bool) -> dict[str, str]:
    """Kohya's default UNet targets, from isinstance checks on diffusers' own block classes."""
    blocks: tuple[type, ...] = (Transformer2DModel,)
    if include_conv:
        blocks += (ResnetBlock2D, Downsample2D, Upsample2D)
    key_for = unet_key_for(family, unet)
    stems = {}
    for block_path, block in unet.named_modules():
        if not isinstance(block, blocks):
            continue
        for child_path, child in block.named_modules():
            one_by_one = isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1)
            if isinstance(child, nn.Linear) or one_by_one or (isinstance(child, nn.Conv2d) and include_conv):
                path = f"{block_path}.{child_path}"
                stems["lora_unet_" + key_for(path).replace(".", "_")] = path
    return stems


def expected_te_stems(encoder: nn.Module, prefix: str) -> dict[str, str]:
    stems = {}
    for path, module in encoder.named_modules():
        if isinstance(module, nn.Linear) and path.endswith(CLIP_TARGET_NAMES) and ".layers." in path:
            spelled = path if path.startswith("text_model.") else "text_model." + path
            stems[f"{prefix}_" + spelled.replace(".", "_")] = path
    return stems


def stems_of(tensors: Mapping[str, torch.Tensor], prefix: str) -> set[str]:
    return {key.split(".")[0] for key in tensors if key.startswith(prefix + "_")}


def hand_merge(model: nn.Module, tensors: Mapping[str, torch.Tensor], stem_to_path: Mapping[str, str]) -> nn.Module:
    """A copy of ``model`` with ``up @ down * alpha / rank`` added to each named module's weight."""
    merged = copy.deepcopy(model)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for stem, path in stem_to_path.items():
            down = tensors[f"{stem}.lora_down.weight"].float()
            up = tensors[f"{stem}.lora_up.weight"].float()
            rank = down.shape[0]
            alpha = tensors[f"{stem}.alpha"].float().item()
            weight = modules[path].weight
            delta = (up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)).reshape(weight.shape)
            weight += delta * (alpha / rank)
    return merged


def unet_inputs(tiny: TinyModel, unet: nn.Module, seed: int = 1) -> dict:
    """Fixed latents, timestep and conditioning for one UNet call (SDXL: with its added conditions)."""
    generator = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    inputs = {
        "sample": torch.randn(1, 4, 8, 8, generator=generator),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 8, cross, generator=generator),
    }
    if tiny.family == "sdxl":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(1, pooled, generator=generator),
            "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]),
        }
    return inputs


def run_unet(unet: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return unet(**inputs).sample


def all_expected_stems(tiny: TinyModel, pipe, include_conv: bool) -> dict[str, str]:
    stems = expected_unet_stems(tiny.family, pipe.unet, include_conv)
    for encoder, prefix in zip(text_encoders(pipe), TE_PREFIXES[tiny.family]):
        stems.update(expected_te_stems(encoder, prefix))
    return stems


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def tiny(request: pytest.FixtureRequest) -> TinyModel:
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture(scope="module")
def pipe(tiny: TinyModel):
    """One pipeline per family for this module; tests apply networks and must remove them."""
    return load_pipe(tiny)


# ---------------------------------------------------------------- targets and key names

@pytest.mark.parametrize("conv_dim", [None, 3], ids=["lora", "locon"])
def test_saved_stems_are_kohyas_default_targets(tiny: TinyModel, pipe, conv_dim, tmp_path: Path) -> None:
    network = build_network(tiny, pipe, conv_dim=conv_dim)
    file = tmp_path / "x.safetensors"
    save_lora_file(file, network.kohya_state_dict(), {})
    tensors, _ = read_lora_file(file)

    expected_unet = expected_unet_stems(tiny.family, pipe.unet, include_conv=conv_dim is not None)
    assert stems_of(tensors, "lora_unet") == set(expected_unet)
    assert set(unet_target_stems(pipe.unet, unet_key_for(tiny.family, pipe.unet), conv_dim is not None)) == set(
        expected_unet
    )
    for encoder, prefix in zip(text_encoders(pipe), TE_PREFIXES[tiny.family]):
        assert stems_of(tensors, prefix) == set(expected_te_stems(encoder, prefix))
        assert f"{prefix}_text_model_encoder_layers_0_self_attn_q_proj" in stems_of(tensors, prefix)
    if tiny.family == "sdxl":
        assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors
        assert not any("down_blocks" in key or "up_blocks" in key or "mid_block" in key for key in tensors)
        if conv_dim:
            assert "lora_unet_input_blocks_3_0_op.lora_down.weight" in tensors  # the first downsampler
            assert "lora_unet_output_blocks_2_2_conv.lora_down.weight" in tensors  # the first upsampler
    else:
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha" in tensors
        assert "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight" in tensors


def test_every_stem_has_down_up_alpha_with_the_right_shapes(tiny: TinyModel, pipe) -> None:
    tensors = build_network(tiny, pipe, dim=4, alpha=2.0, conv_dim=3, conv_alpha=1.5).kohya_state_dict()
    # (stem, the base module it wraps) for every expected target, UNet and text encoders.
    parts = [(pipe.unet, expected_unet_stems(tiny.family, pipe.unet, include_conv=True))]
    for encoder, prefix in zip(text_encoders(pipe), TE_PREFIXES[tiny.family]):
        parts.append((encoder, expected_te_stems(encoder, prefix)))
    expected = [(stem, dict(model.named_modules())[path]) for model, stems in parts for stem, path in stems.items()]
    assert len(tensors) == 3 * len(expected)
    for stem, base in expected:
        down, up, alpha = (tensors[f"{stem}.{name}"] for name in ("lora_down.weight", "lora_up.weight", "alpha"))
        assert alpha.ndim == 0
        if isinstance(base, nn.Linear):
            assert down.shape == (4, base.in_features) and up.shape == (base.out_features, 4)
            assert alpha.item() == 2.0
        else:
            kernel = tuple(base.kernel_size)
            rank = 4 if kernel == (1, 1) else 3  # 3x3 convs take conv_dim, 1x1 convs network_dim
            assert down.shape == (rank, base.in_channels, *kernel)
            assert up.shape == (base.out_channels, rank, 1, 1)
            assert alpha.item() == (2.0 if kernel == (1, 1) else 1.5)


# ---------------------------------------------------------------- the maths

@pytest.mark.parametrize("conv_dim", [None, 3], ids=["lora", "locon"])
def test_network_forward_equals_hand_merged_weights(tiny: TinyModel, pipe, conv_dim) -> None:
    inputs = unet_inputs(tiny, pipe.unet)
    base = run_unet(pipe.unet, inputs)
    network = build_network(tiny, pipe, conv_dim=conv_dim, conv_alpha=2.0)
    merged = hand_merge(pipe.unet, network.kohya_state_dict(),
                        expected_unet_stems(tiny.family, pipe.unet, include_conv=conv_dim is not None))
    network.apply()
    try:
        with_lora = run_unet(pipe.unet, inputs)
    finally:
        network.remove()
    expected = run_unet(merged, inputs)
    assert (with_lora - base).abs().max() > 1e-2  # the LoRA really changes the output
    torch.testing.assert_close(with_lora, expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(run_unet(pipe.unet, inputs), base, atol=0, rtol=0)  # remove() restored it


def test_text_encoder_forward_equals_hand_merged(tiny: TinyModel, pipe) -> None:
    network = build_network(tiny, pipe)
    tensors = network.kohya_state_dict()
    ids = torch.tensor([[0, 5, 9, 14, 2, 1]])
    for encoder, prefix in zip(text_encoders(pipe), TE_PREFIXES[tiny.family]):
        merged = hand_merge(encoder, tensors, expected_te_stems(encoder, prefix))
        network.apply()
        try:
            with torch.no_grad():
                ours = encoder(ids).last_hidden_state
        finally:
            network.remove()
        with torch.no_grad():
            torch.testing.assert_close(ours, merged(ids).last_hidden_state, atol=2e-5, rtol=1e-4)


def test_fresh_network_changes_nothing_and_multiplier_scales(tiny: TinyModel, pipe) -> None:
    inputs = unet_inputs(tiny, pipe.unet)
    base = run_unet(pipe.unet, inputs)
    fresh = LoRANetwork.create(pipe.unet, [], [], unet_key_for(tiny.family, pipe.unet), dim=4, alpha=4,
                               train_text_encoder=False)
    assert all(m.part == "unet" for m in fresh.loras.values())
    fresh.apply()
    try:
        torch.testing.assert_close(run_unet(pipe.unet, inputs), base, atol=0, rtol=0)
    finally:
        fresh.remove()
    network = build_network(tiny, pipe)
    network.apply()
    try:
        network.set_multiplier(0.0)
        torch.testing.assert_close(run_unet(pipe.unet, inputs), base, atol=0, rtol=0)
        network.set_multiplier(1.0)
        assert not torch.equal(run_unet(pipe.unet, inputs), base)
    finally:
        network.remove()


def test_dropout_acts_in_training_only(tiny_sd15: TinyModel) -> None:
    pipe = load_pipe(tiny_sd15)
    network = build_network(tiny_sd15, pipe, dropout=0.5, train_text_encoder=False)
    inputs = unet_inputs(tiny_sd15, pipe.unet)
    network.apply()
    network.train()
    first, second = run_unet(pipe.unet, inputs), run_unet(pipe.unet, inputs)
    assert not torch.equal(first, second)
    network.eval()
    torch.testing.assert_close(run_unet(pipe.unet, inputs), run_unet(pipe.unet, inputs), atol=0, rtol=0)


def test_trains_under_autocast_with_gradient_checkpointing(tiny_sdxl: TinyModel) -> None:
    pipe = load_pipe(tiny_sdxl)
    unet = pipe.unet
    unet.requires_grad_(False)
    network = build_network(tiny_sdxl, pipe, conv_dim=2, train_text_encoder=False)
    network.apply()
    inputs = unet_inputs(tiny_sdxl, unet)

    def grads(checkpointing: bool, autocast: bool) -> list[torch.Tensor]:
        network.zero_grad(set_to_none=True)
        if checkpointing:
            unet.enable_gradient_checkpointing()
        else:
            unet.disable_gradient_checkpointing()
        unet.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = unet(**inputs).sample
        out.float().square().mean().backward()
        return [p.grad.clone() for p in network.parameters()]

    plain = grads(checkpointing=False, autocast=False)
    checkpointed = grads(checkpointing=True, autocast=False)
    assert all(g.abs().sum() > 0 for g in plain[:2])
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    mixed = grads(checkpointing=True, autocast=True)
    assert all(torch.isfinite(g).all() for g in mixed)
    assert all(p.dtype == torch.float32 for p in network.parameters())
    network.remove()


# ---------------------------------------------------------------- optimizer groups

def test_param_groups_per_part_with_fallbacks(tiny_sdxl: TinyModel) -> None:
    pipe = load_pipe(tiny_sdxl)
    network = build_network(tiny_sdxl, pipe)
    groups = network.param_groups(unet_lr=None, te_lrs=[1e-5, 2e-5], default_lr=1e-4)
    assert [(g["name"], g["lr"]) for g in groups] == [("unet", 1e-4), ("te1", 1e-5), ("te2", 2e-5)]
    assert sum(len(g["params"]) for g in groups) == len(list(network.parameters()))
    one = network.param_groups(unet_lr=3e-4, te_lrs=5e-5, default_lr=1e-4)
    assert [(g["name"], g["lr"]) for g in one] == [("unet", 3e-4), ("te1", 5e-5), ("te2", 5e-5)]
    frozen = network.param_groups(unet_lr=None, te_lrs=[0.0], default_lr=1e-4)
    assert [g["name"] for g in frozen] == ["unet"]
    assert not any(p.requires_grad for m in network.loras.values() if m.part != "unet" for p in m.parameters())
    torch.optim.AdamW(network.param_groups(None, None, 1e-4))  # a real optimizer accepts the groups
    with pytest.raises(TrainerError) as info:
        network.param_groups(unet_lr=None, te_lrs=[1e-5, 1e-5, 1e-5], default_lr=1e-4)
    assert info.value.option == "text_encoder_lr"
    with pytest.raises(TrainerError):
        network.param_groups(unet_lr=0, te_lrs=0, default_lr=1e-4)


# ---------------------------------------------------------------- loading back (network_weights)

def test_load_round_trip_gives_identical_outputs(tiny: TinyModel, pipe, tmp_path: Path) -> None:
    trained = build_network(tiny, pipe, conv_dim=3, conv_alpha=1.0, seed=3)
    file = tmp_path / "trained.safetensors"
    save_lora_file(file, trained.kohya_state_dict(), {})
    inputs = unet_inputs(tiny, pipe.unet)
    trained.apply()
    try:
        expected = run_unet(pipe.unet, inputs)
    finally:
        trained.remove()

    fresh = LoRANetwork.create(pipe.unet, text_encoders(pipe), TE_PREFIXES[tiny.family],
                               unet_key_for(tiny.family, pipe.unet), dim=4, alpha=7.0, conv_dim=3, conv_alpha=5.0)
    report = fresh.load_weights_file(file)
    assert report.loaded == len(fresh.loras) and report.missing == ()
    fresh.apply()
    try:
        torch.testing.assert_close(run_unet(pipe.unet, inputs), expected, atol=0, rtol=0)
    finally:
        fresh.remove()
    # The file's alpha wins over the configured one, so the loaded network saves what it read.
    saved = trained.kohya_state_dict()
    reloaded = fresh.kohya_state_dict()
    assert reloaded.keys() == saved.keys()
    for key, value in reloaded.items():
        torch.testing.assert_close(value, saved[key], atol=0, rtol=0)


def test_load_refuses_rank_mismatch_and_foreign_keys(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    pipe = load_pipe(tiny_sd15)
    file = tmp_path / "rank8.safetensors"
    save_lora_file(file, build_network(tiny_sd15, pipe, dim=8).kohya_state_dict(), {})
    rank4 = build_network(tiny_sd15, pipe, dim=4)
    before = {k: v.clone() for k, v in rank4.kohya_state_dict().items()}
    with pytest.raises(TrainerError) as info:
        rank4.load_weights_file(file)
    assert str(file) in str(info.value) and "network_dim" in str(info.value) and "8" in info.value.hint
    assert info.value.option == "network_weights"
    for key, value in rank4.kohya_state_dict().items():  # nothing was half-loaded
        torch.testing.assert_close(value, before[key], atol=0, rtol=0)

    unet_only = build_network(tiny_sd15, pipe, dim=8, train_text_encoder=False)
    with pytest.raises(TrainerError, match="does not train"):
        unet_only.load_weights_file(file)  # the file's text-encoder keys have no module here

    tensors, _ = read_lora_file(file)
    stem = next(iter(tensors)).split(".")[0]
    tensors[f"{stem}.hada_w1_a"] = torch.zeros(2, 2)
    with pytest.raises(TrainerError, match="not a plain LoRA"):
        build_network(tiny_sd15, pipe, dim=8).load_kohya_state_dict(tensors, source="loha.safetensors")
    with pytest.raises(TrainerError, match="does not exist"):
        rank4.load_weights_file(tmp_path / "missing.safetensors")


def test_load_without_alpha_means_alpha_equals_rank(tiny_sd15: TinyModel) -> None:
    pipe = load_pipe(tiny_sd15)
    network = build_network(tiny_sd15, pipe, dim=4, alpha=1.0, train_text_encoder=False)
    tensors = {k: v for k, v in network.kohya_state_dict().items() if not k.endswith(".alpha")}
    network.load_kohya_state_dict(tensors)
    assert all(m.scale == 1.0 for m in network.loras.values())
    assert all(v.item() == 4.0 for k, v in network.kohya_state_dict().items() if k.endswith(".alpha"))
