"""sample_notebooks/train_from_code.py, run as a user runs it, on the tiny fixtures: import, validate, tag,
config from a preset, a two-step training, and the LoRA file at the end."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

from core.tiny_assets.samples import build_sample_images
from trainer.config import load_training_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT_ROOT / "sample_notebooks" / "train_from_code.py"


def test_headless_example_imports_checks_tags_configures_and_trains(tmp_path: Path, tiny_sd15, tiny_tagger,
                                                                      image_set_template) -> None:
    samples = build_sample_images(tmp_path / "source")
    broken = samples.folder / "broken.png"
    shutil.copyfile(image_set_template.root / "10_ohwx woman" / "truncated.png", broken)
    work = tmp_path / "work"
    env = {**os.environ, "LORA_WORK_DIR": str(work), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--images", str(samples.folder), "--base-model", str(tiny_sd15.diffusers_dir),
         "--tagger-dir", str(tiny_tagger.model_dir), "--project", "demo", "--concept", "disc", "--repeats", "2",
         "--trigger", "ohwx", "--preset", "sd15",
         *[arg for pair in (("--set", "resolution=64"), ("--set", "min_bucket_reso=32"),
                            ("--set", "max_bucket_reso=128"), ("--set", "max_train_epochs="),
                            ("--set", "max_train_steps=2"), ("--set", "network_dim=4"),
                            ("--set", "network_alpha=4"), ("--set", "train_batch_size=1")) for arg in pair]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    dataset = work / "datasets" / "demo" / "2_disc"
    assert (work / "datasets" / "demo" / "_rejected" / "2_disc" / "broken.png").is_file()  # moved, not deleted
    assert not (dataset / "broken.png").exists()
    for image, tag in samples.expected_tags.items():
        caption = (dataset / image.name).with_suffix(".txt").read_text(encoding="utf-8")
        tags = [part.strip() for part in caption.split(",")]
        assert tags[0] == "ohwx" and tag.replace("_", " ") in tags, caption
    assert samples.images[0].with_suffix(".txt").exists() is False  # the source folder is only read

    config_file = work / "training_configs" / "demo" / "demo.toml"
    config = load_training_config(config_file=config_file)
    assert config.optimizer_type == "AdamW" and config.lr_scheduler == "cosine"  # from the sd15 preset
    assert config.network_dim == 4 and config.max_train_steps == 2 and config.mixed_precision == "no"
    assert Path(config.pretrained_model_name_or_path) == tiny_sd15.diffusers_dir

    lora = work / "outputs" / "demo" / "demo.safetensors"
    assert f"LoRA saved: {lora}" in done.stdout and "step 2/2" in done.stdout
    with safe_open(str(lora), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
    assert any(key.startswith("lora_unet_") and key.endswith("lora_up.weight") for key in keys)
    assert metadata["ss_network_dim"] == "4"
