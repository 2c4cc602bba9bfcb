"""Saved states, exact resume, and stopping a run with a signal (the notebook's Stop button)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_train_end_to_end import PROJECT, base_overrides, load_tensors, make_learnable_dataset, train
from trainer.errors import TrainerError
from trainer.state import read_counters


def test_n_steps_straight_equal_half_then_resume_then_half(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)  # 4 batches per epoch at batch 2
    common = dict(max_train_steps=8, save_every_n_steps=3, save_state="true", lr_scheduler="cosine",
                  lr_warmup_steps=2, network_dropout=0.1)
    straight, straight_events = train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data,
                                                                 tmp_path / "straight", **common))
    state = tmp_path / "straight" / "tiny-step00000003-state"
    counters = read_counters(state)
    assert (counters.step, counters.epoch, counters.batches_in_epoch) == (3, 1, 3)  # mid-epoch

    resumed, resumed_events = train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data,
                                                               tmp_path / "resumed", resume=str(state), **common))
    one, two = load_tensors(straight), load_tensors(resumed)
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6, rtol=0), key
    straight_steps = [e for e in straight_events if e["type"] == "step"]
    resumed_steps = [e for e in resumed_events if e["type"] == "step"]
    assert [e["step"] for e in resumed_steps] == [4, 5, 6, 7, 8]
    # The learning-rate schedule continues instead of restarting.
    assert [e["lr"] for e in resumed_steps] == [e["lr"] for e in straight_steps[3:]]
    assert [e["epoch"] for e in resumed_steps] == [e["epoch"] for e in straight_steps[3:]]
    assert any(e["type"] == "resumed" for e in resumed_events)


def test_resume_refuses_a_state_from_other_settings(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / "a", max_train_steps=2,
                                     save_state_on_train_end="true"))
    state = tmp_path / "a" / "tiny-state"
    assert read_counters(state).step == 2
    with pytest.raises(TrainerError) as caught:
        train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / "b", max_train_steps=4,
                                         resume=str(state), network_dim=8))
    assert caught.value.option == "resume" and "network_dim" in str(caught.value)
    with pytest.raises(TrainerError) as caught:
        train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / "c", resume=str(data)))
    assert "not a saved training state" in str(caught.value)


def test_epoch_states_are_pruned_to_the_last_n(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    train(tmp_path, **base_overrides(str(tiny_sd15.diffusers_dir), data, tmp_path / "out", max_train_epochs=4,
                                     save_every_n_epochs=1, save_state="true", save_last_n_epochs_state=2))
    states = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.endswith("-state"))
    assert states == ["tiny-000002-state", "tiny-000003-state", "tiny-state"]


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_sigterm_stops_within_a_step_with_lora_and_state_saved(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)
    out = tmp_path / "out"
    config = tmp_path / "long.toml"
    config.write_text(
        f"pretrained_model_name_or_path = '{tiny_sd15.diffusers_dir}'\ntrain_data_dir = '{data}'\nresolution = 64\n"
        f"output_dir = '{out}'\noutput_name = 'tiny'\nmax_train_steps = 5000\nnetwork_dim = 4\nseed = 3\n",
        encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "trainer.train_network", "--config_file", str(config)],
                               cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events_file = out / "tiny_events.jsonl"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any(e["type"] == "step" for e in _events(events_file)):
            assert process.poll() is None, process.communicate()[1][-2000:]
            time.sleep(0.2)
        seen = max(e["step"] for e in _events(events_file) if e["type"] == "step")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-2000:]
    events = _events(events_file)
    stopped = [e for e in events if e["type"] == "stopped"]
    assert len(stopped) == 1
    step = stopped[0]["step"]
    assert seen <= step <= seen + 2  # the step running when the signal came, at most one more
    assert Path(stopped[0]["path"]).name == f"tiny-step{step:08d}.safetensors" and Path(stopped[0]["path"]).exists()
    assert read_counters(Path(stopped[0]["state"])).step == step
    assert not (out / "tiny.safetensors").exists()  # a stopped run is not passed off as finished
    assert events[-1]["type"] == "done" and events[-1]["stopped"] is True
    assert "Traceback" not in stderr
    assert os.path.isdir(stopped[0]["state"])
