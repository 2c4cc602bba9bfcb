"""The training panel's usability fixes: basic Repeats, Save with red errors, the project name following the
dataset (one name rule with the dataset panel), empty-dropdown hints, plain-language labels, the preview."""
from __future__ import annotations

from pathlib import Path

from core.paths import ProjectPaths
from tests.test_training_panel import image_folders, make_panel
from trainer.config import load_training_config
from trainer.data.blueprint import build_datasets
from widgets.context import CONFIG_FILE, NotebookContext
from widgets.training_panel import TrainingPanel


def _with_model_and_data(panel: TrainingPanel, tmp_path: Path, layout: dict[str, int]) -> Path:
    data = image_folders(tmp_path / "ds", layout)
    panel.fields["pretrained_model_name_or_path"].widget.value = str(tmp_path / "m.safetensors")
    panel.fields["train_data_dir"].widget.value = str(data)
    return data


def test_basic_repeats_override_every_folder_in_steps_file_and_trainer(tmp_path: Path) -> None:
    panel = make_panel(tmp_path)
    data = _with_model_and_data(panel, tmp_path, {"10_char": 6, "5_style": 4})
    reg = image_folders(tmp_path / "reg", {"1_person": 2})
    panel.project.value = "rep"
    panel.fields["train_batch_size"].widget.value = 2
    panel.fields["max_train_epochs"].toggle.value = True
    panel.fields["max_train_epochs"].widget.value = 20
    assert panel.repeats.box in panel.root.children or any(panel.repeats.box in getattr(c, "children", ())
                                                           for c in panel.root.children)
    assert "Repeats" in panel.repeats.label.value
    panel.wait()
    assert "6 images x 10 repeats (10_char) + 4 images x 5 repeats (5_style) = 80 images per epoch" in \
        panel.steps_html.value
    panel.repeats.toggle.value = True
    panel.repeats.widget.value = 3
    panel.advanced.value = True
    panel.fields["reg_data_dir"].widget.value = str(reg)
    panel.wait()
    # (6 + 4) x 3 = 30 training samples; the 2 regularisation images are balanced to 30 as well (the
    # trainer's rule) = 60 per epoch / batch 2 = 30 steps x 20 epochs = 600
    text = panel.steps_html.value
    assert "6 images x 3 repeats (10_char) + 4 images x 3 repeats (5_style) + 2 regularisation images " \
           "balanced to 30 (1_person) = 60 images per epoch" in text, text
    assert "Total steps: 600" in text and "Repeats = 3 for every image folder" in text
    saved = panel.save()
    (dataset,), _ = build_datasets(load_training_config(saved))
    repeats = {Path(s.image_dir).name: (s.num_repeats, s.is_reg) for s in dataset.subsets}
    assert repeats == {"10_char": (3, False), "5_style": (3, False), "1_person": (1, True)}
    assert sorted(p.name for p in data.iterdir()) == ["10_char", "5_style"]  # folders are not renamed

    other = make_panel(tmp_path)  # the setting comes back on Load
    other.project.value = "rep"
    other.load_choice.value = "rep"
    other.load_button.click()
    assert other.repeats.value() == 3, other.messages.text
    other.repeats.toggle.value = False  # unset: the folder names' numbers again
    other.wait()
    assert "6 images x 10 repeats (10_char)" in other.steps_html.value


def test_save_with_red_errors_warns_and_never_becomes_the_monitor_config(tmp_path: Path) -> None:
    panel = make_panel(tmp_path)
    data = image_folders(tmp_path / "ds", {"10_char": 20})
    panel.fields["train_data_dir"].widget.value = str(data)  # no base model yet
    panel.config_name.value = "draft"
    panel.save_button.click()
    draft = panel.context.paths.training_configs / "ds" / "draft.toml"
    assert draft.is_file()  # saved all the same: nothing typed is lost
    text = panel.messages.text
    assert "cannot train yet" in text and "No base model chosen" in text and "lora-warning" in text
    assert panel.context.get(CONFIG_FILE) is None
    panel.fields["pretrained_model_name_or_path"].widget.value = str(tmp_path / "m.safetensors")
    panel.overwrite.value = True
    panel.save_button.click()
    assert panel.context.get(CONFIG_FILE) == draft and "cannot train" not in panel.messages.text
    panel.fields["pretrained_model_name_or_path"].widget.value = ""
    panel.save_button.click()  # the monitor's file now cannot train: it is no longer offered
    assert panel.context.get(CONFIG_FILE) is None and "cannot train yet" in panel.messages.text
    panel.start_button.click()
    assert "Not started" in panel.messages.text and panel.context.get(CONFIG_FILE) is None


def test_project_name_follows_the_dataset_until_the_user_names_it(tmp_path: Path) -> None:
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work").ensure()
    image_folders(paths.datasets / "alice", {"10_alice": 2})
    image_folders(paths.datasets / "Bob Smith", {"5_bob": 1})
    panel = TrainingPanel(NotebookContext(paths=paths), has_cuda=False)
    assert panel.project.value == "my_lora"
    panel.dataset_choice.value = str(paths.datasets / "alice")
    assert panel.project.value == "alice"
    panel.dataset_choice.value = str(paths.datasets / "Bob Smith")  # still the name the panel chose: follows
    assert panel.project.value == "Bob Smith"
    panel.fields["pretrained_model_name_or_path"].widget.value = str(tmp_path / "m.safetensors")
    saved = panel.save()  # the same project rule as the dataset panel: "Bob Smith" is fine
    assert saved == paths.training_configs / "Bob Smith" / "Bob Smith.toml"
    assert load_training_config(saved).output_name == "Bob Smith"
    panel.project.value = "mine"
    panel.dataset_choice.value = str(paths.datasets / "alice")
    assert panel.project.value == "mine"


def test_dataset_panel_project_with_a_space_trains_under_the_same_name(tmp_path: Path) -> None:
    from widgets.dataset_panel import DatasetPanel

    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work").ensure()
    context = NotebookContext(paths=paths)
    datasets = DatasetPanel(context)
    datasets.project_name.value = "Alice Smith"
    datasets.concept.value = "alice"
    datasets.create_button.click()
    folder = paths.datasets / "Alice Smith" / "10_alice"
    assert folder.is_dir(), datasets.messages.text
    image_folders(folder.parent, {"10_alice": 3})
    panel = TrainingPanel(context, has_cuda=False)
    assert panel.project.value == "Alice Smith"
    assert panel.fields["train_data_dir"].value() == str(paths.datasets / "Alice Smith")
    panel.fields["pretrained_model_name_or_path"].widget.value = str(tmp_path / "m.safetensors")
    panel.save_button.click()
    assert "Saved" in panel.messages.text, panel.messages.text
    assert (paths.training_configs / "Alice Smith" / "Alice Smith.toml").is_file()


def test_empty_dropdowns_show_what_to_do(tmp_path: Path) -> None:
    panel = make_panel(tmp_path)
    assert panel.load_choice.options == (("(no saved configs for my_lora)", ""),)
    panel.load_button.click()
    assert "No saved config chosen" in panel.messages.text
    panel.advanced.value = True
    settings = panel.folder_settings
    assert settings.folder.options == (("(choose a dataset first)", ""),)
    settings.option.value = "flip_aug"
    settings.value.value = "true"
    settings.set_button.click()
    assert "no N_name folder" in settings.note.value and settings.overrides == {}
    image_folders(tmp_path / "ds", {"3_a": 1})
    panel.fields["train_data_dir"].widget.value = str(tmp_path / "ds")
    assert settings.folder.options == ("3_a",)
    settings.value.value = ""
    settings.set_button.click()
    assert "type a value first" in settings.note.value and settings.overrides == {}
    settings.value.value = "true"
    settings.set_button.click()
    assert settings.note.value == "" and settings.overrides == {"3_a": {"flip_aug": "true"}}


def _boxes_under(widget) -> list:
    """Every widget shown under ``widget`` (hidden boxes and their children left out)."""
    if getattr(getattr(widget, "layout", None), "display", "") == "none":
        return []
    found = [widget]
    for child in getattr(widget, "children", ()):
        found += _boxes_under(child)
    return found


def test_basic_labels_are_plain_words_and_advanced_shows_each_field_once(tmp_path: Path) -> None:
    panel = make_panel(tmp_path)
    dim = panel.fields["network_dim"]
    assert dim.label.value == "Network size (dim)" and "network_dim" in dim.label.tooltip
    dim.help_button.value = True
    assert "Network size (dim)" in dim.help_html.value and "<code>network_dim</code>" in dim.help_html.value
    for name in ("learning_rate", "max_train_epochs", "train_batch_size", "mixed_precision", "network_module"):
        label = panel.fields[name].label.value
        assert name not in label and panel.fields[name].option.title == label, name
    panel.advanced.value = True
    everything = _boxes_under(panel.root)
    for name in ("pretrained_model_name_or_path", "train_data_dir"):
        assert everything.count(panel.fields[name].box) == 1, name
    assert everything.count(panel.fields["network_dim"].box) == 1  # basic box hidden, accordion holds it once
    assert panel.fields["seed"].label.value == "Random seed"
    assert panel.fields["ip_noise_gamma"].label.value == "<code>ip_noise_gamma</code>"  # no title: the name


def test_preview_shows_exactly_the_files_save_writes(tmp_path: Path) -> None:
    import html
    import re

    panel = make_panel(tmp_path)
    _with_model_and_data(panel, tmp_path, {"10_char": 20, "2_style": 3})
    panel.project.value = "preview"
    panel.fields["network_dim"].widget.value = 24
    panel.config_name.value = "try 1"
    panel.preview_toggle.value = True
    panel.wait()
    assert panel.preview.layout.display == ""
    shown = [html.unescape(text) for text in
             re.findall(r'<div class="lora-help lora-mono">(.*?)</div>', panel.preview.value, re.S)]
    titles = [html.unescape(t) for t in re.findall(r"<b>(.*?)</b>", panel.preview.value)]
    saved = panel.save()
    assert titles == [str(saved), str(saved.with_name("try 1_dataset.toml"))]
    assert shown == [saved.read_text(encoding="utf-8"), saved.with_name("try 1_dataset.toml").read_text(encoding="utf-8")]
    assert "network_dim = 24" in shown[0]
    panel.preview_toggle.value = False
    assert panel.preview.layout.display == "none"
