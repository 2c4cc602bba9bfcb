"""Two CPU processes (gloo) give the weights one process gets with the same global batch.

Plain SGD on purpose: Adam's first steps move every weight by about +-lr whatever the size of its
gradient, so a last-bit difference in a near-zero gradient would flip a whole step and hide
whether the gradients themselves agree.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from tests.test_train_end_to_end import PROJECT, load_tensors, make_learnable_dataset


def _config(tmp: Path, model: Path, data: Path, out: Path, batch: int) -> Path:
    path = tmp / f"{out.name}.toml"
    path.write_text(
        f"pretrained_model_name_or_path = '{model}'\ntrain_data_dir = '{data}'\nresolution = 64\n"
        f"output_dir = '{out}'\noutput_name = 'ddp'\nmax_train_steps = 4\nnetwork_dim = 4\nnetwork_alpha = 4\n"
        f"learning_rate = 0.5\noptimizer_type = 'torch.optim.SGD'\nseed = 5\ntrain_batch_size = {batch}\n"
        "cache_latents = true\n"
        "cache_text_encoder_outputs = true\nnetwork_train_unet_only = true\nmax_grad_norm = 1.0\n",
        encoding="utf-8")
    return path


def _launch(config: Path, processes: int) -> subprocess.CompletedProcess:
    # accelerate's --cpu launcher runs ONE process whatever --num_processes says; real CPU processes
    # (gloo) come from the multi-process launcher with ACCELERATE_USE_CPU set.
    mode = ["--multi_gpu", "--main_process_port", str(_free_port())] if processes > 1 else ["--cpu"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *mode,
               "-m", "trainer.train_network", "--config_file", str(config)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    return subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=600, env=env)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, tiny_sd15) -> None:
    data = make_learnable_dataset(tmp_path)  # 8 samples per epoch
    single = _launch(_config(tmp_path, tiny_sd15.diffusers_dir, data, tmp_path / "one", batch=4), 1)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _launch(_config(tmp_path, tiny_sd15.diffusers_dir, data, tmp_path / "two", batch=2), 2)
    assert double.returncode == 0, double.stderr[-3000:]

    one = load_tensors(tmp_path / "one" / "ddp.safetensors")
    two = load_tensors(tmp_path / "two" / "ddp.safetensors")
    assert one.keys() == two.keys()
    moved = 0
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key
        moved += int(key.endswith("lora_up.weight") and float(one[key].abs().max()) > 0)
    assert moved > 0

    # Only the main process writes: one events file, each step reported once.
    events = [json.loads(line) for line in (tmp_path / "two" / "ddp_events.jsonl").read_text().splitlines()]
    assert events[0]["type"] == "start" and events[0]["processes"] == 2  # really two processes
    assert sum(e["type"] == "start" for e in events) == 1
    assert not list((tmp_path / "two").glob("ddp_events.*.jsonl"))  # no second writer moved it aside
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.suffix == ".safetensors") == ["ddp.safetensors"]
