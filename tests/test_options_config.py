"""The options table, TOML loading with overrides, and the dataset blueprint (cascade and N_name folders)."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import load_training_config, parse_cli_overrides, resolve_path_value
from trainer.data.blueprint import build_datasets, check_field_coverage
from trainer.errors import TrainerError
from trainer.options import BY_NAME, NOT_IMPLEMENTED, OPTIONS, get_option
from trainer.options import docs as options_docs


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_every_option_row_is_complete_and_its_default_validates() -> None:
    for option in OPTIONS:
        assert option.help.strip(), option.name
        assert option.group, option.name
        if option.default is not None:
            assert option.coerce(option.default) == option.default or option.kind == "resolution", option.name


def test_docs_options_md_is_current() -> None:
    on_disk = options_docs.DOC_PATH.read_text(encoding="utf-8")
    assert on_disk == options_docs.render(), "docs/OPTIONS.md is stale: run python -m trainer.options.docs"
    for option in OPTIONS:
        assert f"### `{option.name}`" in on_disk


def test_blueprint_fields_match_the_table() -> None:
    assert check_field_coverage() == []


def test_unknown_key_names_the_closest_known_one(tmp_path: Path) -> None:
    config = write(tmp_path / "cfg.toml", "[network]\nnetwork_dimm = 8\n")
    with pytest.raises(TrainerError) as caught:
        load_training_config(config)
    assert "network_dimm" in str(caught.value) and "network_dim" in caught.value.hint
    assert str(config) in str(caught.value)


def test_sections_are_ignored_and_cli_overrides_the_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "cfg.toml",
        '[model]\npretrained_model_name_or_path = "base/model.safetensors"\n'
        '[network]\nnetwork_dim = 8\nnetwork_alpha = 4\nnetwork_args = ["conv_dim=4"]\n'
        '[optimizer]\noptimizer_type = "adamw8bit"\nlearning_rate = 1e-4\n'
        '[saving]\noutput_dir = "out"\n',
    )
    loaded = load_training_config(config, parse_cli_overrides(["--network_dim", "32", "--cache_latents"]), cwd=tmp_path)
    assert loaded.network_dim == 32 and loaded["network_alpha"] == 4.0
    assert loaded.optimizer_type == "AdamW8bit"  # stored in the table's spelling
    assert loaded.network_args == ["conv_dim=4"]
    assert loaded.cache_latents is True and loaded.is_set("cache_latents") and not loaded.is_set("seed")
    assert loaded.sources["network_dim"] == "the command line"
    # Relative paths resolve against the config file's folder, not the working directory.
    assert loaded.output_dir == str((tmp_path / "out").resolve())
    assert loaded.pretrained_model_name_or_path == str((tmp_path / "base" / "model.safetensors").resolve())
    assert loaded.max_train_steps == BY_NAME["max_train_steps"].default


def test_values_are_checked_with_a_message_naming_the_option(tmp_path: Path) -> None:
    cases = {
        "network_dim = 0": "network_dim",
        'mixed_precision = "fp8"': "mixed_precision",
        "caption_dropout_rate = 1.5": "caption_dropout_rate",
        'train_batch_size = "two"': "train_batch_size",
        "max_token_length = 100": "max_token_length",
    }
    for line, name in cases.items():
        with pytest.raises(TrainerError) as caught:
            load_training_config(write(tmp_path / "bad.toml", line + "\n"))
        assert caught.value.option == name, line


def test_secrets_are_refused_in_config_files(tmp_path: Path) -> None:
    with pytest.raises(TrainerError) as caught:
        load_training_config(write(tmp_path / "cfg.toml", 'wandb_api_key = "abc"\n'))
    assert "WANDB_API_KEY" in caught.value.hint


def test_not_implemented_options_warn_when_set(tmp_path: Path) -> None:
    name = next(iter(n for n in NOT_IMPLEMENTED if n in BY_NAME and BY_NAME[n].kind == "bool"))
    loaded = load_training_config(write(tmp_path / "cfg.toml", f"{name} = true\nmem_eff_attn = true\n"))
    assert any(name in warning for warning in loaded.warnings)
    assert any("mem_eff_attn" in warning for warning in loaded.warnings)


def test_repo_ids_are_not_turned_into_paths(tmp_path: Path) -> None:
    assert resolve_path_value("pretrained_model_name_or_path", "stabilityai/sdxl-base", tmp_path) == "stabilityai/sdxl-base"
    assert resolve_path_value("output_dir", "a/b", tmp_path) == str((tmp_path / "a" / "b").resolve())
    assert resolve_path_value("pretrained_model_name_or_path", "./m/x", tmp_path) == str((tmp_path / "m" / "x").resolve())


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "broken.toml", "output_name = unquoted\n")
    with pytest.raises(TrainerError) as caught:
        load_training_config(config)
    assert "broken.toml" in str(caught.value)


def test_dataset_config_cascade(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "b").mkdir(parents=True)
    dataset = write(
        tmp_path / "conf" / "dataset.toml",
        "[general]\nshuffle_caption = true\ncaption_extension = '.txt'\nkeep_tokens = 1\n"
        "[[datasets]]\nresolution = [768, 512]\nbatch_size = 2\nkeep_tokens = 2\n"
        "  [[datasets.subsets]]\n  image_dir = '../imgs/a'\n  num_repeats = 5\n  class_tokens = 'sks dog'\n"
        "  [[datasets.subsets]]\n  image_dir = '../imgs/b'\n  keep_tokens = 3\n  shuffle_caption = false\n",
    )
    config = load_training_config(overrides={"dataset_config": str(dataset), "enable_bucket": "true"}, cwd=tmp_path)
    (spec,), warnings = build_datasets(config)
    assert warnings == []
    assert spec.resolution == (768, 512) and spec.batch_size == 2 and spec.enable_bucket is True
    first, second = spec.subsets
    assert first.image_dir == str((tmp_path / "imgs" / "a").resolve())
    assert (first.num_repeats, first.class_tokens, first.keep_tokens, first.shuffle_caption) == (5, "sks dog", 2, True)
    assert (second.num_repeats, second.keep_tokens, second.shuffle_caption) == (1, 3, False)


def test_dataset_config_rejects_subset_keys_at_the_wrong_level(tmp_path: Path) -> None:
    dataset = write(tmp_path / "d.toml", "[[datasets]]\nimage_dir = 'x'\n  [[datasets.subsets]]\n  image_dir = 'x'\n")
    config = load_training_config(overrides={"dataset_config": str(dataset)}, cwd=tmp_path)
    with pytest.raises(TrainerError) as caught:
        build_datasets(config)
    assert caught.value.option == "image_dir"


def test_n_name_folders_become_subsets(tmp_path: Path) -> None:
    for folder in ("10_ohwx woman", "2_style", "notes", "_rejected"):
        (tmp_path / "train" / folder).mkdir(parents=True)
    config = load_training_config(
        overrides={"train_data_dir": "train", "shuffle_caption": "true", "resolution": "1024"}, cwd=tmp_path
    )
    (spec,), warnings = build_datasets(config)
    assert [(s.num_repeats, s.class_tokens) for s in spec.subsets] == [(10, "ohwx woman"), (2, "style")]
    assert all(s.shuffle_caption for s in spec.subsets)
    assert spec.resolution == (1024, 1024)
    assert len(warnings) == 1 and "notes" in warnings[0] and "10_notes" in warnings[0]


def test_pointing_at_the_image_folder_itself_explains_the_parent_rule(tmp_path: Path) -> None:
    images = tmp_path / "10_mychar"
    images.mkdir()
    (images / "a.PNG").write_bytes(b"not really")
    config = load_training_config(overrides={"train_data_dir": str(images)}, cwd=tmp_path)
    with pytest.raises(TrainerError) as caught:
        build_datasets(config)
    assert "holds images directly" in caught.value.hint
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainerError) as caught:
        build_datasets(load_training_config(overrides={"train_data_dir": str(empty)}))
    assert "CONTAINS" in caught.value.hint


def test_get_option_rejects_subset_only_keys_in_the_training_config() -> None:
    with pytest.raises(TrainerError) as caught:
        get_option("num_repeats")
    assert "cannot be set" in str(caught.value)
