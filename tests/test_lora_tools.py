"""The LoRA utilities (trainer/tools): resize_lora and lora_info, on real files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.errors import TrainerError
from trainer.saving.lora_file import read_lora_file, save_lora_file
from trainer.tools.lora_info import lora_info
from trainer.tools.lora_info import main as info_main
from trainer.tools.resize_lora import resize_lora
from trainer.tools.resize_lora import main as resize_main

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# stem -> (down shape, up shape, alpha or None for a file without alpha)
MODULES: dict[str, tuple[tuple[int, ...], tuple[int, ...], float | None]] = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": ((8, 32), (40, 8), 4.0),
    "lora_unet_down_blocks_0_attentions_0_proj_in": ((8, 32, 1, 1), (32, 8, 1, 1), 1.0),
    "lora_unet_down_blocks_0_resnets_0_conv1": ((6, 16, 3, 3), (24, 6, 1, 1), 3.0),  # LoCon 3x3
    "lora_te_text_model_encoder_layers_0_mlp_fc1": ((8, 20), (36, 8), None),
}


def make_lora(path: Path, seed: int = 0, metadata: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """A LoRA/LoCon file with random non-zero factors (as after training)."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for stem, (down, up, alpha) in MODULES.items():
        tensors[f"{stem}.lora_down.weight"] = torch.randn(down, generator=gen)
        tensors[f"{stem}.lora_up.weight"] = torch.randn(up, generator=gen) * 0.1
        if alpha is not None:
            tensors[f"{stem}.alpha"] = torch.tensor(alpha)
    meta = {"ss_network_dim": "8", "ss_network_alpha": "4", "ss_network_args": json.dumps({"conv_dim": "6", "conv_alpha": "3"})}
    save_lora_file(path, tensors, {**meta, **(metadata or {})})
    return tensors


def delta(tensors: dict[str, torch.Tensor], stem: str) -> torch.Tensor:
    """The applied weight ``up @ down * alpha / r`` in float64, flattened to [out, in*k*k]."""
    down = tensors[f"{stem}.lora_down.weight"].double()
    up = tensors[f"{stem}.lora_up.weight"].double()
    rank = down.shape[0]
    alpha = float(tensors[f"{stem}.alpha"]) if f"{stem}.alpha" in tensors else float(rank)
    return up.reshape(up.shape[0], rank) @ down.reshape(rank, -1) * (alpha / rank)


def test_resize_to_full_rank_reproduces_every_delta(tmp_path: Path) -> None:
    source, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    original = make_lora(source)
    before = source.read_bytes()
    report = resize_lora(source, out, new_rank=8)
    resized, meta = read_lora_file(out)
    assert source.read_bytes() == before  # input untouched
    for stem, (down, _up, _alpha) in MODULES.items():
        assert resized[f"{stem}.lora_down.weight"].shape == torch.Size(down)
        assert float(resized[f"{stem}.alpha"]) == down[0]  # alpha = rank: factors carry the scale
        torch.testing.assert_close(delta(resized, stem), delta(original, stem), rtol=1e-5, atol=1e-6)
    assert all(abs(m.retained_fro - 100.0) < 1e-6 for m in report.modules)
    assert meta["ss_network_dim"] == "8" and meta["ss_network_alpha"] == "8"
    assert "rank 8 -> 8" in meta["ss_training_comment"]


def test_resize_to_lower_rank_is_the_optimal_truncated_svd(tmp_path: Path) -> None:
    source, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    original = make_lora(source, seed=3)
    report = resize_lora(source, out, new_rank=3, new_conv_rank=2)
    resized, meta = read_lora_file(out)
    retained = {m.stem: m for m in report.modules}
    for stem, (down, up, _alpha) in MODULES.items():
        rank = 2 if len(down) == 4 and down[2] == 3 else 3
        full = delta(original, stem)
        u, s, vh = torch.linalg.svd(full, full_matrices=False)  # independent: SVD of the full matrix
        best = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
        assert resized[f"{stem}.lora_down.weight"].shape == torch.Size((rank, *down[1:]))
        assert resized[f"{stem}.lora_up.weight"].shape == torch.Size((up[0], rank, *up[2:]))
        torch.testing.assert_close(delta(resized, stem), best, rtol=1e-5, atol=1e-6)
        expected_pct = 100.0 * float(s[:rank].norm() / s.norm())
        assert retained[stem].retained_fro == pytest.approx(expected_pct, rel=1e-6)
        assert retained[stem].old_rank == down[0] and retained[stem].new_rank == rank
    assert meta["ss_network_dim"] == "3"
    assert json.loads(meta["ss_network_args"])["conv_dim"] == "2"
    assert meta["sshs_model_hash"] != read_lora_file(source)[1]["sshs_model_hash"]


def _file_with_singular_values(path: Path, values: list[float]) -> None:
    """One module whose delta has exactly these singular values (alpha = rank)."""
    gen = torch.Generator().manual_seed(1)
    n = len(values)
    q_out, _ = torch.linalg.qr(torch.randn(30, n, generator=gen, dtype=torch.float64))
    q_in, _ = torch.linalg.qr(torch.randn(20, n, generator=gen, dtype=torch.float64))
    stem = "lora_unet_mid_block_attentions_0_proj_out"
    save_lora_file(path, {
        f"{stem}.lora_up.weight": q_out * torch.tensor(values, dtype=torch.float64),
        f"{stem}.lora_down.weight": q_in.T.contiguous(),
        f"{stem}.alpha": torch.tensor(float(n)),
    }, {})


@pytest.mark.parametrize(("method", "param", "expected"), [
    ("sv_ratio", 5.0, 3),        # keeps s >= 8 / 5 = 1.6: 8, 4, 2
    ("sv_cumulative", 0.9, 3),   # sums 8, 12, 14, 15 of 15.5: 14/15.5 = 0.903
    ("sv_fro", 0.99, 3),         # norms sqrt(64+16+4)=9.165 of 9.247 = 0.991
])
def test_dynamic_methods_choose_the_documented_rank(tmp_path: Path, method: str, param: float, expected: int) -> None:
    source = tmp_path / "in.safetensors"
    _file_with_singular_values(source, [8.0, 4.0, 2.0, 1.0, 0.5])
    report = resize_lora(source, tmp_path / "out.safetensors", new_rank=5, dynamic_method=method, dynamic_param=param)
    assert [m.new_rank for m in report.modules] == [expected]
    meta = read_lora_file(tmp_path / "out.safetensors")[1]
    assert meta["ss_network_dim"] == str(expected) and method in meta["ss_training_comment"]


def test_resize_refuses_to_overwrite_input_or_resize_loha(tmp_path: Path) -> None:
    source = tmp_path / "in.safetensors"
    make_lora(source)
    before = source.read_bytes()
    with pytest.raises(TrainerError, match="input is never overwritten"):
        resize_lora(source, source, new_rank=2, overwrite=True)
    assert source.read_bytes() == before
    loha = tmp_path / "loha.safetensors"
    save_lora_file(loha, {"lora_unet_x.hada_w1_a": torch.ones(4, 2), "lora_unet_x.alpha": torch.tensor(2.0)}, {})
    with pytest.raises(TrainerError, match="loha"):
        resize_lora(loha, tmp_path / "o.safetensors", new_rank=1)
    assert not (tmp_path / "o.safetensors").exists()


def test_resize_cli_prints_retained_norm_and_errors_without_traceback(tmp_path: Path, capsys) -> None:
    source, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    make_lora(source)
    assert resize_main(["--model", str(source), "--save_to", str(out), "--new_rank", "4",
                        "--save_precision", "fp16"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("retained") == len(MODULES) + 1 and "4 modules resized to rank 4..4" in printed
    assert read_lora_file(out)[0][f"{next(iter(MODULES))}.lora_down.weight"].dtype == torch.float16
    done = subprocess.run([sys.executable, "-m", "trainer.tools.resize_lora", "--model", str(source), "--save_to",
                           str(out), "--new_rank", "2"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "already exists" in done.stderr and "--overwrite" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------- lora_info on networks built on the tiny models


def _network_file(path: Path, unet, text_encoders, prefixes, key_for_path, **kwargs) -> None:
    from trainer.networks.lora import LoRANetwork

    network = LoRANetwork.create(unet, text_encoders, prefixes, key_for_path, **kwargs)
    save_lora_file(path, network.kohya_state_dict(), {})


def test_info_reads_sd15_architecture_rank_and_alpha_from_keys(tmp_path: Path, tiny_sd15) -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(tiny_sd15.diffusers_dir / "unet")
    te = CLIPTextModel.from_pretrained(tiny_sd15.diffusers_dir / "text_encoder")
    path = tmp_path / "sd15.safetensors"
    _network_file(path, unet, [te], ["lora_te"], lambda p: p, dim=4, alpha=2.0)
    info = lora_info(path)
    assert (info.architecture, info.architecture_source) == ("SD1/SD2", "key names")
    assert info.algorithms == ["lora"]
    assert {(g.part, g.rank, g.alpha) for g in info.groups} == {("unet", 4, 2.0), ("te", 4, 2.0)}
    assert sum(g.count for g in info.groups) == info.module_count > 0


def test_info_reads_sdxl_sgm_keys_locon_groups_and_metadata(tmp_path: Path, tiny_sdxl, capsys) -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from trainer.checkpoint_layout import UNetLayout, unet_module_to_ldm

    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl.diffusers_dir / "unet")
    te1 = CLIPTextModel.from_pretrained(tiny_sdxl.diffusers_dir / "text_encoder")
    te2 = CLIPTextModelWithProjection.from_pretrained(tiny_sdxl.diffusers_dir / "text_encoder_2")
    layout = UNetLayout.from_config(unet.config)
    bare = tmp_path / "bare.safetensors"
    _network_file(bare, unet, [te1, te2], ["lora_te1", "lora_te2"], lambda p: unet_module_to_ldm(p, layout),
                  dim=8, alpha=4.0, conv_dim=2, conv_alpha=1.0)
    info = lora_info(bare)
    assert (info.architecture, info.architecture_source) == ("SDXL", "key names")
    groups = {(g.part, g.kind): (g.rank, g.alpha) for g in info.groups}
    assert groups[("unet", "conv3x3")] == (2, 1.0) and groups[("te2", "linear")] == (8, 4.0)
    assert {g.part for g in info.groups} == {"unet", "te1", "te2"}

    tensors, _ = read_lora_file(bare)
    tagged = tmp_path / "tagged.safetensors"
    save_lora_file(tagged, tensors, {
        "ss_base_model_version": "sdxl_base_v1-0", "ss_sd_model_name": "illustriousXL.safetensors",
        "ss_network_dim": "8", "ss_learning_rate": "0.0001", "modelspec.trigger_phrase": "zk style",
        "ss_dataset_dirs": json.dumps({"10_mychar": {"n_repeats": 10, "img_count": 3}}),
        "ss_tag_frequency": json.dumps({"10_mychar": {"1girl": 3, "smile": 1}, "5_bg": {"1girl": 2, "sky": 2}}),
    })
    assert info_main([str(tagged), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["architecture_source"] == "ss_base_model_version" and shown["base_model"] == "illustriousXL.safetensors"
    assert shown["trigger_words"] == ["zk style", "mychar"]
    assert shown["top_tags"][0] == ["1girl", 5] and shown["settings"]["ss_learning_rate"] == "0.0001"
    assert info_main([str(tmp_path / "missing.safetensors")]) == 2
    assert "Cannot read" in capsys.readouterr().err


# ---------------------------------------------------------------- extract_lora


def test_extract_recovers_a_known_low_rank_delta(tmp_path: Path, tiny_sd15) -> None:
    import shutil

    from diffusers import UNet2DConditionModel

    from trainer.tools.extract_lora import extract_lora

    tuned_dir = tmp_path / "tuned"
    shutil.copytree(tiny_sd15.diffusers_dir, tuned_dir)
    unet = UNet2DConditionModel.from_pretrained(tuned_dir / "unet")
    gen = torch.Generator().manual_seed(7)
    linear = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    conv = unet.down_blocks[0].resnets[0].conv1
    linear_delta = torch.randn(linear.weight.shape[0], 2, generator=gen) @ torch.randn(2, linear.weight.shape[1], generator=gen) * 0.1
    conv_delta = (torch.randn(conv.weight.shape[0], 1, generator=gen)
                  @ torch.randn(1, conv.weight[0].numel(), generator=gen)).reshape(conv.weight.shape) * 0.1
    with torch.no_grad():
        linear.weight += linear_delta
        conv.weight += conv_delta
    unet.save_pretrained(tuned_dir / "unet")

    out = tmp_path / "extracted.safetensors"
    report = extract_lora(tiny_sd15.diffusers_dir, tuned_dir, out, dim=4, conv_dim=2)
    assert report.parts == ["unet"] and report.skipped_parts == ["te"]  # text encoder untouched: no keys
    tensors, meta = read_lora_file(out)
    assert not any(k.startswith("lora_te") for k in tensors)
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    c = "lora_unet_down_blocks_0_resnets_0_conv1"
    torch.testing.assert_close(delta(tensors, q), linear_delta.double(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(delta(tensors, c), conv_delta.double().reshape(conv_delta.shape[0], -1), rtol=1e-4, atol=1e-5)
    untouched = [s.removesuffix(".alpha") for s in tensors if s.endswith(".alpha") and s[:-6] not in (q, c)]
    assert untouched and max(float(delta(tensors, s).abs().max()) for s in untouched) < 1e-5
    assert tensors[f"{c}.lora_down.weight"].shape[:2] == (2, conv.weight.shape[1])
    assert lora_info(out).architecture == "SD1" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_network_dim"] == "4"


# ---------------------------------------------------------------- merge_lora


def test_merge_into_single_file_matches_runtime_lora_in_diffusers(tmp_path: Path, tiny_sd15) -> None:
    from diffusers import StableDiffusionPipeline

    from trainer.networks.lora import LoRANetwork
    from trainer.tools.merge_lora import merge_lora

    ref = StableDiffusionPipeline.from_pretrained(tiny_sd15.diffusers_dir)
    network = LoRANetwork.create(ref.unet, [], [], lambda p: p, dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0,
                                 train_text_encoder=False)
    gen = torch.Generator().manual_seed(11)
    state = {k: (torch.randn(v.shape, generator=gen) * 0.05 if k.endswith("lora_up.weight") else v)
             for k, v in network.kohya_state_dict().items()}
    lora = tmp_path / "style.safetensors"
    save_lora_file(lora, state, {})
    out = tmp_path / "merged.safetensors"
    report = merge_lora(tiny_sd15.single_file, [lora], out, ratios=[0.7], model_config=str(tiny_sd15.config_dir))
    assert report.merged[str(lora)] == len(network.loras)

    merged = StableDiffusionPipeline.from_single_file(str(out), config=str(tiny_sd15.config_dir))
    ref.load_lora_weights(str(lora), adapter_name="style")
    ref.set_adapters(["style"], [0.7])
    latents = torch.randn((1, 4, 8, 8), generator=gen)
    context = torch.randn((1, 77, merged.unet.config.cross_attention_dim), generator=gen)
    with torch.no_grad():
        expected = ref.unet(latents, 10, encoder_hidden_states=context).sample
        got = merged.unet(latents, 10, encoder_hidden_states=context).sample
        ref.disable_lora()
        base = ref.unet(latents, 10, encoder_hidden_states=context).sample
    assert (expected - base).abs().max() > 1e-3  # the LoRA really changes the output
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- convert_lora


def test_convert_round_trips_sdxl_and_diffusers_loads_the_converted_file(tmp_path: Path, tiny_sdxl, tiny_sd15) -> None:
    from diffusers import StableDiffusionPipeline

    from trainer.networks.lora import LoRANetwork
    from trainer.tools.convert_lora import convert_lora

    # SDXL: kohya (SGM stems, te1/te2, LoCon) -> diffusers -> kohya keeps every delta.
    sdxl_kohya = tmp_path / "sdxl_kohya.safetensors"
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from trainer.checkpoint_layout import UNetLayout, unet_module_to_ldm

    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl.diffusers_dir / "unet")
    te1 = CLIPTextModel.from_pretrained(tiny_sdxl.diffusers_dir / "text_encoder")
    te2 = CLIPTextModelWithProjection.from_pretrained(tiny_sdxl.diffusers_dir / "text_encoder_2")
    layout = UNetLayout.from_config(unet.config)
    _network_file(sdxl_kohya, unet, [te1, te2], ["lora_te1", "lora_te2"], lambda p: unet_module_to_ldm(p, layout),
              dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0)
    original, _ = read_lora_file(sdxl_kohya)
    gen = torch.Generator().manual_seed(5)
    original = {k: torch.randn(v.shape, generator=gen) * 0.1 if k.endswith("lora_up.weight") else v
                for k, v in original.items()}
    save_lora_file(sdxl_kohya, original, {"ss_network_dim": "4"})
    as_diffusers, back = tmp_path / "sdxl_diffusers.safetensors", tmp_path / "sdxl_back.safetensors"
    convert_lora(sdxl_kohya, as_diffusers, "diffusers", tiny_sdxl.diffusers_dir)
    keys = list(read_lora_file(as_diffusers)[0])
    assert any(k.startswith("unet.down_blocks.") for k in keys) and any(k.startswith("text_encoder_2.") for k in keys)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    report = convert_lora(as_diffusers, back, "kohya", tiny_sdxl.diffusers_dir)
    restored, _ = read_lora_file(back)
    stems = [k[: -len(".lora_down.weight")] for k in original if k.endswith(".lora_down.weight")]
    assert report.modules == len(stems) and sorted(restored) == sorted(
        [f"{s}.{m}" for s in stems for m in ("lora_down.weight", "lora_up.weight", "alpha")])
    for stem in stems:
        torch.testing.assert_close(delta(restored, stem), delta(original, stem), rtol=1e-6, atol=1e-7)

    # SD1.5: diffusers' own loader applies the converted file exactly like the kohya one.
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15.diffusers_dir)
    network = LoRANetwork.create(pipe.unet, [], [], lambda p: p, dim=4, alpha=1.0, train_text_encoder=False)
    state = {k: torch.randn(v.shape, generator=gen) * 0.05 if k.endswith("lora_up.weight") else v
             for k, v in network.kohya_state_dict().items()}
    kohya_file, diffusers_file = tmp_path / "sd15.safetensors", tmp_path / "sd15_diffusers.safetensors"
    save_lora_file(kohya_file, state, {})
    convert_lora(kohya_file, diffusers_file, "diffusers", tiny_sd15.diffusers_dir)
    latents = torch.randn((1, 4, 8, 8), generator=gen)
    context = torch.randn((1, 77, pipe.unet.config.cross_attention_dim), generator=gen)
    outputs = []
    for name, path in (("kohya", kohya_file), ("converted", diffusers_file)):
        pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters([name], [1.0])
        with torch.no_grad():
            outputs.append(pipe.unet(latents, 10, encoder_hidden_states=context).sample)
    pipe.disable_lora()
    with torch.no_grad():
        base = pipe.unet(latents, 10, encoder_hidden_states=context).sample
    assert (outputs[0] - base).abs().max() > 1e-3  # the LoRA really changes the output
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_merge_loras_into_one_concat_is_exact_and_svd_is_the_best_rank(tmp_path: Path) -> None:
    from trainer.tools.merge_lora import main as merge_main
    from trainer.tools.merge_lora import merge_loras

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    first, second = make_lora(a, seed=1), make_lora(b, seed=2)
    concat = tmp_path / "concat.safetensors"
    merge_loras([a, b], concat, ratios=[0.8, 0.5], concat=True)
    merged, meta = read_lora_file(concat)
    for stem, (down, _up, _alpha) in MODULES.items():
        expected = 0.8 * delta(first, stem) + 0.5 * delta(second, stem)
        assert merged[f"{stem}.lora_down.weight"].shape[0] == 2 * down[0]
        torch.testing.assert_close(delta(merged, stem), expected, rtol=1e-5, atol=1e-6)
    assert meta["ss_training_comment"] == "merged (concat) from a.safetensorsx0.8, b.safetensorsx0.5"

    reduced = tmp_path / "svd.safetensors"
    assert merge_main(["--models", str(a), str(b), "--ratios", "0.8", "0.5", "--new_rank", "3",
                       "--save_to", str(reduced)]) == 0
    small, meta = read_lora_file(reduced)
    for stem in MODULES:
        u, s, vh = torch.linalg.svd(0.8 * delta(first, stem) + 0.5 * delta(second, stem), full_matrices=False)
        torch.testing.assert_close(delta(small, stem), u[:, :3] @ torch.diag(s[:3]) @ vh[:3], rtol=1e-5, atol=1e-6)
    assert meta["ss_network_dim"] == "3"
    assert merge_main(["--models", str(a), "--save_to", str(tmp_path / "x.safetensors")]) == 2  # neither mode


def test_merge_into_sdxl_single_file_matches_runtime_lora(tmp_path: Path, tiny_sdxl) -> None:
    """SDXL: SGM-layout stems, two text encoders and LoCon convs merge like the LoRA applied at run time."""
    from diffusers import StableDiffusionXLPipeline

    from trainer.checkpoint_layout import UNetLayout, unet_module_to_ldm
    from trainer.networks.lora import LoRANetwork
    from trainer.tools.merge_lora import merge_lora

    ref = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl.diffusers_dir)
    layout = UNetLayout.from_config(ref.unet.config)
    network = LoRANetwork.create(ref.unet, [ref.text_encoder, ref.text_encoder_2], ["lora_te1", "lora_te2"],
                                 lambda p: unet_module_to_ldm(p, layout), dim=4, alpha=2.0, conv_dim=2,
                                 conv_alpha=1.0)
    gen = torch.Generator().manual_seed(13)
    state = {k: (torch.randn(v.shape, generator=gen) * 0.05 if k.endswith("lora_up.weight") else v)
             for k, v in network.kohya_state_dict().items()}
    assert any(k.startswith("lora_unet_input_blocks_") for k in state)  # kohya's SDXL (SGM) stems
    lora = tmp_path / "sdxl_style.safetensors"
    save_lora_file(lora, state, {})
    out = tmp_path / "sdxl_merged.safetensors"
    report = merge_lora(tiny_sdxl.single_file, [lora], out, ratios=[0.6], model_config=str(tiny_sdxl.config_dir))
    assert report.merged[str(lora)] == len(network.loras)

    merged = StableDiffusionXLPipeline.from_single_file(str(out), config=str(tiny_sdxl.config_dir))
    latents = torch.randn((1, 4, 8, 8), generator=gen)
    context = torch.randn((1, 77, merged.unet.config.cross_attention_dim), generator=gen)
    pooled = torch.randn((1, ref.text_encoder_2.config.projection_dim), generator=gen)
    conditioning = {"text_embeds": pooled, "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])}
    tokens = ref.tokenizer(["a tiny test"], padding="max_length", max_length=77, return_tensors="pt").input_ids

    def run(pipe):
        with torch.no_grad():
            unet_out = pipe.unet(latents, 10, encoder_hidden_states=context, added_cond_kwargs=conditioning).sample
            te1 = pipe.text_encoder(tokens, output_hidden_states=True).hidden_states[-2]
            te2 = pipe.text_encoder_2(tokens, output_hidden_states=True).hidden_states[-2]
        return unet_out, torch.cat([te1, te2], dim=-1)

    base_unet, base_te = run(ref)
    network.load_kohya_state_dict(state)
    network.set_multiplier(0.6)
    network.apply()
    expected_unet, expected_te = run(ref)
    got_unet, got_te = run(merged)
    assert (expected_unet - base_unet).abs().max() > 1e-3  # the LoRA really changes both parts
    assert (expected_te - base_te).abs().max() > 1e-3
    torch.testing.assert_close(got_unet, expected_unet, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_te, expected_te, rtol=1e-4, atol=1e-4)
