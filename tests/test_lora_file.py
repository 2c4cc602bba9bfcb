"""The Kohya-format LoRA file: diffusers loads it and computes what we mean, metadata, hashes, names.

diffusers' own ``load_lora_weights`` is the independent reader here: its UNet and text-encoder
outputs must equal those of a copy of the model whose weights we merged by hand.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch

from tests.fixtures.sd_models import TinyModel
from tests.test_lora_network import (
    TE_PREFIXES,
    build_network,
    expected_te_stems,
    expected_unet_stems,
    hand_merge,
    load_pipe,
    run_unet,
    text_encoders,
    unet_inputs,
)
from trainer.errors import TrainerError
from trainer.saving import (
    DatasetInfo,
    LoraMetadataInput,
    SubsetInfo,
    build_metadata,
    check_no_overwrite,
    output_paths,
    prune_old_saves,
    read_lora_file,
    save_lora_file,
)


TOKEN_IDS = torch.tensor([[0, 5, 9, 14, 22, 2, 1]])
# Words in diffusers' or PEFT's messages that mean some keys were not used or not filled.
LOAD_PROBLEMS = ("unexpected key", "not correctly renamed", "missing key", "were not used", "unused")
# Said for a part the file has no keys for (a UNet-only file and its text encoders): not a problem.
ABSENT_PART = "no lora keys associated to"


def metadata_input(family: str = "sdxl", **changes) -> LoraMetadataInput:
    subsets = [
        SubsetInfo("/home/someone/private/datasets/10_mychar", 10, 3, class_tokens="mychar",
                   tag_frequency={"mychar": 3, "smile": 2}, settings={"flip_aug": False, "keep_tokens": 1}),
        SubsetInfo("/home/someone/private/reg/1_person", 1, 5, class_tokens="person", is_reg=True),
    ]
    values = dict(
        family=family, output_name="mychar", network_dim=4, network_alpha=2.0, learning_rate=1e-4,
        training_started_at=1_700_000_000.5, training_finished_at=1_700_003_600.25,
        network_args={"conv_dim": "3", "conv_alpha": "1"}, unet_lr=2e-4, text_encoder_lr=[5e-5, 2e-5],
        optimizer="torch.optim.AdamW(weight_decay=0.01)", lr_scheduler="cosine", num_epochs=10, max_train_steps=300,
        steps=300, epoch=10, num_train_images=30, num_reg_images=5, seed=42, clip_skip=2, mixed_precision="bf16",
        noise_offset=0.0357, min_snr_gamma=5.0, sd_model_name="/home/someone/models/tinyxl.safetensors",
        sd_model_hash="ab" * 32, resolution=(1024, 1024),
        datasets=[DatasetInfo(subsets, (1024, 1024), batch_size=2, enable_bucket=True)],
        training_comment="a note", author="me", tags="anime,character",
    )
    values.update(changes)
    return LoraMetadataInput(**values)


class CapturedLogs:
    """Everything diffusers and PEFT log or warn while a block runs."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.loggers = [logging.getLogger("diffusers"), logging.getLogger("peft")]
        self.warnings: list[warnings.WarningMessage] = []

    def __enter__(self) -> CapturedLogs:
        for logger in self.loggers:
            logger.addHandler(self.handler)
        self._catch = warnings.catch_warnings(record=True)
        self.warnings = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc) -> None:
        self._catch.__exit__(*exc)
        for logger in self.loggers:
            logger.removeHandler(self.handler)

    @property
    def text(self) -> str:
        return (self.stream.getvalue() + "\n".join(str(w.message) for w in self.warnings)).lower()


def load_with_diffusers(pipe, file: Path) -> None:
    with CapturedLogs() as captured:
        pipe.load_lora_weights(str(file))
    lines = [line for line in captured.text.splitlines() if not line.startswith(ABSENT_PART)]
    problems = [word for word in LOAD_PROBLEMS if any(word in line for line in lines)]
    assert not problems, captured.text


# ---------------------------------------------------------------- diffusers reads what we write

@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("conv_dim", [None, 3], ids=["lora", "locon"])
def test_diffusers_loads_the_unet_lora_and_computes_the_same(family: str, conv_dim, request, tmp_path: Path) -> None:
    tiny: TinyModel = request.getfixturevalue(f"tiny_{family}")
    pipe = load_pipe(tiny)
    # The whole file (UNet and text encoders), as a user would load it; the UNet is compared here.
    network = build_network(tiny, pipe, conv_dim=conv_dim, conv_alpha=1.0)
    file = tmp_path / "unet.safetensors"
    info = metadata_input("sd1" if family == "sd15" else "sdxl")
    save_lora_file(file, network.kohya_state_dict(), build_metadata(info))
    tensors, _ = read_lora_file(file)
    stems = expected_unet_stems(family, pipe.unet, include_conv=conv_dim is not None)
    merged = hand_merge(pipe.unet, tensors, stems)
    inputs = unet_inputs(tiny, pipe.unet)
    base = run_unet(pipe.unet, inputs)

    load_with_diffusers(pipe, file)

    loaded = run_unet(pipe.unet, inputs)
    assert (loaded - base).abs().max() > 1e-2
    torch.testing.assert_close(loaded, run_unet(merged, inputs), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_diffusers_loads_the_text_encoder_lora_and_it_changes_the_output(family: str, request, tmp_path: Path) -> None:
    tiny: TinyModel = request.getfixturevalue(f"tiny_{family}")
    pipe = load_pipe(tiny)
    network = build_network(tiny, pipe, train_unet=False)
    file = tmp_path / "te.safetensors"
    save_lora_file(file, network.kohya_state_dict(), {}, save_precision="float")
    tensors, _ = read_lora_file(file)
    assert not any(key.startswith("lora_unet") for key in tensors)
    encoders = text_encoders(pipe)
    merged = [hand_merge(enc, tensors, expected_te_stems(enc, prefix))
              for enc, prefix in zip(encoders, TE_PREFIXES[family])]
    with torch.no_grad():
        base = [enc(TOKEN_IDS).last_hidden_state for enc in encoders]

    load_with_diffusers(pipe, file)

    with torch.no_grad():
        for encoder, hand, before in zip(encoders, merged, base):
            after = encoder(TOKEN_IDS).last_hidden_state
            assert (after - before).abs().max() > 1e-2
            torch.testing.assert_close(after, hand(TOKEN_IDS).last_hidden_state, atol=2e-5, rtol=1e-4)


# ---------------------------------------------------------------- metadata

def test_metadata_values_are_strings_with_the_kohya_and_modelspec_keys() -> None:
    metadata = build_metadata(metadata_input())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    required = (
        "ss_network_module ss_network_dim ss_network_alpha ss_network_args ss_base_model_version ss_output_name "
        "ss_learning_rate ss_unet_lr ss_text_encoder_lr ss_optimizer ss_lr_scheduler ss_num_epochs ss_steps ss_epoch "
        "ss_max_train_steps ss_num_train_images ss_seed ss_clip_skip ss_mixed_precision ss_noise_offset "
        "ss_min_snr_gamma ss_training_started_at ss_training_finished_at ss_sd_model_name ss_new_sd_model_hash "
        "ss_datasets ss_dataset_dirs ss_tag_frequency ss_training_comment modelspec.sai_model_spec "
        "modelspec.architecture modelspec.implementation modelspec.title modelspec.resolution modelspec.date "
        "modelspec.trigger_phrase modelspec.prediction_type modelspec.author modelspec.tags"
    ).split()
    assert not [key for key in required if key not in metadata]
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "2.0"
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "3", "conv_alpha": "1"}
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["ss_text_encoder_lr"] == "[5e-05, 2e-05]" and metadata["ss_unet_lr"] == "0.0002"
    assert metadata["ss_sd_model_name"] == "tinyxl.safetensors"  # never the user's folders
    assert json.loads(metadata["ss_dataset_dirs"]) == {
        "10_mychar": {"n_repeats": 10, "img_count": 3}, "1_person": {"n_repeats": 1, "img_count": 5}}
    assert json.loads(metadata["ss_tag_frequency"])["10_mychar"] == {"mychar": 3, "smile": 2}
    datasets = json.loads(metadata["ss_datasets"])
    assert datasets[0]["subsets"][0]["image_dir"] == "10_mychar" and datasets[0]["subsets"][0]["keep_tokens"] == 1
    assert datasets[0]["num_train_images"] == 30 and datasets[0]["resolution"] == [1024, 1024]
    assert "/home/someone" not in json.dumps(metadata)
    assert metadata["modelspec.sai_model_spec"] == "1.0.0"
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert metadata["modelspec.resolution"] == "1024x1024" and metadata["modelspec.prediction_type"] == "epsilon"
    assert metadata["modelspec.title"] == "mychar" and metadata["modelspec.trigger_phrase"] == "mychar"
    assert metadata["modelspec.date"].startswith("2023-11-1")
    assert float(metadata["ss_training_finished_at"]) == 1_700_003_600.25

    sd1 = build_metadata(metadata_input("sd1", resolution=None, sd_model_hash=None, trigger_phrase="zkz",
                                        text_encoder_lr=[5e-5], seed=None))
    assert sd1["ss_base_model_version"] == "sd_v1" and sd1["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert sd1["modelspec.implementation"] == "diffusers" and sd1["modelspec.resolution"] == "512x512"
    assert sd1["ss_text_encoder_lr"] == "5e-05" and sd1["ss_seed"] == "None"
    assert "ss_new_sd_model_hash" not in sd1 and sd1["modelspec.trigger_phrase"] == "zkz"
    v_pred = build_metadata(metadata_input("sd2", v_parameterization=True, resolution=(768, 768)))
    assert v_pred["ss_base_model_version"] == "sd_v2_v" and v_pred["modelspec.prediction_type"] == "v"
    assert v_pred["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora" and v_pred["ss_v2"] == "True"
    with pytest.raises(TrainerError):
        build_metadata(metadata_input("flux"))


def test_minimal_metadata_keeps_what_loaders_need() -> None:
    minimal = build_metadata(metadata_input(), minimal=True)
    assert {k for k in minimal if k.startswith("ss_")} == {
        "ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
        "ss_network_args"}
    assert "modelspec.architecture" in minimal and "ss_tag_frequency" not in minimal


def test_metadata_never_carries_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hf_" + "Zq7" * 11
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "CIVITAI_API_TOKEN", "WANDB_API_KEY"):
        monkeypatch.setenv(name, secret)
    metadata = build_metadata(metadata_input())
    assert not any(secret in value or "hf_" in value for value in metadata.values())


# ---------------------------------------------------------------- the file itself

def big_tensors() -> dict[str, torch.Tensor]:
    """Over 1 MiB of tensors, so the legacy hash reads real bytes at offset 0x100000."""
    generator = torch.Generator().manual_seed(5)
    return {
        "lora_unet_a.lora_down.weight": torch.randn(8, 40_000, generator=generator),
        "lora_unet_a.lora_up.weight": torch.randn(64, 8, generator=generator),
        "lora_unet_a.alpha": torch.tensor(4.0),
    }


def test_hashes_match_an_independent_recomputation(tmp_path: Path) -> None:
    metadata = build_metadata(metadata_input())
    file = tmp_path / "hashed.safetensors"
    saved = save_lora_file(file, big_tensors(), metadata, save_precision="float")
    tensors, stored = read_lora_file(file)
    assert stored["sshs_model_hash"] == saved.model_hash and stored["sshs_legacy_hash"] == saved.legacy_hash
    assert {k: v for k, v in stored.items() if not k.startswith("sshs_")} == metadata

    # sd-scripts' definition: serialize with the ss_ metadata only, hash what follows the header...
    data = safetensors.torch.save(tensors, metadata={k: v for k, v in stored.items() if k.startswith("ss_")})
    header = int.from_bytes(data[:8], "little")
    assert stored["sshs_model_hash"] == hashlib.sha256(data[8 + header:]).hexdigest()
    # ... and the legacy hash of 64 KiB at offset 1 MiB.
    assert len(data) > 0x110000
    assert stored["sshs_legacy_hash"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    # The tensor data (what the model hash covers) is the same bytes in the written file.
    written = file.read_bytes()
    written_header = int.from_bytes(written[:8], "little")
    assert hashlib.sha256(written[8 + written_header:]).hexdigest() == stored["sshs_model_hash"]


@pytest.mark.parametrize(("precision", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                                  ("float", torch.float32), (None, torch.float32)])
def test_save_precision_sets_the_tensor_dtype(precision, dtype, tmp_path: Path) -> None:
    source = {k: v.to(torch.bfloat16) if precision is None else v for k, v in big_tensors().items()}
    save_lora_file(tmp_path / "p.safetensors", source, {}, save_precision=precision)
    tensors, _ = read_lora_file(tmp_path / "p.safetensors")
    assert {t.dtype for t in tensors.values()} == {dtype}
    assert tensors["lora_unet_a.alpha"].ndim == 0 and tensors["lora_unet_a.alpha"].item() == 4.0


def test_save_is_atomic_and_checks_its_inputs(tmp_path: Path) -> None:
    file = tmp_path / "out" / "a.safetensors"
    save_lora_file(file, big_tensors(), {"ss_x": "1"})
    save_lora_file(file, big_tensors(), {"ss_x": "2"})  # replacing is the caller's decision
    assert read_lora_file(file)[1]["ss_x"] == "2"
    assert sorted(p.name for p in file.parent.iterdir()) == ["a.safetensors"]  # no temp files left
    with pytest.raises(TrainerError) as info:
        save_lora_file(tmp_path / "b.safetensors", big_tensors(), {}, save_precision="fp8")
    assert info.value.option == "save_precision"
    with pytest.raises(TypeError):
        save_lora_file(tmp_path / "c.safetensors", big_tensors(), {"ss_steps": 3})  # type: ignore[dict-item]
    assert not (tmp_path / "b.safetensors").exists() and not (tmp_path / "c.safetensors").exists()


# ---------------------------------------------------------------- names, overwrite, pruning

def test_output_names_follow_sd_scripts(tmp_path: Path) -> None:
    paths = output_paths(tmp_path, "mychar")
    assert paths.final.name == "mychar.safetensors"
    assert paths.epoch(1).name == "mychar-000001.safetensors"
    assert paths.step(100).name == "mychar-step00000100.safetensors"
    assert output_paths(tmp_path, "mychar.safetensors").final == paths.final
    for bad in ("", "a/b", " padded", "x:y"):
        with pytest.raises(TrainerError):
            output_paths(tmp_path, bad)


def test_check_no_overwrite_refuses_files_of_an_earlier_run(tmp_path: Path) -> None:
    paths = output_paths(tmp_path, "mychar")
    check_no_overwrite(paths, allow=False)  # nothing there yet
    (tmp_path / "mychar2.safetensors").write_bytes(b"x")  # other names do not count
    (tmp_path / "mychar-notes.txt").write_bytes(b"x")
    check_no_overwrite(paths, allow=False)
    for existing in (paths.epoch(3), paths.final, paths.step(200)):
        existing.write_bytes(b"x")
        with pytest.raises(TrainerError) as info:
            check_no_overwrite(paths, allow=False)
        assert existing.name in str(info.value) and "overwrite_output" in info.value.hint
        check_no_overwrite(paths, allow=True)
        existing.unlink()


def test_pruning_removes_only_this_runs_older_numbered_saves(tmp_path: Path) -> None:
    paths = output_paths(tmp_path, "mychar")
    earlier_run = paths.epoch(1)
    earlier_run.write_bytes(b"earlier")
    paths.final.write_bytes(b"final")
    (tmp_path / "unrelated-000001.safetensors").write_bytes(b"other")
    epochs = {n: paths.epoch(n) for n in (2, 4, 6, 8)}
    for path in epochs.values():
        path.write_bytes(b"new")
    removed = prune_old_saves("epoch", 2, epochs)
    assert removed == [epochs[2], epochs[4]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mychar-000001.safetensors", "mychar-000006.safetensors", "mychar-000008.safetensors", "mychar.safetensors",
        "unrelated-000001.safetensors"]

    steps = {n: paths.step(n) for n in (100, 200, 300, 400, 500)}
    for path in steps.values():
        path.write_bytes(b"new")
    assert prune_old_saves("step", 250, steps) == [steps[100], steps[200]]  # keeps steps 251-500
    assert all(steps[n].exists() for n in (300, 400, 500))
    assert prune_old_saves("step", None, steps) == [] and prune_old_saves("epoch", 5, {}) == []
    with pytest.raises(ValueError):
        prune_old_saves("epoch", 1, {1: paths.final, 2: paths.epoch(9)})
    assert paths.final.exists() and os.path.getsize(paths.final) == 5
