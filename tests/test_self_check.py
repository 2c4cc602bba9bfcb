""""Check my setup" in core: a failing stage stops the run with the trainer's own words, and the
scratch folder is cleaned of the check's own files only. (The full, passing run is driven from the
setup panel in tests/test_setup_panel.py, so the suite pays for it once.)"""
from __future__ import annotations

from pathlib import Path

from core.paths import ProjectPaths
from core.selfcheck import STAGES, run_self_check, scratch_folder
from core.selfcheck.runner import clean_own_files


def test_failed_training_stops_the_run_with_the_trainers_message_and_keeps_user_files(tmp_path: Path) -> None:
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path)
    folder = scratch_folder(paths)
    (folder / "output").mkdir(parents=True)
    (folder / "output" / "stale.safetensors").write_bytes(b"from an earlier check")
    (folder / "my_notes.txt").write_text("mine", encoding="utf-8")
    seen: list[tuple[str, str]] = []

    # 0 steps is refused by the trainer's option table: a real failure of the real subprocess.
    report = run_self_check(paths, progress=lambda stage: seen.append((stage.key, stage.status)), steps=0)

    assert folder == tmp_path / "cache" / "self_check"
    assert [(stage.key, stage.status) for stage in report.stages] == [
        ("packages", "ok"), ("device", "ok"), ("model", "ok"), ("images", "ok"), ("tagging", "ok"),
        ("training", "failed"), ("lora", "skipped")]
    training = report.stage("training")
    assert "max_train_steps" in training.message and "outside the allowed range" in training.message
    assert training.hint and "What to do" not in training.hint
    assert not report.ok and report.lora_path is None
    assert "Something is broken" in report.summary_lines()[-1]
    # Every stage reported its start (then live detail) and its end, in order.
    assert list(dict.fromkeys(key for key, status in seen if status == "running")) == [key for key, _ in STAGES[:-1]]
    assert [key for key, status in seen if status in ("ok", "failed", "skipped")] == [key for key, _ in STAGES]
    # The tagger really ran: each sample got the tag its colours wire up in the tiny tagger.
    captions = folder / "dataset" / "5_selfcheck"
    assert "red background" in (captions / "red.txt").read_text(encoding="utf-8")
    assert "hatsune miku" in (captions / "cyan.txt").read_text(encoding="utf-8")
    # Only the check's own files were cleaned.
    assert (folder / "my_notes.txt").read_text(encoding="utf-8") == "mine"
    assert not (folder / "output" / "stale.safetensors").exists()
    assert (folder / "output" / "trainer.log").is_file()


def test_cleaning_never_follows_a_symlink_into_user_files(tmp_path: Path) -> None:
    user_models = tmp_path / "user_models"
    user_models.mkdir()
    (user_models / "base.safetensors").write_bytes(b"the user's model")
    folder = tmp_path / "self_check"
    folder.mkdir()
    (folder / "model").symlink_to(user_models, target_is_directory=True)
    (folder / "dataset").mkdir()
    (folder / "dataset" / "old.png").write_bytes(b"x")
    (folder / "keep.txt").write_text("keep", encoding="utf-8")

    clean_own_files(folder)

    assert not (folder / "model").exists() and not (folder / "dataset").exists()
    assert (user_models / "base.safetensors").read_bytes() == b"the user's model"
    assert sorted(path.name for path in folder.iterdir()) == ["keep.txt"]
