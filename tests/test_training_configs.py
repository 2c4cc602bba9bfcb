"""The training config writer behind the training panel: presets, files, round trips, imports, live checks."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from core.errors import CoreError
from core.models import load_presets
from core.paths import ProjectPaths
from core.training import (
    ModelFacts, TrainingForm, describe_model, find_base_models, import_kohya_json, import_sd_scripts_toml,
    list_configs, live_checks, load_config, load_training_presets, plan_config, save_config, suggest_preset,
    write_run_config,
)
from core.training.base_models import read_safetensors_header
from core.training.steps import estimate_steps, folders_of
from trainer.config import load_training_config
from trainer.data.blueprint import build_datasets
from trainer.options import BY_NAME, SECRET_KEYS, get_option

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def make_dataset(root: Path, layout: dict[str, int]) -> Path:
    """``{"10_char": 3}``: folders with that many (empty, never decoded) image files, plus a caption each."""
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for index in range(count):
            suffix = ".PNG" if index % 2 else ".jpg"  # upper-case extensions count too
            (root / folder / f"img{index}{suffix}").write_bytes(b"")
            (root / folder / f"img{index}.txt").write_text("tag", encoding="utf-8")
    return root


@pytest.fixture()
def paths(tmp_path: Path) -> ProjectPaths:
    return ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work").ensure()


def test_every_preset_key_is_an_option_and_valid(tmp_path: Path) -> None:
    presets = load_training_presets()
    assert {"sd15", "sdxl", "pony", "illustrious", "noobai", "noobai_vpred"} <= set(presets)
    model_keys = set(load_presets())
    for key, preset in presets.items():
        assert preset.values, key
        for name, value in preset.values.items():
            option = get_option(name)  # raises for unknown names
            assert option.coerce(value, key) is not None
        assert set(preset.model_presets) <= model_keys, key
    vpred = presets["noobai_vpred"].values
    assert vpred["v_parameterization"] is True and vpred["zero_terminal_snr"] is True
    assert presets["pony"].values["clip_skip"] == 2 and presets["sd15"].values["resolution"] == [512, 512]


def test_suggest_preset_from_model_preset_name_and_family() -> None:
    presets = load_training_presets()
    assert suggest_preset("x.safetensors", "sdxl", None, presets, "noobai_xl_vpred") == "noobai_vpred"
    assert suggest_preset("ponyDiffusionV6XL.safetensors", "sdxl", None, presets) == "pony"
    assert suggest_preset("noobaiXLNAIXL_vPred10.safetensors", "sdxl", None, presets) == "noobai_vpred"
    assert suggest_preset("someMerge.safetensors", "sdxl", True, presets) == "noobai_vpred"
    assert suggest_preset("v1-5.safetensors", "sd1", False, presets) == "sd15"
    assert suggest_preset("mystery.ckpt", None, None, presets) is None


def test_plan_writes_absolute_paths_project_outputs_and_round_trips(tmp_path: Path, paths: ProjectPaths) -> None:
    data = make_dataset(tmp_path / "ds", {"10_char": 3, "2_style": 2})
    preset = load_training_presets()["noobai_vpred"]
    form = TrainingForm("demo", {**preset.values, "pretrained_model_name_or_path": str(tmp_path / "m.safetensors"),
                                 "train_data_dir": str(data), "batch_size": 3, "seed": 5},
                        {"2_style": {"flip_aug": True, "keep_tokens": 2}})
    plan = plan_config(form, paths)
    assert plan.training_path == paths.training_configs / "demo" / "demo.toml"
    assert plan.dataset_path == paths.training_configs / "demo" / "demo_dataset.toml"
    plan_files = [path for path in plan.files]
    from core.training import write_plan
    assert write_plan(plan) == plan_files
    assert plan.training_path.read_text(encoding="utf-8") == plan.training_text
    parsed = tomllib.loads(plan.training_text)
    assert "model" in parsed and "network" in parsed  # sections by group
    config = load_training_config(plan.training_path)
    for name, value in preset.values.items():
        option = BY_NAME[name]
        assert config[name] == option.normalise(option.coerce(value)), name
    assert config.output_dir == str(paths.outputs / "demo") and config.output_name == "demo"
    assert config.seed == 5 and Path(config.dataset_config).is_absolute()
    (dataset,) = build_datasets(config)[0]
    assert dataset.batch_size == 3
    by_name = {Path(s.image_dir).name: s for s in dataset.subsets}
    assert by_name["10_char"].num_repeats == 10 and by_name["10_char"].class_tokens == "char"
    assert by_name["2_style"].flip_aug is True and by_name["2_style"].keep_tokens == 2
    assert by_name["10_char"].flip_aug is False and by_name["10_char"].keep_tokens == 0
    assert all(Path(s.image_dir).is_absolute() for s in dataset.subsets)


def test_secrets_are_refused_and_unknown_keys_named(paths: ProjectPaths) -> None:
    for key in SECRET_KEYS:
        with pytest.raises(CoreError, match="secret"):
            plan_config(TrainingForm("demo", {key: "hf_abc"}), paths)
    with pytest.raises(CoreError) as problem:
        plan_config(TrainingForm("demo", {"network_dimm": 8}), paths)
    assert "network_dimm" in problem.value.message and "network_dim" in problem.value.hint
    escaped = plan_config(TrainingForm("../evil", {}), paths)  # made safe, never outside training_configs
    assert escaped.project == "evil" and escaped.training_path.parent == paths.training_configs / "evil"
    with pytest.raises(CoreError, match="no usable characters"):
        plan_config(TrainingForm(" ./ ", {}), paths)


def test_save_never_overwrites_silently_and_load_round_trips(tmp_path: Path, paths: ProjectPaths) -> None:
    data = make_dataset(tmp_path / "ds", {"5_a": 1, "3_b": 1})
    form = TrainingForm("proj", {"pretrained_model_name_or_path": str(tmp_path / "m.safetensors"),
                                 "train_data_dir": str(data), "network_dim": 8, "learning_rate": 3e-4,
                                 "optimizer_args": ["weight_decay=0.1", "betas=0.9,0.99"]},
                        {"3_b": {"caption_extension": ".caption"}})
    first = save_config(form, paths, "try1")
    assert list_configs(paths, "proj") == ["try1"]
    assert save_config(form, paths, "try1").backups == ()  # same text: nothing to protect
    form.values["network_dim"] = 16
    with pytest.raises(CoreError, match="already exists"):
        save_config(form, paths, "try1")
    again = save_config(form, paths, "try1", overwrite=True)
    assert [b.name for b in again.backups] == ["try1.1.toml"]
    assert "network_dim = 8" in again.backups[0].read_text(encoding="utf-8")
    assert first.path == again.path
    loaded = load_config(paths, "proj", "try1")
    assert loaded.form.values["network_dim"] == 16
    assert loaded.form.values["optimizer_args"] == ["weight_decay=0.1", "betas=0.9,0.99"]
    assert loaded.form.subset_overrides == {"3_b": {"caption_extension": ".caption"}}
    assert "dataset_config" not in loaded.form.values  # folded back into the form
    assert plan_config(loaded.form, paths, "try1").training_text == again.plan.training_text
    run = write_run_config(form, paths)
    assert run.path.name == "proj.toml" and sorted(list_configs(paths, "proj")) == ["proj", "try1"]


def test_import_sd_scripts_toml_and_unknown_key(tmp_path: Path) -> None:
    (tmp_path / "train" / "4_x").mkdir(parents=True)
    good = tmp_path / "old.toml"
    good.write_text('pretrained_model_name_or_path = "model.safetensors"\ntrain_data_dir = "train"\n'
                    'network_dim = 12\noptimizer_type = "adamw8bit"\nmem_eff_attn = true\n'
                    '[extra]\nresolution = "768,512"\n', encoding="utf-8")
    result = import_sd_scripts_toml(good)
    values = result.form.values
    assert values["network_dim"] == 12 and values["optimizer_type"] == "AdamW8bit"
    assert values["resolution"] == [768, 512]
    assert values["train_data_dir"] == str(tmp_path / "train")
    assert values["pretrained_model_name_or_path"] == str(tmp_path / "model.safetensors")
    assert any("mem_eff_attn" in w for w in result.warnings)
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rat = 1e-4\n", encoding="utf-8")
    with pytest.raises(CoreError) as problem:
        import_sd_scripts_toml(bad)
    assert "learning_rat" in problem.value.message and "learning_rate" in problem.value.hint


KOHYA_JSON = {
    "LoRA_type": "LyCORIS/LoHa", "pretrained_model_name_or_path": "/models/base.safetensors",
    "train_data_dir": "/data/img", "output_dir": "/data/out", "output_name": "my lora", "network_dim": 16,
    "network_alpha": 8, "conv_dim": 4, "conv_alpha": 1, "learning_rate": 0.0001, "unet_lr": 0.0001,
    "text_encoder_lr": 5e-05, "max_train_epochs": "", "epoch": 12, "optimizer": "AdamW8bit",
    "optimizer_args": "weight_decay=0.05 betas=0.9,0.99", "lr_scheduler": "cosine", "lr_warmup": 10,
    "max_resolution": "768,768", "train_batch_size": 2, "mixed_precision": "bf16", "save_precision": "fp16",
    "clip_skip": 2, "seed": "1234", "caption_extension": ".txt", "cache_latents": True,
    "gradient_checkpointing": True, "xformers": "sdpa", "flip_aug": True, "shuffle_caption": True,
    "keep_tokens": "1", "noise_offset": 0.05, "noise_offset_type": "Original", "multires_noise_iterations": 6,
    "min_snr_gamma": 5, "v2": False, "v_parameterization": False, "sdxl": True, "wandb_api_key": "secret-key",
    "stop_text_encoder_training": 20, "weighted_captions": False, "use_wandb": False,
}


def test_import_kohya_json_maps_keys_and_reports_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "kohya.json"
    path.write_text(json.dumps(KOHYA_JSON), encoding="utf-8")
    result = import_kohya_json(path)
    v = result.form.values
    assert v["network_module"] == "lycoris.kohya"
    assert v["network_args"] == ["algo=loha", "conv_dim=4", "conv_alpha=1"]
    assert v["max_train_epochs"] == 12 and v["optimizer_type"] == "AdamW8bit"
    assert v["optimizer_args"] == ["weight_decay=0.05", "betas=0.9,0.99"]
    assert v["resolution"] == [768, 768] and v["lr_warmup_steps"] == 0.1 and v["seed"] == 1234
    assert v["sdpa"] is True and "xformers" not in v and v["keep_tokens"] == 1 and v["clip_skip"] == 2
    assert v["text_encoder_lr"] == 5e-05 and v["noise_offset"] == 0.05
    assert "multires_noise_iterations" not in v  # noise_offset_type Original: the multires field is unused
    assert "wandb_api_key" not in v and not any("secret-key" in str(x) for x in v.values())
    text = "\n".join(result.warnings)
    assert "wandb_api_key" in text and "WANDB_API_KEY" in text and "secret-key" not in text
    assert "'stop_text_encoder_training' = 20" in text
    assert "weighted_captions" in text and "use_wandb" in text  # empty/off keys are listed too
    assert result.form.project == "my_lora"


def test_steps_formula_counts_images_per_folder(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds", {"10_char": 3, "2_style": 5, "notnumbered": 4})
    (data / "10_char" / ".hidden.png").write_bytes(b"")
    values = {"train_data_dir": str(data), "train_batch_size": 4, "max_train_epochs": 10,
              "gradient_accumulation_steps": 2}
    steps = estimate_steps(values, folders_of(values, None))
    assert [(f.name, f.images, f.repeats) for f in steps.folders] == [("10_char", 3, 10), ("2_style", 5, 2)]
    assert steps.images_per_epoch == 40 and steps.batches_per_epoch == 10 and steps.steps_per_epoch == 5
    assert steps.total_steps == 50
    assert "3 images x 10 repeats (10_char) + 5 images x 2 repeats (2_style) = 40 images per epoch" in steps.formula
    assert "40 / batch size 4 = 10 batches" in steps.formula and "5 steps per epoch x 10 epochs = 50 steps" in steps.formula


def _form(tmp_path: Path, **values) -> TrainingForm:
    data = tmp_path / "ds"
    if not data.exists():
        make_dataset(data, {"10_char": 20})
    base = {"pretrained_model_name_or_path": str(tmp_path / "m.safetensors"), "train_data_dir": str(data),
            "max_train_epochs": 4, "train_batch_size": 2, "cache_latents": True}
    return TrainingForm("demo", {**base, **values})


def _by_option(report, name):
    return [f for f in report.findings if name in f.options]


def test_live_checks_findings_with_fixes(tmp_path: Path, paths: ProjectPaths) -> None:
    fast = dict(include_rules=False)
    report = live_checks(_form(tmp_path, optimizer_type="Prodigy", learning_rate=1e-4), paths, **fast)
    (lr,) = _by_option(report, "learning_rate")
    assert lr.fix == {"learning_rate": 1.0} and "1" in lr.message
    report = live_checks(_form(tmp_path, learning_rate=5e-3), paths, **fast)
    assert _by_option(report, "learning_rate")[0].fix == {"learning_rate": 1e-4}
    report = live_checks(_form(tmp_path, network_dim=8, network_alpha=32), paths, **fast)
    assert _by_option(report, "network_alpha")[0].fix == {"network_alpha": 4.0}
    report = live_checks(_form(tmp_path, network_dim=256), paths, **fast)
    assert _by_option(report, "network_dim")[0].fix["network_dim"] == 32
    sdxl = ModelFacts(family="sdxl", vram_gb=12.0, has_cuda=True)
    report = live_checks(_form(tmp_path, resolution=1024, shuffle_caption=True), paths, sdxl, **fast)
    (memory,) = _by_option(report, "gradient_checkpointing")
    assert memory.fix == {"gradient_checkpointing": True, "cache_text_encoder_outputs": True,
                          "network_train_unet_only": True, "shuffle_caption": False}
    report = live_checks(_form(tmp_path), paths, ModelFacts(family="sdxl", v_prediction=True), **fast)
    (vpred,) = _by_option(report, "v_parameterization")
    assert vpred.level == "error" and vpred.fix == {"v_parameterization": True, "zero_terminal_snr": True}
    # 20 images x 10 repeats / batch 2 = 100 steps per epoch; 4 epochs = 400: no length finding
    report = live_checks(_form(tmp_path), paths, **fast)
    assert report.steps.total_steps == 400 and not _by_option(report, "max_train_epochs")
    report = live_checks(_form(tmp_path, max_train_epochs=1), paths, **fast)
    assert _by_option(report, "max_train_epochs")[0].fix == {"max_train_epochs": 6}
    report = live_checks(_form(tmp_path, max_train_epochs=200), paths, **fast)
    assert _by_option(report, "max_train_epochs")[0].fix == {"max_train_epochs": 30}
    report = live_checks(_form(tmp_path, network_dim="abc"), paths, **fast)
    assert _by_option(report, "network_dim")[0].level == "error"


def test_live_checks_turn_trainer_rules_into_findings(tmp_path: Path, paths: ProjectPaths) -> None:
    report = live_checks(_form(tmp_path, cache_text_encoder_outputs=True), paths)
    (rule,) = _by_option(report, "cache_text_encoder_outputs")
    assert rule.level == "error" and "network_train_unet_only" in rule.reason
    report = live_checks(_form(tmp_path, full_fp16=True, mixed_precision="bf16"), paths)
    assert _by_option(report, "full_fp16")[0].level == "error"
    clean = live_checks(_form(tmp_path), paths)
    assert not clean.errors, clean.errors


def test_base_models_on_disk_with_detected_type(tmp_path: Path, tiny_sd15, tiny_sdxl) -> None:
    models = tmp_path / "models"
    models.mkdir()
    import shutil
    shutil.copy(tiny_sdxl.single_file, models / "NoobAI-XL-Vpred-v1.0.safetensors")
    shutil.copy(tiny_sd15.single_file, models / "sd15_tiny.safetensors")
    shutil.copytree(tiny_sd15.diffusers_dir, models / "sd15_folder")
    (models / "broken.safetensors").write_bytes(b"\x00" * 4)
    found = {m.path.name: m for m in find_base_models(models, load_presets())}
    assert found["NoobAI-XL-Vpred-v1.0.safetensors"].family == "sdxl"
    assert found["NoobAI-XL-Vpred-v1.0.safetensors"].v_prediction is True  # from model_presets.toml
    assert found["NoobAI-XL-Vpred-v1.0.safetensors"].model_preset == "noobai_xl_vpred"
    assert found["sd15_tiny.safetensors"].family == "sd1" and found["sd15_folder"].family == "sd1"
    assert found["sd15_tiny.safetensors"].label == "sd15_tiny.safetensors (SD1.5)"
    assert not found["broken.safetensors"].usable
    shapes, _ = read_safetensors_header(models / "sd15_tiny.safetensors")
    assert any(key.startswith("model.diffusion_model.") for key in shapes)
    assert describe_model(models / "sd15_tiny.safetensors").v_prediction is None


def test_one_project_name_rule_for_datasets_and_training(tmp_path: Path, paths: ProjectPaths) -> None:
    """The dataset panel's folder and the training form's project agree on every name."""
    from core.datasets.importers import project_folder
    from core.datasets.naming import project_name

    for typed, safe in (("Alice Smith", "Alice Smith"), ("my:char?", "my_char_"), ("  café 猫 ", "café 猫"),
                        ("my_lora", "my_lora")):
        assert project_name(typed) == safe
        assert project_folder(paths.datasets, typed).name == safe
        plan = plan_config(TrainingForm(typed, {}), paths)
        assert plan.project == safe and plan.training_path == paths.training_configs / safe / f"{safe}.toml"
        assert plan.values["output_name"] == safe
    saved = save_config(TrainingForm("Alice Smith", {"network_dim": 8}), paths)
    assert list_configs(paths, "Alice Smith") == ["Alice Smith"]
    assert load_config(paths, "Alice Smith", "Alice Smith").form.values["network_dim"] == 8
    assert f"--config_file '{saved.path}'" in saved.path.read_text(encoding="utf-8")  # quoted: it has a space
    report = live_checks(_form(tmp_path), paths, include_rules=False)
    assert not [f for f in report.findings if "Project name" in f.message]
    renamed = live_checks(TrainingForm("my:char", _form(tmp_path).values), paths, include_rules=False)
    (note,) = [f for f in renamed.findings if "Project name" in f.message]
    assert note.level == "info" and "'my_char'" in note.message and renamed.plan.project == "my_char"


def test_repeats_setting_is_written_per_subset_counted_and_read_back(tmp_path: Path, paths: ProjectPaths) -> None:
    data = make_dataset(tmp_path / "ds", {"10_char": 3, "2_style": 2})
    reg = make_dataset(tmp_path / "reg", {"1_person": 4})
    values = {"pretrained_model_name_or_path": str(tmp_path / "m.safetensors"), "train_data_dir": str(data),
              "reg_data_dir": str(reg), "max_train_epochs": 10, "train_batch_size": 1}
    plan = plan_config(TrainingForm("rep", values, repeats=7), paths)
    subsets = plan.dataset["datasets"][0]["subsets"]
    assert [(Path(s["image_dir"]).name, s["num_repeats"]) for s in subsets] == [
        ("10_char", 7), ("2_style", 7), ("1_person", 1)]
    report = live_checks(TrainingForm("rep", values, repeats=7), paths, include_rules=False)
    # 35 training samples; the 4 regularisation images are balanced to 35 too (the trainer's rule)
    assert report.steps.images_per_epoch == 2 * (3 * 7 + 2 * 7) and report.steps.total_steps == 700
    assert "3 images x 7 repeats (10_char) + 2 images x 7 repeats (2_style)" in report.steps.formula
    saved = save_config(TrainingForm("rep", values, repeats=7), paths)
    (dataset,), _ = build_datasets(load_training_config(saved.path))
    assert {Path(s.image_dir).name: s.num_repeats for s in dataset.subsets} == {"10_char": 7, "2_style": 7,
                                                                                "1_person": 1}
    loaded = load_config(paths, "rep", "rep").form
    assert loaded.repeats == 7 and "dataset_config" not in loaded.values
    assert plan_config(loaded, paths).training_text == saved.plan.training_text
    unset = save_config(TrainingForm("rep", values), paths, "plain")
    assert load_config(paths, "rep", "plain").form.repeats is None
    assert [s["num_repeats"] for s in unset.plan.dataset["datasets"][0]["subsets"]] == [10, 2, 1]
    bad = live_checks(TrainingForm("rep", values, repeats=0), paths, include_rules=False)
    assert bad.plan is None and any("Repeats" in f.message for f in bad.errors)


SDXL_FAMILY = ("sdxl", "pony", "illustrious", "noobai", "noobai_vpred")


@pytest.mark.parametrize("vram_gb", [12.0, 16.0])
def test_sdxl_family_presets_are_safe_on_a_12_to_16_gb_card(tmp_path: Path, paths: ProjectPaths,
                                                           vram_gb: float) -> None:
    presets = load_training_presets()
    assert {key for key, preset in presets.items() if preset.base == "sdxl"} == set(SDXL_FAMILY)
    data = make_dataset(tmp_path / "ds", {"10_char": 20})
    for key in SDXL_FAMILY:
        preset = presets[key]
        form = TrainingForm("xl", {**preset.values, "pretrained_model_name_or_path": str(tmp_path / "xl.safetensors"),
                                   "train_data_dir": str(data)})
        facts = ModelFacts(family="sdxl", v_prediction=preset.v_prediction, vram_gb=vram_gb, has_cuda=True)
        report = live_checks(form, paths, facts, include_rules=True)
        loud = [(f.level, f.message) for f in report.findings if f.level in ("warning", "error")]
        assert not loud, (key, loud)
        assert report.steps.total_steps == 1000  # 20 x 10 / batch 2 x 10 epochs: a real run, not a toy
    # The check itself still fires for settings that would not fit.
    risky = TrainingForm("xl", {**presets["pony"].values, "pretrained_model_name_or_path": "xl.safetensors",
                                "train_data_dir": str(data), "cache_text_encoder_outputs": False})
    report = live_checks(risky, paths, ModelFacts(family="sdxl", vram_gb=vram_gb, has_cuda=True), include_rules=False)
    (memory,) = [f for f in report.findings if "VRAM" in f.message]
    assert memory.level == "warning" and memory.fix["cache_text_encoder_outputs"] is True


def test_every_basic_option_has_a_plain_title_shown_in_the_docs() -> None:
    from trainer.options import OPTIONS
    from trainer.options.docs import render

    basic = [option for option in OPTIONS if option.level == "basic"]
    assert basic and all(option.title for option in basic), [o.name for o in basic if not o.title]
    assert BY_NAME["network_dim"].title == "Network size (dim)"
    text = render()
    assert "### `network_dim`\n\n**Network size (dim)**\n" in text
