"""Fetching a base model for the setup panel: where it goes, which tokens it uses, and what it turned out to be.

The panel only passes what the user typed. Here a preset key or a URL becomes a download into
``models/`` (a VAE into ``vae/``); tokens are used for that one download and, only when the user
asks, stored in the private token file (mode 0600) outside the project folders, never anywhere
else; and the finished file is described (SD1.5 / SD2 / SDXL, v-prediction or not) so the
trainer's settings can follow from the choice.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import CoreError
from core.paths import ProjectPaths
from core.training.base_models import FAMILY_LABELS, describe_model

_PRESET_BASE_TO_FAMILY = {"sd15": "sd1", "sd2": "sd2", "sdxl": "sdxl"}
_VPRED_NAME = re.compile(r"v[-_ ]?pred", re.IGNORECASE)
ProgressCallback = Callable[[int, "int | None"], None]


def default_token_file(environ: Mapping[str, str] | None = None) -> Path:
    """The private token file: ``LORA_TOKEN_FILE``, else ``~/.config/lora-easy-training/tokens.json``.

    It lives outside the work folders on purpose, so uploading or sharing a project folder can
    never carry a token along.
    """
    env = os.environ if environ is None else environ
    if env.get("LORA_TOKEN_FILE"):
        return Path(env["LORA_TOKEN_FILE"]).expanduser()
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser()
    return config_home / "lora-easy-training" / "tokens.json"


def preset_choices() -> list[tuple[str, str]]:
    """``(label, preset key)`` pairs for a dropdown: the name, then the base type and v-pred."""
    from core.models import load_presets

    choices = []
    for key, preset in load_presets().items():
        family = FAMILY_LABELS.get(_PRESET_BASE_TO_FAMILY.get(preset.base, ""), preset.base)
        kind = f"VAE for {family}" if preset.kind == "vae" else family + (", v-pred" if preset.v_prediction else "")
        choices.append((f"{preset.label} ({kind})", key))
    return choices


@dataclass(frozen=True)
class BaseModelChoice:
    """A downloaded model and what the trainer must know about it."""

    path: Path
    kind: str  # "checkpoint" or "vae"
    family: str | None  # "sd1", "sd2", "sdxl"; None when it could not be told
    v_prediction: bool | None  # None: the file does not say
    evidence: str  # why we think so, in plain words
    skipped: bool  # already there and verified: nothing was downloaded

    @property
    def family_label(self) -> str:
        return FAMILY_LABELS.get(self.family or "", "unknown type")

    def summary_lines(self) -> list[str]:
        """What the panel shows after the download."""
        verb = "Already present" if self.skipped else "Downloaded"
        if self.kind == "vae":
            return [f"{verb}: {self.path} (a VAE: choose it as the trainer's VAE)"]
        if self.v_prediction is None:
            vpred = "not stated in the file (if the model page says v-pred, turn on v_parameterization)"
        else:
            vpred = "yes" if self.v_prediction else "no"
        return [f"{verb}: {self.path}", f"Type: {self.family_label} ({self.evidence})", f"v-prediction: {vpred}",
                "The trainer's settings follow from this choice (set as the base model)."]


def fetch_base_model(source: str, paths: ProjectPaths, hf_token: str | None = None,
                     civitai_token: str | None = None, remember_tokens: bool = False,
                     token_file: Path | None = None, on_progress: ProgressCallback | None = None,
                     environ: Mapping[str, str] | None = None) -> BaseModelChoice:
    """Download a preset key or any HF / Civitai / direct URL into the project's model folders.

    Tokens (empty means "use HF_TOKEN / CIVITAI_TOKEN or the token file") are only sent to their
    own service. With ``remember_tokens`` the given ones are saved to ``token_file`` (default
    :func:`default_token_file`, mode 0600) after a successful download, never before: a
    mistyped token is not kept.
    """
    from core.downloads.tokens import save_token
    from core.models import download_model, load_presets

    source = (source or "").strip()
    if not source:
        raise CoreError("Choose a preset or paste a model URL first.",
                        "Any Hugging Face file URL, Civitai model page URL, or direct download link works.")
    token_file = Path(token_file) if token_file else default_token_file(environ)
    preset = load_presets().get(source)
    kind = preset.kind if preset else "checkpoint"
    dest = paths.vae if kind == "vae" else paths.models
    result = download_model(source, dest, hf_token=hf_token or None, civitai_token=civitai_token or None,
                            token_file=token_file, environ=environ, progress=False, on_progress=on_progress)
    if remember_tokens:
        for service, token in (("huggingface", hf_token), ("civitai", civitai_token)):
            if token:
                save_token(token_file, service, token)
    if kind == "vae":
        return BaseModelChoice(result.path, kind, None, None, "VAE", result.skipped)
    found = describe_model(result.path)
    family = found.family
    evidence = f"not recognised: {found.error}" if found.error else "read from the file's layer names and shapes"
    if preset is not None:
        v_prediction: bool | None = preset.v_prediction
        family = family or _PRESET_BASE_TO_FAMILY.get(preset.base)
        evidence = f"preset {preset.label}; {evidence}"
    else:
        v_prediction = found.v_prediction or (True if _VPRED_NAME.search(result.path.name) else None)
    return BaseModelChoice(result.path, kind, family, v_prediction, evidence, result.skipped)
