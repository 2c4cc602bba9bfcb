"""LyCORIS networks (``network_module = "lycoris.kohya"``) on the tiny SD1.5 and SDXL models.

Each algorithm trains for real (one step) and its file is read back by independent readers: the
``lycoris`` package builds its own modules from the file and must compute the same UNet and
text-encoder outputs as our network did at the end of training; diffusers' ``load_lora_weights``
must take the LoCon file without complaint. Presets and network_args: tests/test_lycoris_presets_args.py.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from lycoris import wrapper as lycoris_wrapper
from lycoris.modules.ia3 import IA3Module
from safetensors import safe_open
from torch import nn

from tests.fixtures.sd_models import TinyModel
from tests.test_lora_file import TOKEN_IDS, load_with_diffusers
from tests.test_lora_network import (
    TE_PREFIXES,
    expected_te_stems,
    expected_unet_stems,
    load_pipe,
    run_unet,
    text_encoders,
    unet_inputs,
    unet_key_for,
)
from tests.test_train_end_to_end import base_overrides, load_tensors, make_learnable_dataset
from trainer.config import load_training_config
from trainer.errors import TrainerError
from trainer.loop import train
from trainer.networks.lycoris_args import parse_lycoris_args
from trainer.networks.lycoris_network import LycorisNetwork, create_lycoris_network
from trainer.networks.lycoris_presets import load_preset, preset_from_dict
from trainer.session import prepare_session


CORE_ALGOS = ("locon", "loha", "lokr", "ia3", "glora", "diag-oft", "boft", "full")
# (algo, extra network_args) trained on SD1.5 only: the variants that change the file's tensors.
VARIANTS = (
    ("locon", ("dora_wd=True",)),
    ("loha", ("dora_wd=True",)),
    ("lokr", ("dora_wd=True",)),
    ("locon", ("use_tucker=True", "conv_dim=4", "conv_alpha=2")),
    ("loha", ("use_tucker=True",)),
    ("lokr", ("factor=4", "decompose_both=True")),
    ("lokr", ("full_matrix=True",)),
    ("locon", ("train_norm=True", "use_scalar=True")),
    ("diag-oft", ("rescaled=True", "constraint=0.01")),
)
CASES = [("sd15", algo, ()) for algo in CORE_ALGOS] + [("sdxl", algo, ()) for algo in CORE_ALGOS] \
    + [("sd15", algo, extra) for algo, extra in VARIANTS] + [("sdxl", "locon", ("dora_wd=True",))]


# ---------------------------------------------------------------- helpers

def run(tmp: Path, tiny: TinyModel, network_args: list[str], steps: int = 1, **extra):
    """Train for real through prepare_session + train (what run_training does); returns the session and file."""
    data = make_learnable_dataset(tmp / "data")
    values = {"network_module": "lycoris.kohya", "max_train_steps": steps, "network_dim": 8, "network_alpha": 4,
              "learning_rate": "1e-2", "text_encoder_lr": "1e-2", **extra}
    settings = base_overrides(str(tiny.diffusers_dir), data, tmp / "out", **values)
    settings["network_args"] = list(network_args)
    config = load_training_config(overrides=settings, cwd=tmp)
    session = prepare_session(config)
    try:
        result = train(session)
    finally:
        session.events.close()
    session.network.eval()
    return session, result.path


def members_by_stem(tensors: dict[str, torch.Tensor]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for key in tensors:
        stem, _, member = key.partition(".")
        out.setdefault(stem, set()).add(member)
    return out


def sgm_to_diffusers_stems(unet: nn.Module, family: str) -> dict[str, str]:
    """SDXL files use the SGM layout; the lycoris package finds modules by diffusers path."""
    key_for = unet_key_for(family, unet)
    mapping = {}
    for path, _ in unet.named_modules():
        try:
            mapping["lora_unet_" + key_for(path).replace(".", "_")] = "lora_unet_" + path.replace(".", "_")
        except ValueError:
            continue  # containers with no name of their own in the SGM layout
    return mapping


@contextmanager
def lycoris_prefix(prefix: str) -> Iterator[None]:
    """create_lycoris_from_weights names modules LORA_PREFIX + path; it is a class attribute."""
    before = lycoris_wrapper.LycorisNetwork.LORA_PREFIX
    lycoris_wrapper.LycorisNetwork.LORA_PREFIX = prefix
    try:
        yield
    finally:
        lycoris_wrapper.LycorisNetwork.LORA_PREFIX = before


def lycoris_reload(model: nn.Module, tensors: dict[str, torch.Tensor], prefix: str):
    """The lycoris package's own modules for the part of ``tensors`` under ``prefix``, applied to ``model``.

    IA3 goes through ``IA3Module`` directly: lycoris 4.1.3's ``create_lycoris_from_weights`` passes
    ``on_input`` to ``IA3Module.make_module_from_state_dict``, which does not take it (a library bug).
    """
    part = {key: value for key, value in tensors.items() if key.startswith(prefix + "_")}
    if any(key.endswith(".on_input") for key in part):
        layers = {f"{prefix}_{path}".replace(".", "_"): module for path, module in model.named_modules()}
        modules = []
        for stem in {key.split(".")[0] for key in part}:
            module = IA3Module(stem, layers[stem], 1.0, train_on_input=bool(part[f"{stem}.on_input"]))
            with torch.no_grad():
                module.weight.copy_(part[f"{stem}.weight"])
            module.apply_to()
            modules.append(module)
        return modules
    with lycoris_prefix(prefix):
        network, _ = lycoris_wrapper.create_lycoris_from_weights(1.0, None, model, weights_sd=part)
    network.apply_to()
    network.eval()
    return network.loras


def te_prefix_for_lycoris(encoder: nn.Module, prefix: str) -> str:
    # transformers 5 flattened CLIPTextModel: its paths lack "text_model.", which the file's stems carry.
    has_level = any(path.startswith("text_model.") for path, _ in encoder.named_modules())
    return prefix if has_level else f"{prefix}_text_model"


def encode(encoder: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return encoder(TOKEN_IDS).last_hidden_state


def expected_algo_members(algo: str, extra: tuple[str, ...], members: set[str], layer: nn.Module) -> None:
    """Assert one stem's tensor names are the LyCORIS names of ``algo`` (FORMATS.md section 1)."""
    big_conv = isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) != (1, 1)
    if isinstance(layer, (nn.LayerNorm, nn.GroupNorm)):
        assert members == {"w_norm", "b_norm"}
        return
    dora = {"dora_scale"} if "dora_wd=True" in extra else set()
    tucker = "use_tucker=True" in extra and big_conv
    if algo == "locon":
        assert members == {"lora_down.weight", "lora_up.weight", "alpha"} | dora | ({"lora_mid.weight"} if tucker else set())
    elif algo == "loha":
        assert members == {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"} | dora \
            | ({"hada_t1", "hada_t2"} if tucker else set())
    elif algo == "lokr":
        assert "alpha" in members and dora <= members
        assert ("lokr_w1" in members) != ({"lokr_w1_a", "lokr_w1_b"} <= members)
        assert ("lokr_w2" in members) != ({"lokr_w2_a", "lokr_w2_b"} <= members)
        if "full_matrix=True" in extra:
            assert {"lokr_w1", "lokr_w2"} <= members
    elif algo == "ia3":
        assert members == {"weight", "on_input"}
    elif algo == "glora":
        assert members == {"a1.weight", "a2.weight", "b1.weight", "b2.weight", "alpha"}
    elif algo == "diag-oft":
        assert members == {"oft_blocks", "alpha"} | ({"rescale"} if "rescaled=True" in extra else set())
    elif algo == "boft":
        assert members == {"oft_blocks", "alpha"}
    elif algo == "full":
        assert members == {"diff"} | ({"diff_b"} if getattr(layer, "bias", None) is not None else set())


# ---------------------------------------------------------------- every algorithm trains and reloads

@pytest.mark.parametrize("family,algo,extra", CASES,
                         ids=[f"{f}-{a}{'-' + '-'.join(e) if e else ''}" for f, a, e in CASES])
def test_algo_trains_and_the_lycoris_package_computes_the_same(family: str, algo: str, extra: tuple[str, ...],
                                                               request, tmp_path: Path) -> None:
    tiny: TinyModel = request.getfixturevalue(f"tiny_{family}")
    session, path = run(tmp_path, tiny, [f"algo={algo}", *extra])
    tensors = load_tensors(path)
    model, network = session.model, session.network
    unet, encoders = model.unet, list(model.text_encoders)

    # Stems: kohya's LoCon set (the default preset "full"), plus the norms with train_norm.
    stems = members_by_stem(tensors)
    expected = dict(expected_unet_stems(family, unet, include_conv=True))
    for encoder, prefix in zip(encoders, TE_PREFIXES[family]):
        expected.update(expected_te_stems(encoder, prefix))
    norms = {stem for stem in stems if stems[stem] == {"w_norm", "b_norm"}}
    assert set(stems) - norms == set(expected)
    assert bool(norms) == ("train_norm=True" in extra)
    unet_modules = dict(unet.named_modules())
    layers = {stem: unet_modules[p] for stem, p in expected.items() if stem.startswith("lora_unet")}
    for encoder, prefix in zip(encoders, TE_PREFIXES[family]):
        modules = dict(encoder.named_modules())
        layers.update({stem: modules[p] for stem, p in expected_te_stems(encoder, prefix).items()})
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_network_module"] == "lycoris.kohya"
    assert json.loads(metadata["ss_network_args"])["algo"] == algo

    # Our network at the end of training, then the bare model, then the lycoris package's reading of the file.
    inputs = unet_inputs(tiny, unet)
    ours_unet = run_unet(unet, inputs)
    ours_te = [encode(encoder) for encoder in encoders]
    network.remove()
    base_unet = run_unet(unet, inputs)
    for stem, members in stems.items():  # after remove(): algo=full holds the layers' weights while applied
        layer = layers.get(stem, nn.LayerNorm(1))  # norm stems: only their names are checked
        expected_algo_members(algo, extra, members, layer)
    assert (ours_unet - base_unet).abs().max() > 1e-6, "one training step must change the UNet's output"

    if family == "sdxl":
        mapping = sgm_to_diffusers_stems(unet, family)
        tensors = {mapping.get(key.split(".")[0], key.split(".")[0]) + "." + key.partition(".")[2]: value
                   for key, value in tensors.items()}
    loaded = lycoris_reload(unet, tensors, "lora_unet")
    assert len(loaded) == len([s for s in stems if s.startswith("lora_unet")])
    torch.testing.assert_close(run_unet(unet, inputs), ours_unet, atol=2e-5, rtol=1e-4)
    for module in loaded:
        module.restore()
    torch.testing.assert_close(run_unet(unet, inputs), base_unet)

    for encoder, prefix, ours in zip(encoders, TE_PREFIXES[family], ours_te):
        loaded = lycoris_reload(encoder, tensors, te_prefix_for_lycoris(encoder, prefix))
        assert loaded, f"no {prefix} module was rebuilt"
        torch.testing.assert_close(encode(encoder), ours, atol=2e-5, rtol=1e-4)
        for module in loaded:
            module.restore()

    if algo == "locon" and not extra:
        # A LoCon file is an ordinary kohya LoRA/LoCon: diffusers takes all of it.
        pipe = load_pipe(tiny)
        load_with_diffusers(pipe, path)
        torch.testing.assert_close(run_unet(pipe.unet, inputs), ours_unet, atol=2e-5, rtol=1e-4)


def test_dora_scale_is_the_column_norm_of_the_merged_weight(tiny_sd15: TinyModel) -> None:
    """DoRA's dora_scale starts as the norm of each output row of the base weight (wd_on_output)."""
    pipe = load_pipe(tiny_sd15)
    settings, _ = parse_lycoris_args(["algo=locon", "dora_wd=True"])
    network = create_lycoris_network(pipe.unet, text_encoders(pipe), TE_PREFIXES["sd15"], settings,
                                     load_preset("attn-mlp"), dim=4, alpha=4)
    tensors = network.kohya_state_dict()
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    weight = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    torch.testing.assert_close(tensors[f"{stem}.dora_scale"], weight.norm(dim=1, keepdim=True))


# ---------------------------------------------------------------- presets

def test_apply_and_remove_leave_the_base_model_as_it_was(tiny_sd15: TinyModel) -> None:
    pipe = load_pipe(tiny_sd15)
    pipe.unet.requires_grad_(False)
    inputs = unet_inputs(tiny_sd15, pipe.unet)
    before = run_unet(pipe.unet, inputs)
    weights = {name: tensor.clone() for name, tensor in pipe.unet.state_dict().items()}
    for algo in CORE_ALGOS:
        settings, _ = parse_lycoris_args([f"algo={algo}", "train_norm=True"])
        network = create_lycoris_network(pipe.unet, [], [], settings, load_preset("unet-only"), dim=4, alpha=2,
                                         train_text_encoder=False)
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
        network.apply()
        network.apply()  # idempotent
        changed = run_unet(pipe.unet, inputs)
        network.set_multiplier(0.0)
        if algo != "full":  # full stores whole weights: multiplier 0 is not "off" in the library
            torch.testing.assert_close(run_unet(pipe.unet, inputs), before, atol=1e-5, rtol=1e-4)
        network.remove()
        assert (changed - before).abs().max() > 1e-3, algo
        torch.testing.assert_close(run_unet(pipe.unet, inputs), before)
        state = pipe.unet.state_dict()
        assert state.keys() == weights.keys() and all(torch.equal(state[k], weights[k]) for k in weights), algo
        assert not any(p.requires_grad for p in pipe.unet.parameters()), algo
        assert not any("forward" in m.__dict__ for m in pipe.unet.modules()), algo


def test_state_dict_round_trips_for_resume(tiny_sd15: TinyModel) -> None:
    """Saved states (resume) use the module's own state_dict; it must load back into a fresh network."""
    pipe = load_pipe(tiny_sd15)
    for args in ([f"algo={algo}"] for algo in CORE_ALGOS):
        settings, _ = parse_lycoris_args([*args, "use_scalar=True"] if args[0] == "algo=locon" else args)
        build = lambda: create_lycoris_network(pipe.unet, [], [], settings, load_preset("attn-mlp"), dim=4, alpha=2,
                                               train_text_encoder=False)
        trained, fresh = build(), build()
        trained.apply()  # states are saved and loaded on applied networks (algo=full holds whole weights then)
        with torch.no_grad():
            for parameter in trained.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
        state = {key: value.detach().clone() for key, value in trained.state_dict().items()}
        trained.remove()
        fresh.apply()
        missing, unexpected = fresh.load_state_dict(state, strict=False)
        assert not missing and not unexpected, args
        files = trained.kohya_state_dict(), fresh.kohya_state_dict()
        fresh.remove()
        assert all(torch.allclose(files[0][key], files[1][key]) for key in files[0]), args


def test_param_groups_split_parts_and_half_precision_bases_get_exact_bypass(tiny_sdxl: TinyModel) -> None:
    pipe = load_pipe(tiny_sdxl)
    settings, _ = parse_lycoris_args(["algo=lokr"])
    network = create_lycoris_network(pipe.unet, text_encoders(pipe), TE_PREFIXES["sdxl"], settings,
                                     load_preset("full"), unet_key_for("sdxl", pipe.unet), dim=4, alpha=2)
    groups = network.param_groups(2e-4, [1e-5, 0.0], 1e-4)
    assert [(g["name"], g["lr"]) for g in groups] == [("unet", 2e-4), ("te1", 1e-5)]
    te2 = [p for stem, m in network.loras.items() if stem.startswith("lora_te2") for p in m.parameters()]
    assert te2 and not any(p.requires_grad for p in te2)
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for stem, m in network.loras.items() if not stem.startswith("lora_te2") for p in m.parameters())

    # In bf16 the library's weight rebuild rounds W + dW - W; the bypass path keeps a small update exact.
    # A small constant-sign dW against unit-sized weights and inputs makes the difference plain.
    layer = nn.Linear(1024, 16, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(16, 1024, generator=torch.Generator().manual_seed(0)))
    layer = layer.to(torch.bfloat16)
    host = nn.Module()
    host.block = nn.Module()
    host.block.proj = layer
    preset = preset_from_dict({"unet_target_name": ["block.proj"]}, "one")
    x = torch.ones(2, 1024, dtype=torch.bfloat16)
    base = layer(x).float()
    errors = {}
    for args, bypass in ((["algo=locon"], True), (["algo=locon", "bypass_mode=False"], False),
                         (["algo=locon", "dora_wd=True"], None)):
        settings, _ = parse_lycoris_args(args)
        net = create_lycoris_network(host, [], [], settings, preset, dim=4, alpha=4, train_text_encoder=False)
        module = net.loras["lora_unet_block_proj"]
        assert module.bypass_mode == bypass and module.lora_up.weight.dtype == torch.float32
        if bypass is None:
            continue  # DoRA needs the rebuilt weight
        with torch.no_grad():
            module.lora_down.weight.fill_(1 / 1024)
            module.lora_up.weight.fill_(0.25)  # dW = 1e-3 everywhere, below bf16's step near 1
        net.apply()
        with torch.no_grad():
            delta = layer(x).float() - base
        net.remove()
        errors[bypass] = float((delta - 1.0).abs().max())  # x @ dW.T = 1024 * 1e-3 ~ 1
    assert errors[True] < 0.02 < 0.3 < errors[False]


def test_continue_training_from_a_file_and_refuse_other_settings(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    session, path = run(tmp_path / "first", tiny_sd15, ["algo=loha", "preset=attn-mlp"], network_train_unet_only="true")
    first = load_tensors(path)
    pipe = load_pipe(tiny_sd15)
    settings, _ = parse_lycoris_args(["algo=loha", "preset=attn-mlp"])
    network = create_lycoris_network(pipe.unet, text_encoders(pipe), TE_PREFIXES["sd15"], settings,
                                     load_preset("attn-mlp"), dim=8, alpha=4, train_text_encoder=False)
    report = network.load_weights_file(path)
    assert report.loaded == len(members_by_stem(first)) and report.missing == ()
    again = network.kohya_state_dict()
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)

    for args, dim, alpha, message in ((["algo=lokr"], 8, 4, "algo=lokr"), (["algo=loha"], 4, 4, "shape"),
                                      (["algo=loha"], 8, 2, "alpha")):
        settings, _ = parse_lycoris_args(args)
        other = create_lycoris_network(pipe.unet, [], [], settings, load_preset("attn-mlp"), dim=dim, alpha=alpha,
                                       train_text_encoder=False)
        with pytest.raises(TrainerError, match=message) as caught:
            other.load_weights_file(path)
        assert caught.value.option == "network_weights"

    # A real run that starts from the file: its weights move a little from the file's, not from a fresh start.
    _, second = run(tmp_path / "second", tiny_sd15, ["algo=loha", "preset=attn-mlp"], network_train_unet_only="true",
                    network_weights=str(path), learning_rate="1e-4")
    after = load_tensors(second)
    moved = max(float((after[k] - first[k]).abs().max()) for k in first if k.endswith("hada_w1_a"))
    assert 0 < moved < 1e-3
    assert isinstance(session.network, LycorisNetwork)


def test_full_algo_file_is_the_weight_difference(tiny_sd15: TinyModel, tmp_path: Path) -> None:
    """algo=full trains whole weights; the file holds trained minus original, and remove() restores them."""
    pipe = load_pipe(tiny_sd15)
    original = copy.deepcopy(pipe.unet.mid_block.attentions[0].proj_in)
    settings, _ = parse_lycoris_args(["algo=full"])
    network = create_lycoris_network(pipe.unet, [], [], settings, load_preset("unet-transformer-only"),
                                     train_text_encoder=False)
    network.apply()
    stem = "lora_unet_mid_block_attentions_0_proj_in"
    module = network.loras[stem]
    with torch.no_grad():
        module.weight.add_(0.25)
    tensors = network.kohya_state_dict(torch.float16)
    assert tensors[f"{stem}.diff"].dtype == torch.float16
    torch.testing.assert_close(tensors[f"{stem}.diff"].float(), torch.full_like(original.weight, 0.25), atol=1e-3,
                               rtol=0)
    network.remove()
    assert torch.equal(pipe.unet.mid_block.attentions[0].proj_in.weight, original.weight)
