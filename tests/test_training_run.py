"""The run side of training: following the events file, folding events into progress, and real
trainer subprocesses started, found again and stopped through ``core.training``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import CoreError
from core.paths import ProjectPaths
from core.training.follow_events import EventFollower
from core.training.run_monitor import RunMonitor
from core.training.run_progress import RunProgress
from core.training.run_process import (
    find_active_runs,
    run_files,
    start_run,
    trainer_command,
    trainer_environment,
)
from core.training.run_records import FINISHED, RunRecord, is_our_trainer, read_records, write_record
from core.training.run_text import eta_seconds, format_duration, format_loss, format_rate
from tests.test_train_end_to_end import make_learnable_dataset


def line(kind: str, **fields) -> str:
    return json.dumps({"type": kind, "time": 1000.0, **fields}) + "\n"


def tiny_run_config(root: Path, model: Path, steps: int = 6, name: str = "tiny", **extra) -> Path:
    """A TOML for a tiny SD1.5 run on two learnable images (4 batches per epoch at batch 2)."""
    data = make_learnable_dataset(root) if not (root / "train").exists() else root / "train"
    settings = {"pretrained_model_name_or_path": str(model), "train_data_dir": str(data), "resolution": 64,
                "output_dir": str(root / "out"), "output_name": name, "max_train_steps": steps, "network_dim": 4,
                "network_alpha": 4, "learning_rate": 3e-3, "train_batch_size": 2, "seed": 7, **extra}
    text = "".join(f"{key} = {json.dumps(value) if isinstance(value, str) else repr(value).lower()}\n"
                   for key, value in settings.items())
    path = root / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- EventFollower

def test_follower_reads_only_new_complete_lines_and_keeps_a_partial_one(tmp_path: Path) -> None:
    path = tmp_path / "run_events.jsonl"
    follower = EventFollower(path)
    assert follower.read_new() == []  # no file yet: simply nothing
    first = line("start", total_steps=4)
    second = line("step", step=1, loss=0.5)
    path.write_text(first + second[:20], encoding="utf-8")
    assert [e["type"] for e in follower.read_new()] == ["start"]
    assert follower.read_new() == []  # the half line waits
    with path.open("a", encoding="utf-8") as handle:
        handle.write(second[20:] + "not json\n" + "[1, 2]\n" + line("step", step=2, loss=0.4))
    events = follower.read_new()
    assert [(e["type"], e.get("step")) for e in events] == [("step", 1), ("step", 2)]
    assert follower.bad_lines == 2
    assert follower.offset == path.stat().st_size
    assert follower.read_new() == []


def test_follower_handles_multibyte_text_split_across_reads(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    whole = (json.dumps({"type": "warning", "time": 1.0, "message": "猫 café"}, ensure_ascii=False) + "\n").encode()
    cut = whole.index("猫".encode()) + 1  # inside the multi-byte character
    path.write_bytes(whole[:cut])
    follower = EventFollower(path)
    assert follower.read_new() == []
    with path.open("ab") as handle:
        handle.write(whole[cut:])
    assert follower.read_new()[0]["message"] == "猫 café"


def test_follower_follows_a_replaced_file_from_its_start_and_drops_older_events(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(line("step", step=1) + line("step", step=2), encoding="utf-8")
    follower = EventFollower(path)
    assert len(follower.read_new()) == 2
    path.rename(tmp_path / "e.1.jsonl")  # what the trainer does with a previous run's file
    path.write_text(line("start", total_steps=3), encoding="utf-8")
    assert [e["type"] for e in follower.read_new()] == ["start"]

    old = json.dumps({"type": "step", "time": 50.0, "step": 9}) + "\n"
    new = json.dumps({"type": "step", "time": 150.0, "step": 1}) + "\n"
    (tmp_path / "f.jsonl").write_text(old + new, encoding="utf-8")
    assert [e["step"] for e in EventFollower(tmp_path / "f.jsonl", since=100.0).read_new()] == [1]


# ---------------------------------------------------------------- RunProgress

def fold(*lines: str) -> RunProgress:
    progress = RunProgress()
    progress.apply_all([json.loads(text) for text in lines])
    return progress


def test_progress_folds_a_finished_run() -> None:
    progress = fold(
        line("start", total_steps=4, epochs=2, family="sd1", images=2),
        line("skipped_image", path="/d/bad.png", reason="truncated"),
        line("step", step=1, total_steps=4, epoch=1, loss=0.9, avg_loss=0.9, it_per_s=2.0, eta_s=1.5),
        line("step", step=2, total_steps=4, epoch=1, loss="nan", avg_loss=0.7, it_per_s=2.0, eta_s=1.0),
        line("sample", step=2, epoch=1, paths=["/o/s_2_0.png", "/o/s_2_1.png"], prompts=["a", "b"]),
        line("validation", step=2, epoch=1, loss=0.3, images=1),
        line("warning", message="Sample failed", hint="smaller"),
        line("epoch", epoch=1, step=2, complete=True, avg_loss=0.7),
        line("checkpoint", path="/o/tiny-000001.safetensors", step=2, epoch=1),
        line("state", path="/o/tiny-000001-state", step=2, epoch=1),
        line("mystery", value=1),
        line("step", step=4, total_steps=4, epoch=2, loss=0.2, avg_loss=0.5, it_per_s=4.0, eta_s=0.0),
        line("done", path="/o/tiny.safetensors", steps=4, epochs=2, stopped=False),
    )
    assert progress.status == "done" and progress.finished
    assert (progress.step, progress.total_steps, progress.epoch, progress.epochs) == (4, 4, 2, 2)
    assert [p.step for p in progress.losses] == [1, 2, 4]
    assert str(progress.losses[1].loss) == "nan" and progress.losses[1].avg_loss == 0.7
    assert progress.latest_samples.step == 2 and progress.latest_samples.paths[1] == Path("/o/s_2_1.png")
    assert progress.validation == [(2, 0.3)]
    assert progress.checkpoints == [Path("/o/tiny-000001.safetensors")]
    assert progress.saved_states == [Path("/o/tiny-000001-state")]
    assert progress.warnings[0].message == "Sample failed" and progress.warnings[0].hint == "smaller"
    assert progress.skipped_images == ["/d/bad.png: truncated"]
    assert progress.final_path == Path("/o/tiny.safetensors")
    assert progress.unknown_events == 1 and progress.events_seen == 13
    assert progress.summary == "done · step 4/4 · epoch 2/2 · loss 0.5000"


def test_progress_while_running_shows_rate_and_eta() -> None:
    progress = fold(line("start", total_steps=1000, epochs=10),
                    line("step", step=100, total_steps=1000, epoch=1, loss=0.2, avg_loss=0.25, it_per_s=0.5,
                         eta_s=1800.0))
    assert progress.status == "running"
    assert progress.summary == "running · step 100/1000 · epoch 1/10 · 2.0 s/it · ETA 30m 00s · loss 0.2500"
    missing_eta = fold(line("step", step=10, total_steps=110, epoch=1, loss=0.2, it_per_s=4.0))
    assert missing_eta.eta_s == 25.0  # worked out from the rate when the trainer gave none


def test_progress_of_a_stopped_run_keeps_the_numbered_file_and_state() -> None:
    progress = fold(line("start", total_steps=5000),
                    line("step", step=3, total_steps=5000, epoch=1, loss=0.2, avg_loss=0.2, it_per_s=5.0, eta_s=999.0),
                    line("stopped", path="/o/tiny-step00000003.safetensors", state="/o/tiny-step00000003-state",
                         step=3, epoch=1),
                    line("done", path="/o/tiny-step00000003.safetensors", steps=3, stopped=True))
    assert progress.status == "stopped" and progress.finished
    assert progress.final_path == Path("/o/tiny-step00000003.safetensors")
    assert progress.state_path == Path("/o/tiny-step00000003-state")
    assert progress.eta_text == "--"


def test_progress_error_event_and_silent_death() -> None:
    failed = fold(line("error", message="No images found in /d.", hint="Use the parent folder.",
                       option="train_data_dir"))
    assert failed.status == "failed"
    assert (failed.errors[0].message, failed.errors[0].hint, failed.errors[0].option) == (
        "No images found in /d.", "Use the parent folder.", "train_data_dir")
    failed.mark_exited(1, "log tail")
    assert len(failed.errors) == 1 and failed.log_tail == "" and failed.exit_code == 1  # already explained

    died = fold(line("start", total_steps=8), line("step", step=2, total_steps=8, epoch=1, loss=0.3))
    died.mark_exited(-9, "Killed")
    assert died.status == "failed" and "exit code -9" in died.errors[0].message
    assert died.log_tail == "Killed"


def test_text_helpers() -> None:
    assert [format_duration(s) for s in (None, -1, 0, 59.4, 75, 3725, 200000)] == [
        "--", "--", "0s", "59s", "1m 15s", "1h 02m", "2d 07h"]
    assert [format_rate(r) for r in (None, 0, 3.2, 0.08)] == ["-- it/s", "-- it/s", "3.20 it/s", "12.5 s/it"]
    assert [format_loss(v) for v in (None, float("nan"), 0.123456)] == ["--", "nan", "0.1235"]
    assert eta_seconds(10, 110, 4.0) == 25.0 and eta_seconds(1, None, 2.0) is None


# ---------------------------------------------------------------- records, environment, command

def test_environment_keeps_hf_token_only_and_command_is_token_free(tmp_path: Path) -> None:
    env = trainer_environment({"HF_TOKEN": "hf_secret", "CIVITAI_TOKEN": "cv", "JUPYTER_TOKEN": "j", "PATH": "/bin"})
    assert env["HF_TOKEN"] == "hf_secret" and "CIVITAI_TOKEN" not in env and "JUPYTER_TOKEN" not in env
    assert env["PATH"] == "/bin" and env["PYTHONUNBUFFERED"] == "1"
    assert "HF_TOKEN" not in trainer_environment({"PATH": "/bin"})
    single = trainer_command(tmp_path / "a.toml")
    assert single[1:] == ["-m", "trainer.train_network", "--config_file", str(tmp_path / "a.toml")]
    multi = trainer_command(tmp_path / "a.toml", num_processes=2)
    assert multi[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "2"]
    assert multi[-4:] == ["-m", "trainer.train_network", "--config_file", str(tmp_path / "a.toml")]


def test_run_files_follow_the_config_and_refuse_missing_output_dir(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"output_dir = '{tmp_path / 'out'}'\noutput_name = 'mine'\n", encoding="utf-8")
    files = run_files(config)
    assert files.events_file == tmp_path / "out" / "mine_events.jsonl"
    assert files.log_file == tmp_path / "out" / "mine_train.log"
    config.write_text(f"output_dir = '{tmp_path / 'out'}'\nevents_file = 'ev/x.jsonl'\n", encoding="utf-8")
    assert run_files(config).events_file == tmp_path / "ev" / "x.jsonl"  # relative to the config's folder
    config.write_text("output_name = 'mine'\n", encoding="utf-8")
    with pytest.raises(CoreError, match="no output_dir"):
        run_files(config)
    config.write_text("output_dir = 'o'\nhf_token = 'x'\n", encoding="utf-8")
    with pytest.raises(CoreError, match="secret"):
        run_files(config)


def test_stale_record_is_marked_finished_not_deleted(tmp_path: Path) -> None:
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    record = RunRecord(run_id="old", pid=ended.pid, pgid=ended.pid, started=time.time() - 60, config_file="c.toml",
                       events_file="e.jsonl", log_file="l.log", output_dir="o", output_name="old")
    write_record(record, paths.logs / "runs")
    (paths.logs / "runs" / "broken.json").write_text("{", encoding="utf-8")
    assert not is_our_trainer(os.getpid())  # alive, but not the trainer: a reused pid must not count
    assert find_active_runs(paths) == []
    [again] = read_records(paths.logs)
    assert again.status == FINISHED and again.ended is not None and "ended" in again.note
    assert (paths.logs / "runs" / "old.json").exists() and (paths.logs / "runs" / "broken.json").exists()


def test_start_run_refuses_a_missing_config(tmp_path: Path) -> None:
    with pytest.raises(CoreError, match="does not exist"):
        start_run(tmp_path / "nope.toml", paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path))


# ---------------------------------------------------------------- real runs

def test_tiny_run_through_start_run_reaches_done_with_a_lora(tmp_path: Path, tiny_sd15) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a disc --w 64 --h 64 --s 2\n", encoding="utf-8")
    config = tiny_run_config(tmp_path, tiny_sd15.diffusers_dir, steps=6, sample_prompts=str(prompts),
                             sample_every_n_steps=3)
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tiny_events.jsonl").write_text(line("done", path="/old/run.safetensors"), encoding="utf-8")
    handle = start_run(config, paths=paths, environ={**os.environ, "CIVITAI_TOKEN": "cv-secret"})
    monitor = RunMonitor(handle)
    assert handle.wait(timeout=300)
    monitor.refresh()
    progress = monitor.progress
    assert monitor.ended and handle.returncode == 0, handle.log_tail()
    assert progress.status == "done", progress.errors
    assert progress.final_path == tmp_path / "out" / "tiny.safetensors" and progress.final_path.is_file()
    assert [p.step for p in progress.losses] == [1, 2, 3, 4, 5, 6] and progress.total_steps == 6
    assert [s.step for s in progress.samples] == [3, 6] and progress.latest_samples.paths[0].is_file()
    assert (tmp_path / "out" / "tiny_events.1.jsonl").exists()  # the earlier run's file was moved aside
    log = (tmp_path / "out" / "tiny_train.log").read_text(encoding="utf-8")
    assert "saved" in log and "cv-secret" not in log
    [record] = read_records(paths.logs)
    assert record.status == FINISHED and record.exit_code == 0 and record.config_file == str(config)
    assert record.events_file == str(tmp_path / "out" / "tiny_events.jsonl")


def test_second_run_is_refused_while_one_is_going_and_a_run_stopped_at_once_ends_stopped(
        tmp_path: Path, tiny_sd15) -> None:
    config = tiny_run_config(tmp_path, tiny_sd15.diffusers_dir, steps=5000)
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work")
    handle = start_run(config, paths=paths)
    try:
        with pytest.raises(CoreError, match="already going"):
            start_run(config, paths=paths)
        [found] = find_active_runs(paths)  # what a new kernel would see
        assert found.pid == handle.pid and found.attached and found.is_running
        monitor = RunMonitor(found)
        assert found.stop()  # at once: the trainer may still be importing or loading the model
        assert handle.wait(timeout=120)
    finally:
        handle.kill()
        handle.wait(timeout=30)
    monitor.refresh()
    assert monitor.ended and handle.returncode in (0, 130, -2), handle.log_tail()
    progress = monitor.progress
    assert progress.status == "stopped", (progress.errors, handle.log_tail())
    assert not (tmp_path / "out" / "tiny.safetensors").exists()  # never passed off as a finished LoRA
    assert find_active_runs(paths) == []
    [record] = read_records(paths.logs)
    assert record.status == FINISHED and record.exit_code == handle.returncode
