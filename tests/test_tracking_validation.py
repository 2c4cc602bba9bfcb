"""TensorBoard logging and validation loss, on real tiny runs.

TensorBoard event files are read back with TensorBoard's own EventAccumulator. The validation
split is checked on a real image scan, and the validation loss of two identical runs must be
identical, number for number.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image, ImageDraw

from tests.test_train_end_to_end import base_overrides, make_learnable_dataset, train
from trainer.config import load_training_config
from trainer.data.blueprint import build_datasets
from trainer.data.scan import scan_datasets
from trainer.errors import TrainerError
from trainer.options.rules import check_config
from trainer.tracking import run_log_dir, wanted_trackers
from trainer.train_network import run_training
from trainer.validation import fixed_timesteps, held_out_count, split_validation


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def folders(root: Path, counts: dict[str, int]) -> Path:
    """``root/train/<name>/`` holding ``count`` small captioned images each."""
    for name, count in counts.items():
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for index in range(count):
            image = Image.new("RGB", (64, 64), (20 * index % 255, 90, 160))
            ImageDraw.Draw(image).rectangle((8, 8, 8 + 4 * index, 40), fill=(250, 250, 250))
            image.save(folder / f"img{index:02d}.png")
            (folder / f"img{index:02d}.txt").write_text(f"thing, tag{index % 3}", encoding="utf-8")
    return root / "train"


# ---------------------------------------------------------------- the split


def test_held_out_counts() -> None:
    assert [held_out_count(n, 0.3) for n in (1, 2, 3, 4, 10)] == [0, 0, 0, 1, 3]
    assert [held_out_count(n, 0.5) for n in (1, 2, 3, 4)] == [0, 1, 1, 2]
    assert held_out_count(2, 0.9) == 1  # at least one image always trains


def test_split_is_per_folder_deterministic_and_recounts_the_scan(tmp_path: Path) -> None:
    data = folders(tmp_path, {"2_alpha": 10, "1_beta": 3})
    config = load_training_config(overrides={"train_data_dir": str(data), "resolution": "64"}, cwd=tmp_path)
    datasets, _ = build_datasets(config)
    scan = scan_datasets(datasets, strict=False)

    kept, held = split_validation(scan, datasets, 0.3, seed=5)
    again, held_again = split_validation(scan, datasets, 0.3, seed=5)
    _, other = split_validation(scan, datasets, 0.3, seed=6)
    assert [r.path for r in held] == [r.path for r in held_again]
    assert {r.path.parent.name for r in held} == {"2_alpha"} and len(held) == 3  # floor(3 x 0.3) = 0 for beta
    assert {r.path for r in other} != {r.path for r in held}
    assert not {r.path for r in held} & {r.path for r in kept.records}
    assert len(kept.records) == 10 and kept.num_train_images == 7 * 2 + 3
    assert kept.dataset_dirs["2_alpha"] == {"n_repeats": 2, "img_count": 7}
    assert kept.dataset_dirs["1_beta"] == {"n_repeats": 1, "img_count": 3}
    assert sum(kept.tag_frequency["2_alpha"].values()) == 7 * 2  # "thing" and one tagN per kept image
    assert kept.tag_frequency["1_beta"] == scan.tag_frequency["1_beta"]
    assert sum(count.images for count in kept.bucket_table.values()) == 10
    assert split_validation(scan, datasets, 0.0, seed=5) == (scan, ())


def test_fixed_timesteps_follow_the_trained_range() -> None:
    assert fixed_timesteps(0, 1000) == (100, 300, 500, 700, 900)
    assert fixed_timesteps(200, 400) == (220, 260, 300, 340, 380)


# ---------------------------------------------------------------- rules and trackers


def test_logging_and_validation_rules(tmp_path: Path) -> None:
    base = {"pretrained_model_name_or_path": "m", "output_dir": str(tmp_path)}
    config = load_training_config(overrides={**base, "validate_every_n_steps": "5"}, cwd=tmp_path)
    with pytest.raises(TrainerError, match="validation_split is 0") as caught:
        check_config(config)
    assert caught.value.option == "validate_every_n_steps"
    named = load_training_config(overrides={**base, "wandb_run_name": "x"}, cwd=tmp_path)
    assert any("wandb_run_name is only used" in warning for warning in check_config(named))


def test_wandb_without_the_package_says_how_to_install_it(tmp_path: Path, tiny_sd15) -> None:
    pytest.importorskip("tensorboard")
    if __import__("importlib").util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    data = make_learnable_dataset(tmp_path)
    config = load_training_config(overrides=base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / "out",
                                                           log_with="all"), cwd=tmp_path)
    with pytest.raises(TrainerError) as caught:
        run_training(config)
    assert caught.value.option == "log_with" and "pip install wandb" in caught.value.hint
    assert "WANDB_API_KEY" in caught.value.hint
    assert not (tmp_path / "out" / "tiny.safetensors").exists()


def test_tracker_choice_and_log_folder_names(tmp_path: Path) -> None:
    assert wanted_trackers(None, None) == []
    assert wanted_trackers(None, "logs") == ["tensorboard"]  # logging_dir alone means TensorBoard
    assert wanted_trackers("all", None) == ["tensorboard", "wandb"]
    first = run_log_dir(None, tmp_path / "out", "v1_", "proj", now=0)
    assert first.parent == tmp_path / "out" / "logs"
    assert first.name.startswith("v1_proj_") and first.name[len("v1_proj_"):].replace("-", "").isdigit()
    first.mkdir(parents=True)
    assert run_log_dir(None, tmp_path / "out", "v1_", "proj", now=0).name == first.name + "_2"
    assert run_log_dir(tmp_path / "tb", tmp_path / "out", None, "proj").parent == tmp_path / "tb"


# ---------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def validated_runs(tiny_sd15, tmp_path_factory: pytest.TempPathFactory) -> list[SimpleNamespace]:
    """Two identical 4-step runs with a validation split and TensorBoard logging."""
    root = tmp_path_factory.mktemp("validated_runs")
    data = make_learnable_dataset(root)
    runs = []
    for name in ("a", "b"):
        out = root / name
        path, events = train(root, **base_overrides(
            str(tiny_sd15.diffusers_dir), data, out, max_train_steps=4, validation_split=0.5,
            validate_every_n_steps=3, log_with="tensorboard", log_prefix="exp_", text_encoder_lr="1e-3",
        ))
        runs.append(SimpleNamespace(out=out, path=path, events=events))
    return runs


def test_validation_images_are_held_out_of_training(validated_runs: list) -> None:
    events = validated_runs[0].events
    start = next(event for event in events if event["type"] == "start")
    assert start["images"] == 1 and start["images_with_repeats"] == 4  # 2 images, 1 held out, 4 repeats
    assert start["batches_per_epoch"] == 2
    held = next(event for event in events if event["type"] == "validation_set")
    assert held["images"] == 1 and Path(held["paths"][0]).name in ("disc0.png", "disc1.png")
    assert held["timesteps"] == [100, 300, 500, 700, 900]


def test_validation_loss_is_identical_between_identical_runs(validated_runs: list) -> None:
    curves = [[(event["step"], event["epoch"], event["loss"]) for event in run.events if event["type"] == "validation"]
              for run in validated_runs]
    # step 0 (the base model), step 3 (every 3 steps), step 4 (after the final save)
    assert [(step, epoch) for step, epoch, _ in curves[0]] == [(0, 0), (3, 2), (4, 2)]
    assert curves[0] == curves[1]
    losses = [loss for _, _, loss in curves[0]]
    assert all(0 < loss < 10 for loss in losses) and len(set(losses)) == 3  # training moves it


def test_tensorboard_holds_loss_lr_and_validation(validated_runs: list) -> None:
    run = validated_runs[0]
    (log_dir,) = (run.out / "logs").iterdir()
    assert log_dir.name.startswith("exp_tiny_")
    values = scalars(log_dir)
    steps = [event for event in run.events if event["type"] == "step"]
    assert [step for step, _ in values["loss/current"]] == [1, 2, 3, 4]
    assert [value for _, value in values["loss/current"]] == pytest.approx([e["loss"] for e in steps], rel=1e-6)
    # loss/average restarts each epoch (2 steps per epoch here)
    expected_average = [steps[0]["loss"], (steps[0]["loss"] + steps[1]["loss"]) / 2, steps[2]["loss"],
                        (steps[2]["loss"] + steps[3]["loss"]) / 2]
    assert [value for _, value in values["loss/average"]] == pytest.approx(expected_average, rel=1e-6)
    assert [value for _, value in values["lr/unet"]] == pytest.approx([3e-3] * 4)
    assert [value for _, value in values["lr/te"]] == pytest.approx([1e-3] * 4)
    assert [step for step, _ in values["loss/epoch"]] == [2, 4]
    validation = [(e["step"], e["loss"]) for e in run.events if e["type"] == "validation"]
    assert [step for step, _ in values["loss/validation"]] == [step for step, _ in validation]
    assert [value for _, value in values["loss/validation"]] == pytest.approx([v for _, v in validation], rel=1e-6)


def test_sdxl_validation_with_cached_text_and_a_caption_not_in_the_cache(tmp_path: Path, tiny_sdxl) -> None:
    data = make_learnable_dataset(tmp_path)
    for index in range(2):  # distinct captions: the held-out one is never in the training text cache
        (data / "4_disc" / f"disc{index}.txt").write_text(f"ohwx disc {index}", encoding="utf-8")
    _, events = train(tmp_path, **base_overrides(
        str(tiny_sdxl.diffusers_dir), data, tmp_path / "out", max_train_steps=2, network_train_unet_only="true",
        cache_latents="true", cache_text_encoder_outputs="true", validation_split=0.5, train_batch_size=4,
        logging_dir=str(tmp_path / "tb"),  # 1 image x 4 repeats in batches of 4: one step per epoch
    ))
    losses = [event["loss"] for event in events if event["type"] == "validation"]
    assert [event["step"] for event in events if event["type"] == "validation"] == [0, 1, 2]  # every epoch
    assert all(0 < loss < 10 for loss in losses)
    (log_dir,) = (tmp_path / "tb").iterdir()
    assert len(scalars(log_dir)["loss/validation"]) == 3
