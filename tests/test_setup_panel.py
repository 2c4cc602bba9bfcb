"""The setup panel driven from code: the machine report, base-model downloads from loopback servers
(tokens typed into Password fields must vanish everywhere), and "check my setup" run for real."""
from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import ipywidgets as w
import pytest
from safetensors import safe_open

from core.paths import ProjectPaths
from tests.loopback import hub_files_handler, serving
from tests.test_model_downloads import PAYLOAD, TOKEN, Behaviour, _handler
from widgets.context import BASE_MODEL, NotebookContext
from widgets.setup_panel import SetupPanel, warnings_html

HF_SECRET = "hf_PanelSecret_0123456789"
SD15_PATH = "/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors"
VAE_PATH = "/madebyollin/sdxl-vae-fp16-fix/resolve/main/sdxl.vae.safetensors"


def _context(tmp_path: Path) -> NotebookContext:
    return NotebookContext(paths=ProjectPaths.resolve(environ={}, work_dir=tmp_path / "work"))


def _all_widgets(widget: w.Widget) -> Iterator[w.Widget]:
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _all_widgets(child)


def _assert_secret_gone(panel: SetupPanel, context: NotebookContext, secret: str, folder: Path,
                        allowed: set[Path] = frozenset()) -> None:
    """The secret is in no widget's state, not in the context, and in no file under ``folder``."""
    for widget in _all_widgets(panel.root):
        assert secret not in json.dumps(widget.get_state(), default=str), type(widget).__name__
    assert panel.hf_token.value == "" and panel.civitai_token.value == ""
    assert secret not in repr(context.values) and secret not in panel.messages.text
    for path in folder.rglob("*"):
        if path.is_file() and path not in allowed:
            assert secret.encode() not in path.read_bytes(), path


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No token from the developer's environment may help; the token file goes to a temp folder."""
    for name in ("HF_TOKEN", "CIVITAI_TOKEN", "HF_ENDPOINT", "CIVITAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    token_file = tmp_path / "private" / "tokens.json"
    monkeypatch.setenv("LORA_TOKEN_FILE", str(token_file))
    return token_file


@pytest.fixture
def civitai_server():
    """The Civitai API and file host imitation of tests/test_model_downloads.py, on 127.0.0.1."""
    state = Behaviour()
    with serving(_handler(state)) as base:
        yield state, base


@pytest.fixture
def loopback_hub(tiny_sd15, monkeypatch, clean_env):
    """A Hugging Face Hub imitation on 127.0.0.1 serving the tiny SD1.5 file under the sd15 preset's name."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # conftest makes the suite offline
    files = {SD15_PATH: tiny_sd15.single_file.read_bytes(), VAE_PATH: b"tiny vae bytes" * 300}
    seen: list[tuple[str, str, str | None]] = []
    with serving(hub_files_handler(files, seen, commit="b" * 40)) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        yield files, seen


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_panel_reports_a_gpu_less_machine_and_the_project_folders(tmp_path: Path) -> None:
    context = _context(tmp_path)
    panel = SetupPanel(context)
    assert "No NVIDIA GPU found" in panel.warnings_html.value and "lora-warning" in panel.warnings_html.value
    assert "none found (CPU only)" in panel.report_html.value
    assert "Platform" in panel.report_html.value and "PyTorch" in panel.report_html.value
    for folder in (context.paths.models, context.paths.datasets, context.paths.outputs, context.paths.cache):
        assert str(folder) in panel.folders_html.value
    assert "GB free" in panel.folders_html.value
    assert panel.download is None and not hasattr(panel, "preset")  # the dataset notebook has no downloads
    assert panel.check_button.description == "Check my setup"
    assert panel.messages.text == ""


def test_preset_download_through_the_panel_sets_the_base_model_and_forgets_the_token(
        tmp_path: Path, loopback_hub, clean_env, tiny_sd15) -> None:
    files, seen = loopback_hub
    context = _context(tmp_path)
    heard: list[object] = []
    context.on_change(BASE_MODEL, heard.append)
    panel = SetupPanel(context, downloads=True)
    labels = dict((value, label) for label, value in panel.preset.options)
    assert labels["noobai_xl_vpred"].endswith("(SDXL, v-pred)") and labels["sd15"].endswith("(SD1.5)")

    panel.preset.value = "sd15"
    panel.hf_token.value = HF_SECRET
    panel.download_button.click()
    assert panel.hf_token.value == ""  # emptied the moment the download starts
    assert panel.wait(timeout=60)

    saved = context.paths.models / "v1-5-pruned-emaonly.safetensors"
    assert saved.read_bytes() == files[SD15_PATH]
    assert panel.download_progress.value == 100.0 and panel.download_progress.bar_style == "success"
    assert context.get(BASE_MODEL) == saved and heard == [saved]
    result = panel.download_result.value
    assert "Type: SD1.5" in result and "v-prediction: no" in result and "follow from this choice" in result
    assert ("GET", SD15_PATH, f"Bearer {HF_SECRET}") in seen  # the token did its job
    assert panel.messages.text == ""
    _assert_secret_gone(panel, context, HF_SECRET, tmp_path)
    assert not clean_env.exists()  # "remember" was not ticked

    # A VAE preset goes to vae/ and leaves the base model alone.
    panel.preset.value = "sdxl_vae_fp16_fix"
    panel.download_button.click()
    assert panel.wait(timeout=60)
    assert (context.paths.vae / "sdxl.vae.safetensors").read_bytes() == files[VAE_PATH]
    assert context.get(BASE_MODEL) == saved and "a VAE" in panel.download_result.value


def test_civitai_url_with_a_remembered_token(tmp_path: Path, civitai_server, clean_env, monkeypatch) -> None:
    state, base = civitai_server
    monkeypatch.setenv("CIVITAI_API_BASE", base)  # but no CIVITAI_TOKEN: the token is typed below
    context = _context(tmp_path)
    panel = SetupPanel(context, downloads=True)
    panel.url.value = f"{base}/models/77?modelVersionId=4242"
    panel.civitai_token.value = TOKEN
    panel.remember_tokens.value = True
    panel.download_button.click()
    assert panel.wait(timeout=60)

    saved = context.paths.models / "ponyLike_v6.safetensors"
    assert saved.read_bytes() == PAYLOAD
    assert panel.download_progress.value == 100.0
    assert context.get(BASE_MODEL) == saved
    assert "unknown type" in panel.download_result.value  # random bytes: the panel says it cannot tell
    # Remembered in the private token file only (mode 0600), outside the project folders.
    assert stat.S_IMODE(os.stat(clean_env).st_mode) == 0o600
    assert json.loads(clean_env.read_text(encoding="utf-8")) == {"civitai": TOKEN}
    _assert_secret_gone(panel, context, TOKEN, tmp_path, allowed={clean_env})
    assert all(TOKEN not in path for path, _ in state.requests)


def test_download_errors_show_in_the_panel(tmp_path: Path, clean_env) -> None:
    panel = SetupPanel(_context(tmp_path), downloads=True)
    panel.download_button.click()  # neither a preset nor a URL
    assert panel.wait(timeout=30)
    assert "Choose a preset or paste a model URL first" in panel.messages.text
    assert panel.download_progress.bar_style == "danger" and not panel.download_button.disabled


def test_check_my_setup_from_the_panel_passes_every_stage(tmp_path: Path) -> None:
    context = _context(tmp_path)
    panel = SetupPanel(context, downloads=True)
    panel.check_button.click()
    assert panel.wait(timeout=600)

    report = panel.self_check.report
    assert [stage.status for stage in report.stages] == ["ok"] * 7, report.summary_lines()
    assert panel.check_progress.value == 7 and panel.check_progress.bar_style == "success"
    assert "Everything works" in panel.check_verdict.value
    assert panel.check_stages.value.count("✔") == 7 and "Train a tiny LoRA" in panel.check_stages.value
    assert report.lora_path.parent == context.paths.cache / "self_check" / "output"
    with safe_open(str(report.lora_path), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and any(key.startswith("lora_unet_") for key in keys)
    assert all(key.startswith(("lora_unet_", "lora_te_")) for key in keys)
    assert not panel.check_button.disabled and panel.messages.text == ""


def test_warnings_are_coloured_by_the_level_core_gives_them() -> None:
    from core.environment import EnvWarning

    shown = warnings_html([EnvWarning("no_torch", "No <torch>", "error"), EnvWarning("cpu_only", "No GPU"),
                           EnvWarning("no_bf16", "No bf16", "info")])
    assert shown.count("lora-msg") == 3
    assert 'lora-error">' in shown and "No &lt;torch&gt;" in shown
    assert shown.index("lora-error") < shown.index("lora-warning") < shown.index("lora-info") < shown.index("No bf16")
