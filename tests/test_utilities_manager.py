"""core.utilities_manager: path checks, output names that never overwrite, and the wrapped tools."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.errors import CoreError
from core.utilities_manager import extract, find_sample_images, inspect_lora, latest_lora, merge, resize
from tests.test_hub_upload import make_trained_lora
from trainer.saving.lora_file import read_lora_file


def test_resize_default_names_never_overwrite_and_errors_name_the_file(tmp_path: Path) -> None:
    lora = make_trained_lora(tmp_path / "a.safetensors")
    first = resize(lora, 2)
    second = resize(lora, 2)
    assert first.path == tmp_path / "a_r2.safetensors" and second.path == tmp_path / "a_r2_2.safetensors"
    assert first.new_ranks == [2] and "1 modules resized" in first.summary
    taken = first.path.read_bytes()
    with pytest.raises(CoreError, match="already exists") as exists:
        resize(lora, 3, first.path)
    assert "overwrite" in exists.value.hint and first.path.read_bytes() == taken
    assert resize(lora, 3, first.path, overwrite=True).new_ranks == [3]
    with pytest.raises(CoreError, match="inputs are never overwritten"):
        resize(lora, 2, lora, overwrite=True)
    with pytest.raises(CoreError, match=r"nope\.safetensors does not exist"):
        resize(tmp_path / "nope.safetensors", 2)
    with pytest.raises(CoreError, match=r"must end in \.safetensors"):
        resize(lora, 2, tmp_path / "out.ckpt")
    with pytest.raises(CoreError, match="dynamic_param"):  # the tool's TrainerError arrives as a CoreError
        resize(lora, 2, dynamic_method="sv_fro", dynamic_param=5.0)


def test_inspect_and_merge_modes(tmp_path: Path) -> None:
    a = make_trained_lora(tmp_path / "a.safetensors")
    summary = inspect_lora(a)
    assert summary.ranks == [4] and summary.trigger_words == ["zkstyle"] and summary.architecture == "SD1"
    assert "rank    4" in summary.report and summary.size_bytes == a.stat().st_size
    with pytest.raises(CoreError, match="needs a base model"):
        merge([a])
    with pytest.raises(CoreError, match="2 strengths"):
        merge([a], [0.5, 0.5], concat=True)
    outcome = merge([a, a], [1.0, 0.5], new_rank=2)
    assert outcome.kind == "lora" and outcome.path.name == "a_merged.safetensors"
    assert read_lora_file(outcome.path)[1]["ss_network_dim"] == "2"


def test_merge_into_checkpoint_and_extract_back(tmp_path: Path, tiny_sd15) -> None:
    import torch

    from trainer.networks.lora import LoRANetwork
    from trainer.saving.lora_file import save_lora_file
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_sd15.diffusers_dir / "unet")
    network = LoRANetwork.create(unet, [], [], lambda p: p, dim=2, alpha=2.0, train_text_encoder=False)
    gen = torch.Generator().manual_seed(4)
    state = {k: torch.randn(v.shape, generator=gen) * 0.1 if k.endswith("lora_up.weight") else v
             for k, v in network.kohya_state_dict().items()}
    lora = tmp_path / "style.safetensors"
    save_lora_file(lora, state, {})
    merged = merge([lora], base_model=tiny_sd15.single_file, model_config=str(tiny_sd15.config_dir),
                   save_precision="float")
    assert merged.kind == "checkpoint" and merged.path.name == f"{tiny_sd15.single_file.stem}_style.safetensors"
    assert merged.merged == {str(lora): len(network.loras)}
    back = extract(tiny_sd15.single_file, merged.path, dim=2, model_config=str(tiny_sd15.config_dir))
    assert back.parts == ["unet"] and back.module_count == len(network.loras)
    assert back.path.name == f"{merged.path.stem}_extracted_r2.safetensors"
    with pytest.raises(CoreError, match="original model .* does not exist"):
        extract(tmp_path / "none", merged.path, dim=2)


def test_latest_lora_and_samples(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    assert latest_lora(outputs) is None
    state = outputs / "p" / "p-000001-state"
    state.mkdir(parents=True)
    (state / "optimizer.safetensors").write_bytes(b"x")  # a training state's file is not a LoRA
    lora = make_trained_lora(outputs / "p" / "p.safetensors")
    assert latest_lora(outputs) == lora
    sample = outputs / "p" / "sample"
    sample.mkdir()
    for name in ("p_000010_00.png", "p_000010_01.png", "p_000005_00.png", "p_000010_01_2.png"):
        Image.new("RGB", (4, 4)).save(sample / name)
    assert [p.name for p in find_sample_images(lora)] == ["p_000010_00.png", "p_000010_01_2.png"]
    assert find_sample_images(lora, limit=1)[0].name == "p_000010_00.png"
