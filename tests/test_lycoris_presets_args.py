"""LyCORIS presets and network_args: which modules a preset selects, and how bad settings are refused.

Preset module sets are computed here from diffusers' and transformers' own classes, independently
of ``trainer.networks``; the training helpers come from ``tests/test_lycoris_networks.py``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn

from tests.fixtures.sd_models import TinyModel
from tests.test_lora_network import (
    TE_PREFIXES, expected_te_stems, expected_unet_stems, load_pipe, text_encoders, unet_key_for,
)
from tests.test_lycoris_networks import members_by_stem, run
from tests.test_train_end_to_end import load_tensors
from trainer.config import load_training_config
from trainer.errors import TrainerError
from trainer.networks.lycoris_args import parse_lycoris_args
from trainer.networks.lycoris_network import create_lycoris_network
from trainer.networks.lycoris_presets import builtin_presets, load_preset, preset_from_dict
from trainer.options.rules import check_config


def linear_or_conv_inside(model: nn.Module, classes: tuple[type, ...], key_for, prefix: str,
                          conv3x3: bool = True) -> set[str]:
    stems = set()
    for block_path, block in model.named_modules():
        if not isinstance(block, classes):
            continue
        for child_path, child in block.named_modules():
            big = isinstance(child, nn.Conv2d) and child.kernel_size != (1, 1)
            if isinstance(child, nn.Linear) or (isinstance(child, nn.Conv2d) and (conv3x3 or not big)):
                stems.add(f"{prefix}_" + key_for(f"{block_path}.{child_path}").replace(".", "_"))
    return stems


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_named_presets_give_the_documented_module_sets(family: str, request) -> None:
    tiny: TinyModel = request.getfixturevalue(f"tiny_{family}")
    pipe = load_pipe(tiny)
    unet, encoders, prefixes = pipe.unet, text_encoders(pipe), TE_PREFIXES[family]
    key_for = unet_key_for(family, unet)
    locon = set(expected_unet_stems(family, unet, include_conv=True))
    lora = set(expected_unet_stems(family, unet, include_conv=False))
    te_all = {stem for e, p in zip(encoders, prefixes) for stem in expected_te_stems(e, p)}
    te_attn = {stem for stem in te_all if "_self_attn_" in stem}
    unet_attn = linear_or_conv_inside(unet, (Attention,), key_for, "lora_unet")
    resnet_linear = linear_or_conv_inside(unet, (ResnetBlock2D,), key_for, "lora_unet", conv3x3=False)
    conv_blocks = linear_or_conv_inside(unet, (ResnetBlock2D, Downsample2D, Upsample2D), key_for, "lora_unet")
    expected = {
        "full": locon | te_all,
        "attn-mlp": lora | te_all,
        "attn-only": unet_attn | te_attn,
        "unet-only": locon,
        "full-lin": lora | resnet_linear | te_all,
        "unet-transformer-only": lora,
        "unet-convblock-only": conv_blocks,
    }
    assert set(builtin_presets()) == set(expected)
    settings, _ = parse_lycoris_args(["algo=locon"])
    for name, stems in expected.items():
        network = create_lycoris_network(unet, encoders, prefixes, settings, load_preset(name), key_for, dim=2, alpha=1)
        assert set(network.loras) == stems, name
    assert len(unet_attn) and unet_attn < lora and te_attn < te_all  # the sets really differ


def test_a_preset_file_selects_by_name_class_and_exclusion_and_trains(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    preset = tmp_path / "mid_and_mlp.toml"
    preset.write_text('enable_conv = false\nunet_target_module = []\nunet_target_name = ["mid_block\\\\..*"]\n'
                      'text_encoder_target_module = ["CLIPMLP"]\nexclude_name = [".*attn2.*"]\n', encoding="utf-8")
    session, path = run(tmp_path, tiny_sd15, ["algo=loha", f"preset={preset}"])
    stems = set(members_by_stem(load_tensors(path)))
    unet = session.model.unet
    expected = {
        "lora_unet_" + p.replace(".", "_") for p, m in unet.named_modules()
        if p.startswith("mid_block.") and "attn2" not in p
        and (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)))
    }
    encoder = session.model.text_encoders[0]
    expected |= {stem for stem in expected_te_stems(encoder, "lora_te") if "_mlp_" in stem}
    assert stems == expected
    assert any("mid_block_attentions_0_transformer_blocks_0_attn1" in stem for stem in stems)


def test_preset_errors_name_the_problem(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match="neither a built-in preset") as unknown:
        load_preset("no-such-preset")
    assert unknown.value.option == "network_args" and "attn-mlp" in unknown.value.hint
    with pytest.raises(TrainerError, match="module_algo_map"):
        preset_from_dict({"unet_target_module": ["Transformer2DModel"], "module_algo_map": {}}, "mine.toml")
    with pytest.raises(TrainerError, match="must be a list of strings"):
        preset_from_dict({"unet_target_module": "Transformer2DModel"}, "mine.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("enable_conv = [", encoding="utf-8")
    with pytest.raises(TrainerError, match="cannot be read"):
        load_preset(str(broken))
    # A preset written for lycoris' own class names matches nothing in a diffusers model.
    pipe = load_pipe(tiny_sd15)
    settings, _ = parse_lycoris_args(["algo=locon"])
    foreign = preset_from_dict({"unet_target_module": ["CrossAttention"], "text_encoder_target_module": []}, "old")
    with pytest.raises(TrainerError, match="selects no layer"):
        create_lycoris_network(pipe.unet, text_encoders(pipe), TE_PREFIXES["sd15"], settings, foreign)


# ---------------------------------------------------------------- arguments and rules

@pytest.mark.parametrize("args,message", [
    (["algo=magic"], "not a LyCORIS algorithm"),
    (["algo=dylora"], "not available with lycoris.kohya"),
    (["algo=ia3", "dora_wd=True"], "does not exist for algo=ia3"),
    (["algo=loha", "conv_dimm=4"], "not a lycoris.kohya setting"),
    (["algo=loha", "dora_wd=maybe"], "must be True or False"),
    (["algo=lokr", "factor=0"], "factor must be -1"),
    (["rank_dropout=1.5"], "between 0 and 1"),
    (["loraplus_lr_ratio=4"], "LoRA\\+"),
    (["algo=full", "bypass_mode=True"], "bypass_mode cannot"),
])
def test_bad_network_args_are_refused_with_the_option_named(args: list[str], message: str) -> None:
    with pytest.raises(TrainerError, match=message) as caught:
        parse_lycoris_args(args)
    assert caught.value.option == "network_args"


def test_defaults_follow_lycoris_and_rules_warn_about_idle_keys(tmp_path: Path) -> None:
    settings, warnings = parse_lycoris_args(["algo=LoHa", "use_cp=True", "factor=4"])
    assert (settings.algo, settings.preset, settings.use_tucker, settings.conv_dim) == ("loha", "full", True, None)
    assert warnings == ["network_args factor has no effect with algo=loha."]
    overrides = {"pretrained_model_name_or_path": str(tmp_path), "output_dir": str(tmp_path),
                 "network_module": "lycoris.kohya", "network_args": ["algo=loha", "factor=4"]}
    config = load_training_config(overrides=overrides, cwd=tmp_path)
    assert "network_args factor has no effect with algo=loha." in check_config(config)
    refused = load_training_config(overrides={**overrides, "network_args": ["algo=loha", "preset=unet-only"],
                                              "network_train_text_encoder_only": "true"}, cwd=tmp_path)
    with pytest.raises(TrainerError, match="no text-encoder layers"):
        check_config(refused)


# ---------------------------------------------------------------- network behaviour
