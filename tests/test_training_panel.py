"""The training panel driven from code: every widget reaches the TOML, presets, fixes, steps, files, a real run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ipywidgets as w

from core.paths import ProjectPaths
from tests.test_train_end_to_end import make_learnable_dataset
from trainer.config import load_training_config
from trainer.data.blueprint import DATASET_FIELDS, SUBSET_FIELDS, build_datasets
from trainer.options import BY_NAME, DATASET, SUBSET, TRAIN
from trainer.options.schema import BOOL, CHOICE, FLOAT, FLOAT_LIST, INT, NUMBER, PATH, RESOLUTION, STR, STR_LIST
from widgets.context import CONFIG_FILE, NotebookContext
from widgets.training_panel import TrainingPanel



def make_panel(tmp_path: Path, **kwargs) -> TrainingPanel:
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work").ensure()
    return TrainingPanel(NotebookContext(paths=paths), has_cuda=False, **kwargs)


def image_folders(root: Path, layout: dict[str, int]) -> Path:
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            (root / folder / f"{index}.png").write_bytes(b"")
    return root


def _float_for(option) -> float:
    for candidate in (0.25, 0.5, 0.75):
        low_ok = option.minimum is None or candidate >= option.minimum
        high_ok = option.maximum is None or candidate <= option.maximum
        if low_ok and high_ok and candidate != option.default:
            return candidate
    raise AssertionError(option.name)


def _int_for(option) -> int:
    start = option.default if option.default is not None else (option.minimum or 0) + 1
    candidate = int(start) + 1
    if option.maximum is not None and candidate > option.maximum:
        candidate = int(start) - 1
    return candidate


def non_default(option, folders: dict[str, Path]) -> tuple[Any, Any]:
    """(what to put in the widget, the typed value the trainer must read)."""
    kind = option.kind
    if kind == BOOL:
        return (not option.default), (not option.default)
    if option.choices:
        labelled = [value for value, label in option.labels if label != str(value) and value != option.default]
        value = labelled[0] if labelled else next(c for c in option.choices if c != option.default)
        return value, value
    if kind == INT:
        value = _int_for(option)
        return value, value
    if kind in (FLOAT, NUMBER):
        value = _float_for(option)
        return value, value
    if kind == PATH:
        path = folders.get(option.name, folders["root"] / f"{option.name}.file")
        return str(path), str(path)
    if kind == STR:
        text = ".cap" if option.name == "caption_extension" else f"{option.name} text"
        return text, text
    if kind == STR_LIST:
        return "a=1\nbetas=0.9,0.99", ["a=1", "betas=0.9,0.99"]
    if kind == FLOAT_LIST:
        return "0.0002, 0.0001", [0.0002, 0.0001]
    if kind == RESOLUTION:
        return "768,640", [768, 640]
    raise AssertionError(f"no test value for kind {kind}")


def set_widget(field, shown: Any) -> None:
    if field.toggle is not None:
        field.toggle.value = True
    field.widget.value = shown


def test_every_widget_reaches_the_toml_and_the_trainer(tmp_path: Path) -> None:
    folders = {"root": tmp_path, "train_data_dir": image_folders(tmp_path / "train", {"10_char": 2, "3_style": 1}),
               "reg_data_dir": image_folders(tmp_path / "reg", {"1_person": 1}),
               "image_dir": image_folders(tmp_path / "extra", {"": 1})}
    panel = make_panel(tmp_path)
    panel.advanced.value = True  # builds every option's widget
    assert set(panel.fields) == set(BY_NAME)
    expected: dict[str, Any] = {}
    for name, field in panel.fields.items():
        option = field.option
        if name == "dataset_config":
            continue  # the user's own dataset config replaces the one the panel writes: checked below
        if option.kind == CHOICE and len(option.choices) == 1:
            assert option.choices == (option.default,)  # nothing else to choose (save_model_as)
            continue
        shown, typed = non_default(option, folders)
        set_widget(field, shown)
        if any(label != str(value) and value != option.default for value, label in option.labels):
            assert isinstance(field.widget, w.Dropdown)
            assert field.widget.label != str(field.widget.value)  # labels are shown, values stored
        expected[name] = typed
    assert panel.fields["xformers"].widget.disabled and "not used" in panel.fields["xformers"].flag_html.value
    assert "NVIDIA GPU" in panel.fields["fp8_base"].flag_html.value  # needs_cuda, and this panel has no GPU
    panel.fields["network_dim"].help_button.value = True
    assert "network_dim" in panel.fields["network_dim"].help_html.value
    assert panel.fields["network_dim"].help_html.layout.display == ""
    panel.project.value = "every"
    panel.config_name.value = "all_options"
    saved = panel.save()
    # Every option at a non-default value contradicts itself somewhere: saved, but not the monitor's config.
    assert panel.report.errors and panel.context.get(CONFIG_FILE) is None
    assert "cannot train yet" in panel.messages.text

    config = load_training_config(saved)
    train_level = [name for name in expected if TRAIN in BY_NAME[name].scopes]
    assert len(train_level) > 100
    for name in train_level:
        assert config[name] == expected[name], name
    assert config.dataset_config.endswith("all_options_dataset.toml")
    (dataset,), _ = build_datasets(config)
    for name in expected:
        scopes = BY_NAME[name].scopes
        if TRAIN not in scopes and DATASET in scopes:
            assert name in DATASET_FIELDS and getattr(dataset, name) == expected[name], name
    by_dir = {Path(s.image_dir).name: s for s in dataset.subsets}
    assert set(by_dir) == {"10_char", "3_style", "1_person", "extra"}
    extra = by_dir["extra"]
    for name in expected:
        if SUBSET in BY_NAME[name].scopes:
            assert name in SUBSET_FIELDS and getattr(extra, name) == expected[name], name
    assert by_dir["10_char"].num_repeats == 10 and by_dir["1_person"].is_reg is True
    assert by_dir["3_style"].caption_extension == ".cap"  # train-level caption options cascade to every folder

    # dataset_config on its own: the user's file is kept as it is.
    own = tmp_path / "own_dataset.toml"
    own.write_text(f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{folders["image_dir"]}"\n', encoding="utf-8")
    second = make_panel(tmp_path / "second")
    second.fields["pretrained_model_name_or_path"].widget.value = str(tmp_path / "m.safetensors")
    second.advanced.value = True
    second.fields["dataset_config"].widget.value = str(own)
    config = load_training_config(second.save())
    assert config.dataset_config == str(own)


def test_preset_sets_values_and_base_model_suggests_one(tmp_path: Path, tiny_sdxl) -> None:
    panel = make_panel(tmp_path)
    panel.preset.value = "pony"
    preset = panel.presets["pony"]
    for name, value in preset.values.items():
        option = BY_NAME[name]
        assert panel.fields[name].value() == option.normalise(option.coerce(value)) or \
            option.coerce(panel.fields[name].value()) == option.coerce(value), name
    assert panel.fields["network_module"].widget.label == "LoRA / LoCon"
    path = _vpred_model(panel, tiny_sdxl)
    assert "SDXL, v-pred" in dict((v, k) for k, v in panel.base_model.options)[path]
    panel.base_model.value = path  # the user chose Pony: the model's preset is offered, not forced
    assert panel.preset.value == "pony" and panel.fields["v_parameterization"].value() is False
    panel.apply_preset_button.click()
    assert panel.preset.value == "noobai_vpred"
    assert panel.fields["v_parameterization"].value() is True
    assert panel.fields["pretrained_model_name_or_path"].value() == path


def _vpred_model(panel: TrainingPanel, tiny_sdxl) -> str:
    import shutil
    shutil.copy(tiny_sdxl.single_file, panel.context.paths.models / "NoobAI-XL-Vpred-v1.0.safetensors")
    panel.refresh_models_button.click()
    (path,) = [value for label, value in panel.base_model.options if "NoobAI" in label]
    return path


def test_a_model_preset_never_overwrites_edited_or_loaded_values(tmp_path: Path, tiny_sdxl) -> None:
    fresh = make_panel(tmp_path / "fresh")
    fresh.base_model.value = _vpred_model(fresh, tiny_sdxl)  # untouched form: the preset is applied at once
    assert fresh.preset.value == "noobai_vpred" and fresh.fields["network_dim"].value() == 16
    assert fresh.apply_preset_button.layout.display == "none"

    panel = make_panel(tmp_path / "edited")
    panel.fields["network_dim"].widget.value = 48  # the user's own value
    path = _vpred_model(panel, tiny_sdxl)  # the only model on disk: chosen, its preset offered
    assert panel.base_model.value == path
    assert panel.fields["network_dim"].value() == 48 and panel.preset.value == ""
    assert not panel.form().values.get("v_parameterization")
    assert "NoobAI XL v-pred" in panel.suggestion_html.value and panel.apply_preset_button.layout.display == ""
    panel.apply_preset_button.click()
    assert panel.fields["network_dim"].value() == 16 and panel.fields["v_parameterization"].value() is True
    assert panel.apply_preset_button.layout.display == "none"

    # Import: the dropdown follows the file's model path; the file's values stay.
    toml = tmp_path / "mine.toml"
    toml.write_text(f'pretrained_model_name_or_path = "{path}"\nnetwork_dim = 40\n', encoding="utf-8")
    panel.import_path.value = str(toml)
    panel.import_button.click()
    assert panel.base_model.value == path and panel.fields["network_dim"].value() == 40
    assert panel.preset.value == "" and panel.apply_preset_button.layout.display == "none"
    other = tmp_path / "elsewhere.safetensors"
    toml.write_text(f'pretrained_model_name_or_path = "{other}"\nnetwork_dim = 40\n', encoding="utf-8")
    panel.import_button.click()
    assert panel.base_model.value == "" and panel.fields["pretrained_model_name_or_path"].value() == str(other)
    panel.base_model.value = path  # imported values are the user's too: only offered
    assert panel.fields["network_dim"].value() == 40 and panel.preset.value == ""
    assert panel.apply_preset_button.layout.display == ""

    # Reset: defaults, then the model's preset (the form is untouched again).
    panel.fields["network_dim"].widget.value = 99
    panel.reset_button.click()
    assert panel.preset.value == "noobai_vpred" and panel.fields["network_dim"].value() == 16
    assert panel.fields["v_parameterization"].value() is True and "reset" in panel.messages.text
    assert panel.fields["pretrained_model_name_or_path"].value() == path  # the model stays


def test_fix_button_changes_the_widget_and_steps_show_the_formula(tmp_path: Path) -> None:
    data = image_folders(tmp_path / "ds", {"10_char": 6, "5_style": 4})
    panel = make_panel(tmp_path)
    panel.fields["pretrained_model_name_or_path"].widget.value = str(tmp_path / "m.safetensors")
    panel.fields["train_data_dir"].widget.value = str(data)
    panel.fields["train_batch_size"].widget.value = 4
    panel.fields["max_train_epochs"].toggle.value = True
    panel.fields["max_train_epochs"].widget.value = 10
    panel.wait()
    # (6 x 10 + 4 x 5) = 80 images per epoch / batch 4 = 20 steps per epoch, x 10 epochs = 200 steps
    text = panel.steps_html.value
    assert "Total steps: 200" in text
    assert "6 images x 10 repeats (10_char) + 4 images x 5 repeats (5_style) = 80 images per epoch" in text
    assert "20 steps per epoch x 10 epochs = 200 steps" in text
    panel.fields["optimizer_type"].widget.value = "Prodigy"
    panel.wait()
    (fix,) = [b for b in panel.fix_buttons if "learning_rate" in b.tooltip]
    fix.click()
    assert panel.fields["learning_rate"].widget.value == 1.0
    panel.wait()
    assert not [b for b in panel.fix_buttons if "learning_rate" in b.tooltip]
    panel.advanced.value = True
    panel.fields["cache_text_encoder_outputs"].widget.value = True
    panel.wait()  # the trainer's own rule arrives from the worker
    assert "cache_text_encoder_outputs needs frozen text encoders" in "".join(
        getattr(row, "value", "") + "".join(getattr(c, "value", "") for c in getattr(row, "children", ()))
        for row in panel.findings_box.children)


def test_save_load_round_trip_and_no_silent_overwrite(tmp_path: Path) -> None:
    data = image_folders(tmp_path / "ds", {"4_a": 2, "2_b": 1})
    panel = make_panel(tmp_path)
    panel.project.value = "roundtrip"
    panel.fields["pretrained_model_name_or_path"].widget.value = str(tmp_path / "m.safetensors")
    panel.fields["train_data_dir"].widget.value = str(data)
    panel.fields["network_dim"].widget.value = 24
    panel.advanced.value = True
    panel.fields["noise_offset"].toggle.value = True
    panel.fields["noise_offset"].widget.value = 0.05
    panel.folder_settings.folder.value = "2_b"
    panel.folder_settings.option.value = "flip_aug"
    panel.folder_settings.value.value = "true"
    panel.folder_settings.set_button.click()
    panel.config_name.value = "v1"
    assert panel.load_choice.options == (("(no saved configs for roundtrip)", ""),)
    panel.save_button.click()
    assert "Saved" in panel.messages.text and panel.load_choice.options == ("v1",)
    panel.fields["network_dim"].widget.value = 64
    panel.save_button.click()
    assert "already exists" in panel.messages.text
    panel.fields["noise_offset"].toggle.value = False
    panel.folder_settings.replace({})
    panel.load_choice.value = "v1"
    panel.load_button.click()
    assert panel.fields["network_dim"].widget.value == 24
    assert panel.fields["noise_offset"].value() == 0.05
    assert panel.folder_settings.overrides == {"2_b": {"flip_aug": True}}
    assert panel.fields["train_data_dir"].value() == str(data)


def test_import_kohya_json_and_sd_scripts_toml(tmp_path: Path) -> None:
    kohya = tmp_path / "kohya.json"
    kohya.write_text(json.dumps({"LoRA_type": "Standard", "network_dim": 48, "network_alpha": 24,
                                 "max_resolution": "1024,1024", "optimizer": "Prodigy", "learning_rate": 1,
                                 "epoch": 6, "weighted_captions": True}), encoding="utf-8")
    panel = make_panel(tmp_path)
    panel.import_path.value = str(kohya)
    panel.import_button.click()
    assert panel.fields["network_dim"].widget.value == 48
    assert panel.fields["optimizer_type"].widget.value == "Prodigy"
    assert panel.fields["resolution"].widget.value == "1024"
    assert panel.fields["max_train_epochs"].value() == 6
    assert "weighted_captions" in panel.messages.text  # unmapped key reported
    toml = tmp_path / "old.toml"
    toml.write_text('[net]\nnetwork_dim = 12\n[train]\nlr_scheduler = "cosine"\nseed = 9\n', encoding="utf-8")
    panel.import_path.value = str(toml)
    panel.import_button.click()
    assert panel.fields["network_dim"].widget.value == 12 and panel.fields["seed"].value() == 9
    assert panel.fields["optimizer_type"].widget.value == "AdamW"  # reset: the TOML did not set it
    toml.write_text("network_dimension = 12\n", encoding="utf-8")
    panel.import_button.click()
    assert "network_dimension" in panel.messages.text and "network_dim" in panel.messages.text


def test_basic_training_started_from_the_panel_runs_in_the_monitor_to_a_lora(tmp_path: Path, tiny_sd15) -> None:
    """The notebook's chain: basic settings -> Start -> the monitor runs the trainer and follows it to done."""
    from widgets.monitor_panel import MonitorPanel

    data = make_learnable_dataset(tmp_path)
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work").ensure()
    context = NotebookContext(paths=paths)
    monitor = MonitorPanel(context, poll_interval=0.2, auto_attach=False)
    panel = TrainingPanel(context, on_start=monitor.start, has_cuda=False)
    try:
        panel.project.value = "tiny_run"
        panel.fields["pretrained_model_name_or_path"].widget.value = str(tiny_sd15.diffusers_dir)
        panel.fields["train_data_dir"].widget.value = str(data)
        values = {"resolution": "64", "network_dim": 4, "network_alpha": 4.0, "learning_rate": 3e-3,
                  "train_batch_size": 2}
        for name, value in values.items():
            panel.fields[name].widget.value = value
        panel.advanced.value = True
        panel.fields["max_train_steps"].widget.value = 2
        panel.fields["seed"].toggle.value = True
        panel.start_button.click()
        config_path = Path(panel.context.get(CONFIG_FILE))
        assert config_path.is_file(), panel.messages.text
        assert monitor.wait(timeout=600), monitor.messages.text
        assert monitor.progress.status == "done", monitor.messages.text + monitor.log_html.value
        assert (monitor.progress_bar.value, monitor.progress_bar.max) == (2, 2)
        lora = paths.outputs / "tiny_run" / "tiny_run.safetensors"
        assert lora.is_file() and lora.stat().st_size > 0
        assert "tiny_run.safetensors" in monitor.messages.text
    finally:
        if monitor.monitor is not None and monitor.monitor.handle.is_running:
            monitor.monitor.handle.kill()
        monitor.close()


def test_dataset_dropdown_lists_dataset_projects_and_fills_train_data_dir(tmp_path: Path) -> None:
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work").ensure()
    image_folders(paths.datasets / "alice", {"10_alice": 2})
    image_folders(paths.datasets / "bob", {"5_bob": 1})
    panel = TrainingPanel(NotebookContext(paths=paths), has_cuda=False)
    labels = [label for label, _value in panel.dataset_choice.options]
    assert labels == ["(type a path below)", "alice", "bob"]
    panel.fields["pretrained_model_name_or_path"].widget.value = str(tmp_path / "m.safetensors")
    panel.dataset_choice.value = str(paths.datasets / "alice")
    assert panel.fields["train_data_dir"].value() == str(paths.datasets / "alice")
    panel.wait()
    assert "2 images x 10 repeats (10_alice)" in panel.steps_html.value, panel.steps_html.value
    panel.fields["train_data_dir"].widget.value = str(tmp_path / "elsewhere")
    assert panel.dataset_choice.value == ""
