"""The utilities panel driven from code: inspect, resize, merge, upload to a fake Hub, try it."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from core.paths import ProjectPaths
from tests.fake_hub import USER, WRITE_TOKEN, allow_hub_requests, fake_hub
from tests.test_hub_upload import make_trained_lora
from trainer.saving.lora_file import read_lora_file
from widgets.context import BASE_MODEL, CONFIG_FILE, NotebookContext
from widgets.utilities_panel import UtilitiesPanel


@pytest.fixture
def context(tmp_path: Path) -> NotebookContext:
    paths = ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work").ensure()
    return NotebookContext(paths=paths)


def trained(context: NotebookContext, name: str = "zk_style") -> Path:
    folder = context.paths.outputs / "zk"
    folder.mkdir(parents=True, exist_ok=True)
    return make_trained_lora(folder / f"{name}.safetensors")


def test_inspect_shows_the_latest_loras_rank_and_trigger_words(context) -> None:
    lora = trained(context)
    panel = UtilitiesPanel(context)
    assert panel.lora_path.value == str(lora)  # pre-filled with the newest LoRA in outputs
    assert str(lora) in [value for _, value in panel.found.options]
    panel.inspect_button.click()
    shown = panel.inspect_html.value
    assert "<td>unet</td><td>linear</td><td>4</td><td>2</td><td>1</td>" in shown  # part, kind, rank, alpha, count
    assert "zkstyle" in shown and "AdamW8bit" in shown and "SD1" in shown
    panel.lora_path.value = str(lora.with_name("missing.safetensors"))
    panel.inspect_button.click()
    assert "missing.safetensors does not exist" in panel.messages.text


def test_latest_lora_follows_the_training_config(context, tmp_path) -> None:
    trained(context, "older")
    run = tmp_path / "elsewhere"
    run.mkdir()
    mine = make_trained_lora(run / "mine-000002.safetensors")
    config = tmp_path / "train.toml"
    config.write_text(f'output_dir = "{run}"\noutput_name = "mine"\n', encoding="utf-8")
    panel = UtilitiesPanel(context)
    assert panel.lora_path.value.endswith("older.safetensors")
    context.set(CONFIG_FILE, str(config))
    assert panel.lora_path.value == str(mine)
    panel.lora_path.value = "/typed/by/the/user.safetensors"
    context.set(CONFIG_FILE, str(config) + ".other")
    assert panel.lora_path.value == "/typed/by/the/user.safetensors"  # a typed path is never replaced


def test_resize_and_merge_via_the_panel_write_new_files_only(context) -> None:
    lora = trained(context)
    before = lora.read_bytes()
    panel = UtilitiesPanel(context)
    panel.resize_rank.value = 2
    panel.resize_button.click()
    assert panel.wait(60)
    out = lora.with_name("zk_style_r2.safetensors")
    tensors, meta = read_lora_file(out)
    assert meta["ss_network_dim"] == "2" and all(t.shape[0] == 2 for k, t in tensors.items() if "lora_down" in k)
    assert f"Saved {out}" in panel.result_html.value and lora.read_bytes() == before
    panel.resize_save_to.value = str(out)  # exists and overwrite is off: refused, file unchanged
    written = out.read_bytes()
    panel.resize_button.click()
    assert panel.wait(60)
    assert "already exists" in panel.messages.text and out.read_bytes() == written

    panel.merge_files.value = f"{lora}\n{out}"
    panel.merge_ratios.value = "0.5, 1"
    panel.merge_mode.value = "concat"
    panel.merge_button.click()
    assert panel.wait(60)
    merged = lora.with_name("zk_style_merged.safetensors")
    assert read_lora_file(merged)[1]["ss_network_dim"] == "6"  # 4 + 2 stacked


def test_upload_via_the_panel_to_the_fake_hub_clears_the_token(context, monkeypatch) -> None:
    allow_hub_requests(monkeypatch)
    lora = trained(context)
    samples = lora.parent / "sample"
    samples.mkdir()
    for index in range(2):
        Image.new("RGB", (8, 8), "red").save(samples / f"zk_style_000004_0{index}.png")
    Image.new("RGB", (8, 8), "blue").save(samples / "zk_style_000002_00.png")  # older step: not uploaded
    panel = UtilitiesPanel(context)
    upload = panel.upload
    assert upload.private.value is True
    with fake_hub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.base)
        upload.repo.value = "zk-style"
        upload.token.value = WRITE_TOKEN
        upload.upload_button.click()
        assert upload.token.value == ""  # emptied before the upload even starts
        assert panel.wait(60)
    assert hub.creates[0]["visibility"] == "private"
    files = hub.commits[0]["files"]
    assert sorted(files) == ["README.md", "images/zk_style_000004_00.png", "images/zk_style_000004_01.png",
                             "zk_style.safetensors"]
    assert f"to {USER}/zk-style" in upload.result.value and upload.progress.value == 100.0
    every_value = [child.value for child in _all_widgets(panel.root) if isinstance(getattr(child, "value", None), str)]
    assert not any(WRITE_TOKEN in value for value in every_value)


def _all_widgets(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _all_widgets(child)


def test_try_it_shows_a_grid_of_strengths(context, tmp_path, tiny_sd15) -> None:
    from tests.test_try_lora import make_sd15_lora

    lora = make_sd15_lora(context.paths.outputs / "disc.safetensors", tiny_sd15)
    context.set(BASE_MODEL, str(tiny_sd15.diffusers_dir))
    panel = UtilitiesPanel(context)
    tryout = panel.tryout
    assert panel.lora_path.value == str(lora) and tryout.base_model.value == str(tiny_sd15.diffusers_dir)
    tryout.prompt.value = "ohwx disc"
    tryout.strengths.value = "0, 1"
    tryout.steps.value = 2
    tryout.width.value = tryout.height.value = 64
    tryout.generate_button.click()
    assert panel.wait(300)
    assert "lora-error" not in panel.messages.text
    grid = Image.open(io.BytesIO(tryout.image.value))
    assert grid.size == (128, 64) and tryout.status.value.startswith("strengths 0, 1")


def test_bad_strengths_and_an_empty_prompt_are_refused_with_the_reason(context) -> None:
    lora = trained(context)
    panel = UtilitiesPanel(context)
    panel.merge_files.value = f"{lora}\n{lora}"
    panel.merge_ratios.value = "0.5, abc"
    panel.merge_mode.value = "concat"
    panel.merge_button.click()
    assert panel.wait(60)
    assert "&#x27;abc&#x27; in &#x27;0.5, abc&#x27; is not a number" in panel.messages.text
    assert not lora.with_name("zk_style_merged.safetensors").exists()

    tryout = panel.tryout
    tryout.strengths.value = "0, 5"
    tryout.generate_button.click()
    assert panel.wait(60)
    assert "Strength 5 in &#x27;0, 5&#x27; is outside -2 to 2" in panel.messages.text
    assert tryout.status.value == "failed" and tryout.image.value == b""

    bare = make_trained_lora(lora.with_name("bare.safetensors"), **{"modelspec.trigger_phrase": "",
                                                                     "ss_dataset_dirs": "{}"})
    panel.lora_path.value = str(bare)
    tryout.strengths.value = ""  # empty: the default 0, 0.5, 1
    tryout.generate_button.click()
    assert panel.wait(60)
    assert "bare.safetensors records no trigger words" in panel.messages.text


def test_extract_via_the_panel_writes_the_known_delta_as_a_lora(context, tmp_path, tiny_sd15) -> None:
    import shutil

    import torch
    from diffusers import UNet2DConditionModel

    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_sd15.diffusers_dir, tuned)
    unet = UNet2DConditionModel.from_pretrained(tuned / "unet")
    layer = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    gen = torch.Generator().manual_seed(5)
    known = (torch.randn(layer.weight.shape[0], 2, generator=gen)
             @ torch.randn(2, layer.weight.shape[1], generator=gen)) * 0.1
    with torch.no_grad():
        layer.weight += known
    unet.save_pretrained(tuned / "unet")

    panel = UtilitiesPanel(context)
    panel.extract_org.value = str(tiny_sd15.diffusers_dir)
    panel.extract_tuned.value = str(tuned)
    panel.extract_dim.value = 2
    panel.extract_precision.value = "float"
    panel.extract_button.click()
    assert panel.wait(120)
    out = tmp_path / "tuned_extracted_r2.safetensors"
    assert panel.messages.text == "" and f"Saved {out}" in panel.result_html.value
    assert "modules from unet" in panel.result_html.value
    tensors, meta = read_lora_file(out)
    assert meta["ss_network_dim"] == "2" and not any(key.startswith("lora_te") for key in tensors)
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    down, up = tensors[f"{stem}.lora_down.weight"].double(), tensors[f"{stem}.lora_up.weight"].double()
    scale = float(tensors[f"{stem}.alpha"]) / down.shape[0]
    torch.testing.assert_close(up @ down * scale, known.double(), rtol=1e-4, atol=1e-5)
