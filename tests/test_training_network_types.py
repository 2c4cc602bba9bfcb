"""The basic-mode Network type: each type set in the panel reaches the file and the trainer's own parsers, is
shown again on load, hand-written network settings stay "Custom" and untouched, presets pick a type, the live
checks know each type's sizes, and a LyCORIS type trains for real."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from core.errors import CoreError
from core.paths import ProjectPaths
from core.training import (
    NetworkChoice, TrainingForm, detect_network_type, import_kohya_json, live_checks, load_training_presets,
    plan_config, read_training_toml,
)
from tests.test_train_end_to_end import load_tensors, make_learnable_dataset
from tests.test_training_panel import image_folders, make_panel
from trainer.config import load_training_config
from trainer.networks.dylora import parse_dylora_args
from trainer.networks.factory import parse_network_args
from trainer.networks.lycoris_args import parse_lycoris_args
from widgets.training_panel import TrainingPanel

# type -> (network_module, network_args) the panel writes with dim 16, alpha 8, conv 8 / 4 where it applies
EXPECTED = {
    "lora": ("networks.lora", []),
    "locon": ("networks.lora", ["conv_dim=8", "conv_alpha=4"]),
    "loha": ("lycoris.kohya", ["algo=loha", "conv_dim=8", "conv_alpha=4"]),
    "lokr": ("lycoris.kohya", ["algo=lokr", "factor=8", "conv_dim=8", "conv_alpha=4"]),
    "dora": ("lycoris.kohya", ["algo=locon", "dora_wd=True", "preset=attn-mlp"]),
    "dylora": ("networks.dylora", []),
}


def _ready_panel(tmp_path: Path, project: str = "net") -> TrainingPanel:
    panel = make_panel(tmp_path)
    panel.project.value = project
    panel.fields["pretrained_model_name_or_path"].widget.value = str(tmp_path / "m.safetensors")
    panel.fields["train_data_dir"].widget.value = str(image_folders(tmp_path / "ds", {"10_char": 30}))
    panel.fields["network_dim"].widget.value = 16
    panel.fields["network_alpha"].widget.value = 8.0
    return panel


def _choose(panel: TrainingPanel, key: str, conv: tuple[int, float] | None = (8, 4.0)) -> None:
    panel.network.type.widget.value = key
    if conv and panel.network.conv_dim.box.layout.display != "none":
        panel.network.conv_dim.toggle.value = panel.network.conv_alpha.toggle.value = True
        panel.network.conv_dim.widget.value, panel.network.conv_alpha.widget.value = conv


@pytest.mark.parametrize("key", list(EXPECTED))
def test_each_network_type_reaches_the_file_the_trainers_parser_and_comes_back(tmp_path: Path, key: str) -> None:
    panel = _ready_panel(tmp_path)
    _choose(panel, key)
    module, args = EXPECTED[key]
    uses_conv = bool(args and "conv_dim=8" in args)
    assert (panel.network.conv_dim.box.layout.display == "") is uses_conv
    assert panel.fields["network_module"].value() == module  # the advanced fields show what is written
    panel.wait()
    assert not panel.report.errors, [f.message for f in panel.report.errors]  # the trainer's own rules included
    saved = panel.save()
    config = load_training_config(saved)
    assert (config.network_module, config.network_args) == (module, args)
    if module == "lycoris.kohya":
        settings, warnings = parse_lycoris_args(config.network_args)
        assert warnings == []
        assert settings.algo == {"dora": "locon"}.get(key, key)
        assert (settings.dora_wd, settings.preset) == ((True, "attn-mlp") if key == "dora" else (False, "full"))
        assert settings.factor == (8 if key == "lokr" else -1)
        assert (settings.conv_dim, settings.conv_alpha) == ((None, None) if key == "dora" else (8, 4.0))
    elif module == "networks.dylora":
        assert parse_dylora_args(config.network_args).unit == 1
    else:
        assert parse_network_args(config.network_args) == ({"conv_dim": 8.0, "conv_alpha": 4.0} if uses_conv else {})

    assert read_training_toml(saved).form.network_type == key
    other = make_panel(tmp_path)  # a fresh panel shows the saved type
    other.project.value = "net"
    other.load_choice.value = "net"
    other.load_button.click()
    assert other.network.type.widget.value == key, other.messages.text
    assert other.network.type.widget.label == panel.network.type.widget.label
    if uses_conv:
        assert (other.network.conv_dim.value(), other.network.conv_alpha.value()) == (8, 4.0)
    assert other.form().network_type == key and other.fields["network_module"].value() == module


def test_hand_edited_network_settings_are_custom_and_never_rewritten(tmp_path: Path) -> None:
    panel = _ready_panel(tmp_path)
    _choose(panel, "loha")
    panel.advanced.value = True
    panel.fields["network_args"].widget.value = "algo=ia3"  # (IA)^3: advanced only
    assert panel.network.type.widget.value == "custom" and "used as they are" in panel.network.note.value
    panel.fields["network_dim"].widget.value = 24  # a type would rewrite its args now; Custom does not
    panel.preset.value = "sd15"
    assert panel.fields["network_dim"].value() == 32  # the preset's other values apply
    assert panel.fields["network_args"].value() == ["algo=ia3"]
    assert panel.fields["network_module"].value() == "lycoris.kohya"
    assert "Custom" in panel.preset_info.value and panel.network.type.widget.value == "custom"
    saved = panel.save()
    config = load_training_config(saved)
    assert (config.network_module, config.network_args) == ("lycoris.kohya", ["algo=ia3"])
    assert read_training_toml(saved).form.network_type == "custom"

    other = make_panel(tmp_path)
    other.project.value = "net"
    other.load_choice.value = "net"
    other.load_button.click()
    assert other.network.type.widget.value == "custom"
    assert other.fields["network_args"].value() == ["algo=ia3"]
    other.fields["network_dim"].widget.value = 8
    assert other.fields["network_args"].value() == ["algo=ia3"]

    # Typed by hand exactly as a type writes it: recognised.
    other.fields["network_args"].widget.value = "algo=lokr\nfactor=8"
    assert other.network.type.widget.value == "lokr"
    other.fields["network_args"].widget.value = "algo=lokr\nfactor=4"
    assert other.network.type.widget.value == "custom"
    # Picking a type is an explicit choice: it replaces them, and says what it replaced.
    other.network.type.widget.value = "lora"
    assert other.fields["network_module"].value() == "networks.lora" and other.fields["network_args"].value() == []
    assert "factor=4" in other.messages.text and "replaced" in other.messages.text


def test_form_level_type_in_core_and_readers(tmp_path: Path) -> None:
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work").ensure()
    model = str(tmp_path / "m.safetensors")
    plan = plan_config(TrainingForm("p", {"pretrained_model_name_or_path": model, "network_dim": 8},
                                    network_type="loha", conv_dim=4), paths)
    assert plan.values["network_module"] == "lycoris.kohya" and plan.values["network_args"] == ["algo=loha", "conv_dim=4"]
    assert 'network_module = "lycoris.kohya"' in plan.training_text and '"algo=loha"' in plan.training_text
    plain = plan_config(TrainingForm("p", {"pretrained_model_name_or_path": model}, network_type="lora"), paths)
    assert "network_module" not in plain.values and "network_args" not in plain.values  # defaults nobody set

    with pytest.raises(CoreError, match="Custom"):  # the user's own args are never overwritten by a type
        plan_config(TrainingForm("p", {"pretrained_model_name_or_path": model, "network_args": ["algo=ia3"]},
                                 network_type="loha"), paths)
    report = live_checks(TrainingForm("p", {"pretrained_model_name_or_path": model, "train_data_dir": str(tmp_path)},
                                      network_type="loho"), paths, include_rules=False)
    assert any("loho" in f.message and f.level == "error" for f in report.findings)

    assert detect_network_type("lycoris.kohya", ["algo=lora", "dora_wd=true", "preset=attn-mlp"]) == NetworkChoice("dora")
    assert detect_network_type("networks.lora", ["conv_dim=16", "conv_alpha=8"], 16, 8.0) == NetworkChoice("locon")
    assert detect_network_type("networks.lora", ["conv_dim=8"], 16, 8.0) is None  # no conv_alpha: not what LoCon writes
    assert detect_network_type("lycoris.kohya", ["algo=loha", "rank_dropout=0.1"]) is None

    kohya = tmp_path / "k.json"
    kohya.write_text(json.dumps({"LoRA_type": "LyCORIS/LoHa", "network_dim": 8, "network_alpha": 4,
                                 "conv_dim": 4, "conv_alpha": 2}), encoding="utf-8")
    form = import_kohya_json(kohya).form
    assert (form.network_type, form.conv_dim, form.conv_alpha) == ("loha", 4, 2.0)
    panel = make_panel(tmp_path)
    panel.import_path.value = str(kohya)
    panel.import_button.click()
    assert panel.network.type.widget.value == "loha" and panel.network.conv_dim.value() == 4


def test_presets_pick_the_network_type(tmp_path: Path) -> None:
    presets = load_training_presets()
    assert {preset.network_type for preset in presets.values()} == {"lora"}
    panel = _ready_panel(tmp_path)
    _choose(panel, "lokr")
    panel.preset.value = "sdxl"
    assert panel.network.type.widget.value == "lora" and panel.fields["network_module"].value() == "networks.lora"
    assert panel.fields["network_args"].value() == [] and panel.fields["network_dim"].value() == 16
    _choose(panel, "loha", None)
    panel.reset_button.click()  # defaults: LoRA again
    assert panel.network.type.widget.value == "lora" and panel.fields["network_args"].value() == []

    bad = tmp_path / "presets.toml"
    bad.write_text('[x]\nlabel = "X"\nbase = "sd15"\nv_prediction = false\nnetwork_type = "lohaa"\n', encoding="utf-8")
    with pytest.raises(CoreError, match="lohaa"):
        load_training_presets(bad)


def test_live_checks_know_each_types_sizes(tmp_path: Path) -> None:
    panel = _ready_panel(tmp_path)
    panel.fields["network_dim"].widget.value = 64
    panel.fields["network_alpha"].widget.value = 32.0
    panel.wait()
    assert not [f for f in panel.report.findings if "usual" in f.message]  # 64 is fine for LoRA
    _choose(panel, "loha", None)
    panel.wait()
    (finding,) = [f for f in panel.report.findings if "usual" in f.message]
    assert finding.message == "LoHa (Hadamard product, small files): network size 64 is above the usual 2-32."
    assert "size 8-32, alpha half of the size" in finding.reason
    (fix,) = [b for b in panel.fix_buttons if "network_dim = 16" in b.tooltip]
    fix.click()
    assert (panel.fields["network_dim"].value(), panel.fields["network_alpha"].value()) == (16, 8.0)
    assert panel.network.type.widget.value == "loha" and panel.fields["network_args"].value() == ["algo=loha"]
    panel.network.conv_dim.toggle.value = True
    panel.network.conv_dim.widget.value = 24
    panel.wait()
    assert any("conv layers size 24 is above the network size 16" in f.message for f in panel.report.findings)
    assert panel.fields["network_args"].value() == ["algo=loha", "conv_dim=24"]


def test_a_lycoris_type_from_the_panel_trains_and_names_its_algo(tmp_path: Path, tiny_sd15) -> None:
    from trainer.train_network import run_training

    panel = make_panel(tmp_path)
    panel.project.value = "loha_run"
    panel.fields["pretrained_model_name_or_path"].widget.value = str(tiny_sd15.diffusers_dir)
    panel.fields["train_data_dir"].widget.value = str(make_learnable_dataset(tmp_path))
    for name, value in {"resolution": "64", "network_dim": 4, "network_alpha": 4.0, "learning_rate": 3e-3,
                        "train_batch_size": 2}.items():
        panel.fields[name].widget.value = value
    _choose(panel, "loha", (2, 1.0))
    panel.advanced.value = True
    panel.fields["max_train_steps"].widget.value = 1
    panel.fields["seed"].toggle.value = True
    saved = panel.save()
    lora = run_training(load_training_config(saved))
    with safe_open(str(lora), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_network_module"] == "lycoris.kohya"
    assert json.loads(metadata["ss_network_args"])["algo"] == "loha"
    assert json.loads(metadata["ss_network_args"])["conv_dim"] == "2"
    assert any(key.endswith("hada_w1_a") for key in load_tensors(lora))
    again = make_panel(tmp_path)
    again.import_path.value = str(saved)
    again.import_button.click()
    assert again.network.type.widget.value == "loha" and again.network.conv_dim.value() == 2
