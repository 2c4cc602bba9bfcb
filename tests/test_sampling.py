"""Preview images during training: the prompts file formats, every sampler, names, events, reproducibility.

The runs are real (tiny SD1.5 / SDXL fixtures, 64 px, 2-step samples); two identical runs must
write byte-identical PNGs, and drawing samples must not change what the run learns.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_train_end_to_end import base_overrides, load_tensors, make_learnable_dataset, train
from trainer.callbacks_factory import build_callbacks
from trainer.config import load_training_config
from trainer.errors import TrainerError
from trainer.options.table_training import SAMPLERS
from trainer.sampling.generate import evaluation_mode, generate_samples, sample_path
from trainer.sampling.prompts import SamplePrompt, load_prompts, parse_prompt_line
from trainer.sampling.samplers import SAMPLER_SPECS, make_scheduler

PROMPTS_TXT = (
    "# a comment line, skipped\n"
    "\n"
    "ohwx disc, red --n blurry, lowres --w 64 --h 64 --d 11 --l 5.5 --s 2\n"
    "ohwx disc, blue --s 2 --ss euler_a\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- the prompts file


def test_txt_inline_options_and_comments(tmp_path: Path) -> None:
    loaded = load_prompts(write(tmp_path / "p.txt", PROMPTS_TXT + "a cat --g 3.5 --w 72\n"))
    first, second, third = loaded.prompts
    assert first == SamplePrompt(index=0, prompt="ohwx disc, red", negative_prompt="blurry, lowres", width=64,
                                 height=64, seed=11, scale=5.5, sample_steps=2)
    assert (second.index, second.prompt, second.sample_sampler, second.sample_steps) == (1, "ohwx disc, blue",
                                                                                           "euler_a", 2)
    assert (second.width, second.height, second.seed, second.scale) == (None, None, None, 7.5)  # sd-scripts' scale
    assert (third.prompt, third.width) == ("a cat", 72)
    assert len(loaded.warnings) == 1 and "p.txt line 5" in loaded.warnings[0] and "--g" in loaded.warnings[0]


def test_parse_line_keeps_dashes_inside_words() -> None:
    table, unknown = parse_prompt_line("a well-lit room--n dark --d 3")
    assert table == {"prompt": "a well-lit room--n dark", "seed": "3"} and unknown == []


def test_toml_shared_values_and_subsets(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", """
[prompt]
width = 64
height = 128
scale = 4.0
sample_steps = 3
negative_prompt = "bad"

[[prompt.subset]]
prompt = "first"
seed = 1

[[prompt.subset]]
prompt = "second"
width = 96
negative_prompt = "worse"
sample_sampler = "k_euler"
""")
    first, second = load_prompts(path).prompts
    assert (first.prompt, first.width, first.height, first.seed, first.scale, first.sample_steps,
            first.negative_prompt) == ("first", 64, 128, 1, 4.0, 3, "bad")
    assert (second.prompt, second.width, second.height, second.negative_prompt, second.sample_sampler,
            second.index) == ("second", 96, 128, "worse", "k_euler", 1)


def test_json_tables_and_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "p.json", json.dumps([
        {"prompt": "one", "width": 64, "height": 64, "seed": 9, "scale": 6, "sample_steps": 4},
        "two --n nope --d 2",
    ]))
    one, two = load_prompts(path).prompts
    assert (one.prompt, one.seed, one.scale, one.sample_steps) == ("one", 9, 6.0, 4)
    assert (two.prompt, two.negative_prompt, two.seed, two.index) == ("two", "nope", 2, 1)


def test_resolved_fills_size_seed_and_sampler() -> None:
    prompt = SamplePrompt(index=3, prompt="x").resolved((512, 768), base_seed=40, sampler="ddim")
    assert (prompt.width, prompt.height, prompt.seed, prompt.sample_sampler) == (512, 768, 43, "ddim")
    kept = SamplePrompt(index=3, prompt="x", width=64, seed=0, sample_sampler="heun").resolved((512, 768), 40, "ddim")
    assert (kept.width, kept.height, kept.seed, kept.sample_sampler) == (64, 768, 0, "heun")


@pytest.mark.parametrize("text, words", [
    ("a cat --w 500\n", ["line 1", "width 500", "multiple of 8"]),
    ("a cat --s 0\n", ["sample_steps 0"]),
    ("a cat --ss plms\n", ["unknown sampler"]),
    ("a cat --d x1\n", ["seed", "whole number"]),
    ("# only a comment\n", ["holds no prompts"]),
])
def test_prompt_mistakes_name_the_file_and_line(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(TrainerError) as caught:
        load_prompts(write(tmp_path / "bad.txt", text))
    assert caught.value.option == "sample_prompts"
    assert all(word in caught.value.message for word in words), caught.value.message
    assert "bad.txt" in caught.value.message


def test_unknown_suffix_and_missing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainerError, match="not .txt, .toml or .json"):
        load_prompts(write(tmp_path / "p.yaml", "a\n"))
    with pytest.raises(TrainerError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")


def test_relative_prompts_path_resolves_against_the_config_and_is_checked_early(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    write(folder / "run.toml", 'sample_prompts = "prompts/p.txt"\n')
    config = load_training_config(folder / "run.toml")
    assert config.sample_prompts == str(folder / "prompts" / "p.txt")
    from trainer.options.rules import check_config

    complete = config.replace(pretrained_model_name_or_path="m", output_dir=str(tmp_path))
    with pytest.raises(TrainerError, match="does not exist") as caught:
        check_config(complete)
    assert str(folder / "prompts" / "p.txt") in caught.value.message
    (folder / "prompts").mkdir()
    write(folder / "prompts" / "p.txt", "a cat\n")
    assert any("no sample images will be made" in w for w in check_config(complete))


# ---------------------------------------------------------------- samplers and file names


def test_every_table_sampler_maps_to_its_diffusers_scheduler() -> None:
    assert set(SAMPLERS) == set(SAMPLER_SPECS)
    expected = {"ddim": "DDIMScheduler", "pndm": "PNDMScheduler", "lms": "LMSDiscreteScheduler",
                "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
                "heun": "HeunDiscreteScheduler", "dpm_2": "KDPM2DiscreteScheduler",
                "dpm_2_a": "KDPM2AncestralDiscreteScheduler", "dpmsolver": "DPMSolverMultistepScheduler",
                "dpmsolver++": "DPMSolverMultistepScheduler", "dpmsingle": "DPMSolverSinglestepScheduler"}
    for name in SAMPLERS:
        scheduler = make_scheduler(name, v_parameterization=True)
        assert type(scheduler).__name__ == expected[name.removeprefix("k_")]
        assert scheduler.config.prediction_type == "v_prediction"
        assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.beta_end == 0.012
    assert make_scheduler("dpmsolver").config.algorithm_type == "dpmsolver"
    assert make_scheduler("DPMSolver++").config.algorithm_type == "dpmsolver++"
    with pytest.raises(TrainerError, match="Unknown sampler"):
        make_scheduler("plms")


def test_sample_path_never_overwrites(tmp_path: Path) -> None:
    first = sample_path(tmp_path, "proj", 12, 3)
    assert first.name == "proj_000012_03.png"
    first.write_bytes(b"x")
    second = sample_path(tmp_path, "proj", 12, 3)
    assert second.name == "proj_000012_03_2.png"


def test_only_the_main_process_gets_callbacks(tmp_path: Path) -> None:
    config = load_training_config(overrides={"sample_prompts": str(write(tmp_path / "p.txt", "a\n")),
                                             "sample_at_first": "true", "log_with": "tensorboard"}, cwd=tmp_path)
    worker = SimpleNamespace(accelerator=SimpleNamespace(is_main_process=False))
    assert build_callbacks(config, worker) == []
    assert not (tmp_path / "logs").exists()


@pytest.fixture(scope="module")
def sd15_session(tiny_sd15, tmp_path_factory: pytest.TempPathFactory):
    from trainer.session import prepare_session

    root = tmp_path_factory.mktemp("sampling_session")
    data = make_learnable_dataset(root)
    config = load_training_config(overrides=base_overrides(str(tiny_sd15.diffusers_dir), data, root / "out"),
                                  cwd=root)
    session = prepare_session(config)
    yield session
    session.events.close()


def test_every_sampler_generates_an_image(sd15_session, tmp_path: Path) -> None:
    prompts = [SamplePrompt(index, "ohwx disc", "blurry", 64, 64, seed=5, scale=5.0, sample_steps=2,
                            sample_sampler=name) for index, name in enumerate(SAMPLERS)]
    paths = generate_samples(sd15_session, prompts, 7, tmp_path)
    assert [p.name for p in paths] == [f"tiny_000007_{index:02d}.png" for index in range(len(SAMPLERS))]
    pixels = {}
    for path, prompt in zip(paths, prompts):
        array = np.asarray(Image.open(path))
        assert array.shape == (64, 64, 3) and array.std() > 0, prompt.sample_sampler
        pixels[prompt.sample_sampler] = array
    assert np.array_equal(pixels["euler"], pixels["k_euler"])  # aliases draw the same image
    assert not np.array_equal(pixels["euler"], pixels["euler_a"])


def test_evaluation_mode_restores_modes_and_random_state(sd15_session) -> None:
    session = sd15_session
    session.network.train()
    session.model.unet.train()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with evaluation_mode(session):
        assert not session.network.training and not session.model.unet.training
        assert not torch.is_grad_enabled()
        torch.rand(50)
    assert session.network.training and session.model.unet.training
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- during real runs


@pytest.fixture(scope="module")
def sample_runs(tiny_sd15, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two identical runs with samples and one without, 4 steps each."""
    root = tmp_path_factory.mktemp("sample_runs")
    data = make_learnable_dataset(root)
    prompts = write(root / "prompts.txt", PROMPTS_TXT)
    extras = dict(max_train_steps=4, sample_prompts=str(prompts), sample_at_first="true", sample_every_n_steps=3,
                  sample_every_n_epochs=1, sample_sampler="ddim")
    runs = {}
    for name, settings in (("a", extras), ("b", extras), ("plain", {"max_train_steps": 4})):
        out = root / name
        path, events = train(root, **base_overrides(str(tiny_sd15.diffusers_dir), data, out, **settings))
        runs[name] = SimpleNamespace(out=out, path=path, events=events)
    return runs


def test_samples_are_named_by_step_and_prompt_and_announced(sample_runs: dict) -> None:
    run = sample_runs["a"]
    names = sorted(path.name for path in (run.out / "sample").iterdir())
    # step 0 (sample_at_first), step 3 (every 3 steps), step 4 (end of epoch 1: 2 images x 4 repeats / batch 2)
    assert names == [f"tiny_{step:06d}_{index:02d}.png" for step in (0, 3, 4) for index in (0, 1)]
    samples = [event for event in run.events if event["type"] == "sample"]
    assert [(event["step"], event["epoch"]) for event in samples] == [(0, 0), (3, 1), (4, 1)]
    assert samples[1]["paths"] == [str(run.out / "sample" / f"tiny_000003_{i:02d}.png") for i in (0, 1)]
    assert samples[0]["prompts"] == ["ohwx disc, red", "ohwx disc, blue"]
    with Image.open(run.out / "sample" / "tiny_000000_01.png") as image:
        assert image.size == (64, 64)  # no --w/--h: the training resolution


def test_same_seed_gives_identical_sample_files(sample_runs: dict) -> None:
    first, second = sample_runs["a"].out / "sample", sample_runs["b"].out / "sample"
    names = sorted(path.name for path in first.iterdir())
    assert names == sorted(path.name for path in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # training changes the picture: the same prompt and seed before and after differ
    before = np.asarray(Image.open(first / "tiny_000000_00.png"), dtype=np.int16)
    after = np.asarray(Image.open(first / "tiny_000004_00.png"), dtype=np.int16)
    assert np.abs(before - after).max() > 0


def test_sampling_does_not_change_what_is_learned(sample_runs: dict) -> None:
    with_samples, plain = load_tensors(sample_runs["a"].path), load_tensors(sample_runs["plain"].path)
    assert with_samples.keys() == plain.keys()
    assert all(torch.equal(with_samples[key], plain[key]) for key in plain)
    steps = [[event["loss"] for event in run.events if event["type"] == "step"]
             for run in (sample_runs["a"], sample_runs["plain"])]
    assert steps[0] == steps[1]


def test_sdxl_samples_at_first(tiny_sdxl, tmp_path: Path) -> None:
    data = make_learnable_dataset(tmp_path)
    prompts = write(tmp_path / "p.json", json.dumps([{"prompt": "ohwx disc", "negative_prompt": "bad",
                                                      "width": 64, "height": 72, "sample_steps": 2, "seed": 1}]))
    _, events = train(tmp_path, **base_overrides(
        str(tiny_sdxl.diffusers_dir), data, tmp_path / "out", max_train_steps=1, network_train_unet_only="true",
        sample_prompts=str(prompts), sample_at_first="true", sample_sampler="euler_a",
    ))
    sample = next(event for event in events if event["type"] == "sample")
    assert sample["step"] == 0 and len(sample["paths"]) == 1
    with Image.open(sample["paths"][0]) as image:
        assert image.size == (64, 72)
        assert np.asarray(image).std() > 0
