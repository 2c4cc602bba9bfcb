"""Load the ``vae`` option: a separate VAE that replaces the one inside the base model.

Accepted: a ``.safetensors``/``.ckpt`` file in the original layout (``encoder.down.0...``, with
or without ``first_stage_model.``) or the diffusers layout (``encoder.down_blocks.0...``), a
diffusers VAE folder (``config.json`` + weights), a whole pipeline folder (its ``vae/``), or a
Hub repo id of either. A single file has no config: it is read with the *base model's* VAE
config, so it must have the same architecture (every SD1/SD2/SDXL VAE does).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError
from trainer.models.detect import read_keys_and_shapes

OPTION = "vae"
_NETWORK_PREFIXES = ("lora_", "lycoris_")
_VAE_PREFIXES = ("encoder.", "decoder.", "first_stage_model.", "quant_conv.", "post_quant_conv.")


@dataclass(frozen=True)
class VaeConfigSource:
    """Where the base model's VAE config lives: a folder or repo id, and its subfolder."""

    location: str
    subfolder: str = "vae"
    local: bool = True


def looks_like_repo_id(text: str) -> bool:
    """``owner/name``: one slash, no file suffix, not an absolute or explicitly relative path."""
    parts = text.split("/")
    return (
        len(parts) == 2 and all(parts) and not text.startswith((".", "~", "/"))
        and not text.lower().endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin"))
    )


def load_vae(value: str, base_config: VaeConfigSource) -> Any:
    """Load the VAE named by the ``vae`` option, in float32 and eval mode."""
    path = Path(value).expanduser()
    if path.is_file():
        return _from_file(path, base_config)
    if path.is_dir():
        return _from_folder(path)
    if looks_like_repo_id(value):
        return _from_repo(value)
    raise TrainerError(f"VAE not found: {value}", hint="Check the path, or leave vae empty to use the model's own.",
                       option=OPTION)


def _from_file(path: Path, base_config: VaeConfigSource) -> Any:
    from diffusers import AutoencoderKL

    keys = read_keys_and_shapes(path)
    if any(key.startswith(_NETWORK_PREFIXES) or ".lora_down." in key for key in keys):
        raise TrainerError(f"{path} is a LoRA/LyCORIS file, not a VAE.", hint="Set vae to a VAE file.", option=OPTION)
    if not any(key.startswith(_VAE_PREFIXES) for key in keys):
        raise TrainerError(f"{path} is not a VAE (no encoder./decoder. weights).",
                           hint="Set vae to a VAE .safetensors file or a diffusers VAE folder.", option=OPTION)
    try:
        # diffusers converts the original layout itself and takes a diffusers-layout file as is.
        vae = AutoencoderKL.from_single_file(
            str(path), config=base_config.location, subfolder=base_config.subfolder,
            local_files_only=base_config.local, torch_dtype=None,
        )
    except Exception as problem:
        raise TrainerError(
            f"Could not load the VAE {path}: {type(problem).__name__}: {problem}",
            hint="The VAE must fit the base model's architecture (an SD1/SD2/SDXL VAE); the file may also be corrupt.",
            option=OPTION,
        ) from problem
    require_complete(vae, f"VAE {path}", OPTION)
    return vae.float().eval()


def _from_folder(path: Path) -> Any:
    if (path / "config.json").is_file():
        return _pretrained(str(path), "", local=True)
    if (path / "vae" / "config.json").is_file():
        return _pretrained(str(path), "vae", local=True)
    raise TrainerError(f"{path} holds no VAE (no config.json, no vae/config.json).",
                       hint="Point vae to a diffusers VAE folder or a VAE file.", option=OPTION)


def _from_repo(repo_id: str) -> Any:
    try:
        return _pretrained(repo_id, "", local=False)
    except TrainerError:
        # Pipeline repos keep the VAE in a subfolder.
        return _pretrained(repo_id, "vae", local=False)


def _pretrained(location: str, subfolder: str, local: bool) -> Any:
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(location, subfolder=subfolder or None, local_files_only=local)
    except Exception as problem:
        where = f"{location}/{subfolder}" if subfolder else location
        raise TrainerError(
            f"Could not load the VAE {where}: {type(problem).__name__}: {problem}",
            hint="Check the folder or repo id; a Hub repo needs a connection the first time.",
            option=OPTION,
        ) from problem
    return vae.float().eval()


def require_complete(module: Any, what: str, option: str) -> None:
    """Fail when some weights were never loaded (diffusers leaves them on the meta device)."""
    missing = [name for name, tensor in module.state_dict().items() if tensor.is_meta]
    if missing:
        raise TrainerError(
            f"{what} is incomplete: {len(missing)} weights are missing (e.g. {missing[0]}).",
            hint="The file is damaged or holds a different architecture; download it again or pick another.",
            option=option,
        )
