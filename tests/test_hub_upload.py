"""Hugging Face upload of a LoRA (with card and samples) and of a dataset, against a loopback fake Hub."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from core.errors import CoreError
from core.hub.model_card import resolve_base_model
from core.utilities_manager import upload_dataset, upload_lora
from tests.fake_hub import READ_TOKEN, STORAGE, USER, WRITE_TOKEN, allow_hub_requests, fake_hub
from trainer.saving.lora_file import save_lora_file

STEM = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def make_trained_lora(path: Path, **extra: str) -> Path:
    """A small SD1 LoRA whose metadata looks like one our trainer wrote."""
    gen = torch.Generator().manual_seed(0)
    tensors = {f"{STEM}.lora_down.weight": torch.randn(4, 32, generator=gen),
               f"{STEM}.lora_up.weight": torch.randn(32, 4, generator=gen),
               f"{STEM}.alpha": torch.tensor(2.0)}
    metadata = {
        "ss_base_model_version": "sd_v1", "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
        "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2.0",
        "ss_learning_rate": "0.0001", "ss_optimizer": "AdamW8bit", "ss_num_epochs": "10",
        "modelspec.trigger_phrase": "zkstyle",
        "ss_dataset_dirs": json.dumps({"10_zkstyle": {"n_repeats": 10, "img_count": 2}}),
        "ss_tag_frequency": json.dumps({"10_zkstyle": {"1girl": 2, "blue sky": 1}}),
        **extra,
    }
    save_lora_file(path, tensors, metadata)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def storage_puts(hub) -> list[tuple[str, str, dict[str, str]]]:
    """The requests that went to LFS storage (the pre-signed upload URLs) rather than to the Hub."""
    return [request for request in hub.requests if request[1].startswith(STORAGE)]


def front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def test_upload_lora_creates_a_private_repo_with_file_samples_and_card(tmp_path, monkeypatch, caplog, capsys):
    allow_hub_requests(monkeypatch)
    lora = make_trained_lora(tmp_path / "zk_style.safetensors")
    samples = []
    for index, colour in enumerate(("red", "blue")):
        path = tmp_path / "sample" / f"zk_style_000010_0{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 16), colour).save(path)
        samples.append(path)
    seen: list[tuple[int, int, str]] = []
    caplog.set_level(logging.DEBUG)
    with fake_hub() as hub:
        result = upload_lora(lora, "zk-style", images=samples, token=WRITE_TOKEN, endpoint=hub.base,
                             progress=lambda done, total, name: seen.append((done, total, name)))

    # Created once, private, as a model repo under the token's user.
    assert hub.creates == [{"name": "zk-style", "organization": None, "visibility": "private"}]
    assert result.repo_id == f"{USER}/zk-style" and result.private and result.repo_type == "model"
    # The LoRA and the samples went to LFS storage first (one batch, basic transfer, each verified),
    # then one commit named them by sha256; only the README travelled inside the commit.
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    binaries = {"zk_style.safetensors": lora, "images/zk_style_000010_00.png": samples[0],
                "images/zk_style_000010_01.png": samples[1]}
    assert commit["lfs"] == {name: sha256(path) for name, path in binaries.items()}
    assert commit["inline"] == ["README.md"] and commit["other_keys"] == []
    assert all(hub.lfs_objects[sha256(path)] == path.read_bytes() for path in binaries.values())
    assert len(hub.lfs_batches) == 1 and "basic" in hub.lfs_batches[0]["transfers"]
    assert sorted((item["oid"], item["size"]) for item in hub.lfs_batches[0]["objects"]) == sorted(
        (sha256(path), path.stat().st_size) for path in binaries.values())
    assert sorted(path.split("?")[0].removeprefix(STORAGE) for _, path, _ in storage_puts(hub)) == sorted(
        commit["lfs"].values())
    assert sorted(hub.verified) == sorted(commit["lfs"].values())
    assert any(path == f"/{USER}/zk-style.git/info/lfs/objects/batch" for _, path, _ in hub.requests)
    files = commit["files"]
    assert files["zk_style.safetensors"] == lora.read_bytes()
    # The card: base model and trigger words in the front matter, settings and usage in the body.
    readme = files["README.md"].decode()
    meta = front_matter(readme)
    assert meta["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"  # from the preset's file name
    assert meta["instance_prompt"] == "zkstyle"
    assert {"lora", "stable-diffusion", "text-to-image"} <= set(meta["tags"])
    assert meta["widget"][0]["output"]["url"] == "images/zk_style_000010_00.png"
    assert "<lora:zk_style:1>" in readme and f'load_lora_weights("{USER}/zk-style"' in readme
    assert "| Optimizer | `AdamW8bit` |" in readme and "`1girl` (2)" in readme
    assert hub.validated_yaml and hub.validated_yaml[0] == readme
    # Progress reached the end.
    assert seen[-1][0] == seen[-1][1] == result.total_bytes > 0
    # The token: in the Authorization header of every Hub call (create, preupload, LFS batch and
    # verify, commit), never sent to storage (the pre-signed URL is its credential), never elsewhere.
    puts = storage_puts(hub)
    assert [method for method, _, _ in puts] == ["PUT"] * 3
    assert not any(WRITE_TOKEN in value for _, _, headers in puts for value in headers.values())
    hub_calls = [request for request in hub.requests if request not in puts]
    assert hub_calls and all(headers.get("authorization") == f"Bearer {WRITE_TOKEN}" for _, _, headers in hub_calls)
    assert not any(WRITE_TOKEN in value for _, _, headers in hub.requests
                   for name, value in headers.items() if name != "authorization")
    assert not any(WRITE_TOKEN in path for _, path, _ in hub.requests)
    assert all(WRITE_TOKEN.encode() not in data for data in [*files.values(), *hub.lfs_objects.values()])
    printed = capsys.readouterr()
    assert WRITE_TOKEN not in caplog.text + printed.out + printed.err + repr(result)
    assert "Uploading 4 files" in caplog.text  # our log line is there, without the token


def test_upload_to_an_existing_repo_and_with_explicit_base_model(tmp_path, monkeypatch):
    allow_hub_requests(monkeypatch)
    lora = make_trained_lora(tmp_path / "x.safetensors", ss_base_model_version="sdxl_base_v1-0",
                             ss_sd_model_name="my_merge.safetensors")
    with fake_hub() as hub:
        upload_lora(lora, f"{USER}/x", token=WRITE_TOKEN, endpoint=hub.base, show_bar=False)
        monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)  # the environment serves when no token is passed
        second = upload_lora(lora, f"{USER}/x", endpoint=hub.base, base_model="OnomaAIResearch/Illustrious-xl",
                             trigger_words=["a b", "c"], show_bar=False)
    assert len(hub.creates) == 2 and len(hub.commits) == 2  # 409 on the second create is accepted
    assert second.repo_id == f"{USER}/x"
    first_meta = front_matter(hub.commits[0]["files"]["README.md"].decode())
    assert first_meta["base_model"] == "stabilityai/stable-diffusion-xl-base-1.0"  # unknown file: the family's base
    assert "stable-diffusion-xl" in first_meta["tags"]
    second_meta = front_matter(hub.commits[1]["files"]["README.md"].decode())
    assert second_meta["base_model"] == "OnomaAIResearch/Illustrious-xl" and second_meta["instance_prompt"] == "a b, c"
    assert sorted(hub.commits[1]["files"]) == ["README.md", "x.safetensors"]
    # The same LoRA twice: the LFS batch says the object is already stored, so it is sent only once.
    assert hub.commits[1]["lfs"] == hub.commits[0]["lfs"] == {"x.safetensors": sha256(lora)}
    assert len(storage_puts(hub)) == 1 and len(hub.lfs_batches) == 2


def test_upload_errors_name_the_problem_and_never_the_token(tmp_path, monkeypatch):
    allow_hub_requests(monkeypatch)
    lora = make_trained_lora(tmp_path / "y.safetensors")
    with fake_hub() as hub:
        with pytest.raises(CoreError) as refused:
            upload_lora(lora, "y", token=READ_TOKEN, endpoint=hub.base, show_bar=False)
        with pytest.raises(CoreError) as bad_name:
            upload_lora(lora, "bad name!/x--", token=WRITE_TOKEN, endpoint=hub.base, show_bar=False)
        with pytest.raises(CoreError) as missing:
            upload_lora(tmp_path / "nope.safetensors", "y", token=WRITE_TOKEN, endpoint=hub.base)
        with pytest.raises(CoreError) as no_token:
            upload_lora(lora, "y", endpoint=hub.base, show_bar=False)
    assert "write permission" in refused.value.message and "settings/tokens" in refused.value.hint
    assert "403" in refused.value.message and READ_TOKEN not in str(refused.value)
    assert "not valid" in bad_name.value.message
    assert "nope.safetensors" in missing.value.message
    assert "No Hugging Face token" in no_token.value.message
    assert hub.commits == []  # nothing was committed by a failed upload
    # Offline mode gives its own hint instead of a network error.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CoreError, match="offline") as offline:
        upload_lora(lora, "y", token=WRITE_TOKEN, endpoint="http://127.0.0.1:9", show_bar=False)
    assert "HF_HUB_OFFLINE" in offline.value.hint


def test_with_xet_the_client_asks_the_hub_for_a_write_token_and_a_refusal_is_explained(tmp_path, monkeypatch):
    """Users' real uploads go through Xet (hf_xet installed, the default): its first call asks the Hub
    for a Xet write token, with ours only in the Authorization header. A Hub or mirror without Xet
    (this fake) gives a CoreError that says so and how to fall back to plain LFS."""
    pytest.importorskip("hf_xet")
    allow_hub_requests(monkeypatch, xet=True)
    lora = make_trained_lora(tmp_path / "z.safetensors")
    with fake_hub() as hub:
        with pytest.raises(CoreError) as refused:
            upload_lora(lora, "z", token=WRITE_TOKEN, endpoint=hub.base, show_bar=False)
    token_calls = [(method, headers) for method, path, headers in hub.requests
                   if path == f"/api/models/{USER}/z/xet-write-token/main"]
    assert token_calls and all(method == "GET" and headers["authorization"] == f"Bearer {WRITE_TOKEN}"
                               for method, headers in token_calls)
    assert hub.lfs_batches == [] and hub.commits == []  # no LFS fallback, no half commit
    assert "Xet storage" in refused.value.message and "HF_HUB_DISABLE_XET=1" in refused.value.hint
    assert WRITE_TOKEN not in str(refused.value)


def test_upload_dataset_skips_rejects_originals_and_history(tmp_path, monkeypatch, capsys):
    allow_hub_requests(monkeypatch)
    root = tmp_path / "mychar"
    (root / "10_mychar").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(root / "10_mychar" / "a.png")
    (root / "10_mychar" / "a.txt").write_text("mychar, 1girl", encoding="utf-8")
    for skipped in ("_rejected/b.png", "_originals/c.webp", "10_mychar/.caption_history/0001-x/a.txt",
                    "10_mychar/a.npz"):
        (root / skipped).parent.mkdir(parents=True, exist_ok=True)
        (root / skipped).write_bytes(b"skip me")
    with fake_hub() as hub:
        result = upload_dataset(root, "mychar-data", token=WRITE_TOKEN, endpoint=hub.base, show_bar=False)
    assert hub.creates == [{"name": "mychar-data", "organization": None, "visibility": "private", "type": "dataset"}]
    assert result.repo_type == "dataset" and result.repo_id == f"{USER}/mychar-data"
    files = hub.commits[0]["files"]
    assert sorted(files) == ["10_mychar/a.png", "10_mychar/a.txt", "README.md"]
    assert files["10_mychar/a.txt"] == b"mychar, 1girl"
    # Images by LFS (to the dataset's git URL), captions and card inline.
    assert hub.commits[0]["lfs"] == {"10_mychar/a.png": sha256(root / "10_mychar" / "a.png")}
    assert files["10_mychar/a.png"] == (root / "10_mychar" / "a.png").read_bytes()
    assert hub.commits[0]["inline"] == ["10_mychar/a.txt", "README.md"]
    assert any(path == f"/datasets/{USER}/mychar-data.git/info/lfs/objects/batch" for _, path, _ in hub.requests)
    # show_bar=False (the panel's way): huggingface_hub's own per-file bars stay quiet too.
    printed = capsys.readouterr()
    assert "LFS" not in printed.err + printed.out and "a.png" not in printed.err
    assert "| 10_mychar | 1 | 1 |" in files["README.md"].decode()
    assert any("/api/datasets/artist/mychar-data/commit/main" in path for _, path, _ in hub.requests)


def test_command_line_upload_takes_the_token_from_the_environment(tmp_path, monkeypatch, capsys):
    from core.utilities_manager import main

    allow_hub_requests(monkeypatch)
    lora = make_trained_lora(tmp_path / "cli.safetensors")
    with fake_hub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.base)
        assert main(["upload-lora", str(lora), "--repo", "cli", "--trigger", "zk"]) == 2  # no token yet
        monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
        assert main(["upload-lora", str(lora), "--repo", "cli", "--public", "--trigger", "zk"]) == 0
    printed = capsys.readouterr()
    assert "No Hugging Face token" in printed.err and f"{hub.base}/{USER}/cli" in printed.out
    assert hub.creates == [{"name": "cli", "organization": None, "visibility": "public"}]
    assert front_matter(hub.commits[0]["files"]["README.md"].decode())["instance_prompt"] == "zk"
    assert WRITE_TOKEN not in printed.out + printed.err


def test_base_model_resolution() -> None:
    assert resolve_base_model(None, "sd_xl_base_1.0.safetensors", "SDXL") == "stabilityai/stable-diffusion-xl-base-1.0"
    assert resolve_base_model(None, "Laxhar/noobai-XL-1.1", "SDXL") == "Laxhar/noobai-XL-1.1"
    assert resolve_base_model(None, "", "SD1/SD2") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    with pytest.raises(CoreError, match="not a Hugging Face repo id"):
        resolve_base_model("my model.safetensors", "", "SDXL")
    with pytest.raises(CoreError, match="Cannot tell"):
        resolve_base_model(None, "", "unknown")
