"""Civitai's REST API: a version id (or model id) to the file to download, its real name and SHA256."""
from __future__ import annotations

import json
import urllib.error
from dataclasses import dataclass

from core.downloads.http import HttpOptions, http_error, open_url, safe_url
from core.errors import CoreError

DEFAULT_API_BASE = "https://civitai.com"


@dataclass(frozen=True)
class CivitaiFile:
    """One file of a model version, as the API describes it."""

    version_id: int
    name: str
    download_url: str
    sha256: str | None
    size: int | None
    base_model: str


def _get_json(url: str, options: HttpOptions) -> dict:
    try:
        with open_url(url, options) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        raise http_error(error, url) from None
    except (urllib.error.URLError, OSError) as error:
        raise CoreError(f"Cannot reach the Civitai API at {safe_url(url)} ({type(error).__name__}).",
                        "Check the network, or CIVITAI_API_BASE if you use a mirror.") from None
    except ValueError:
        raise CoreError(f"The Civitai API at {safe_url(url)} did not answer with JSON.",
                        "Check CIVITAI_API_BASE; try again later.") from None


def latest_version_id(model_id: int, api_base: str, options: HttpOptions) -> int:
    """The newest version of a model (the API lists ``modelVersions`` newest first)."""
    data = _get_json(f"{api_base.rstrip('/')}/api/v1/models/{model_id}", options)
    versions = data.get("modelVersions") or []
    if not versions:
        raise CoreError(f"Civitai model {model_id} has no versions to download.",
                        "Open the model page and copy the URL of the version you want.")
    return int(versions[0]["id"])


def resolve_version(version_id: int, api_base: str, options: HttpOptions, file_name: str | None = None) -> CivitaiFile:
    """Fetch ``/api/v1/model-versions/ID`` and pick the primary file, or the one named ``file_name``."""
    data = _get_json(f"{api_base.rstrip('/')}/api/v1/model-versions/{version_id}", options)
    files = data.get("files") or []
    if not files:
        raise CoreError(f"Civitai version {version_id} lists no files.", "Pick another version on the model page.")
    if file_name:
        chosen = [f for f in files if f.get("name") == file_name]
        if not chosen:
            names = ", ".join(str(f.get("name")) for f in files)
            raise CoreError(f"Civitai version {version_id} has no file named {file_name!r}.", f"Choose one of: {names}.")
        picked = chosen[0]
    else:
        # The primary file is the model itself; others are often pruned/fp32 variants or training data.
        picked = next((f for f in files if f.get("primary")), files[0])
    hashes = {key.upper(): value for key, value in (picked.get("hashes") or {}).items()}
    size_kb = picked.get("sizeKB")
    return CivitaiFile(
        version_id=version_id,
        name=str(picked["name"]),
        download_url=str(picked.get("downloadUrl") or f"{api_base.rstrip('/')}/api/download/models/{version_id}"),
        sha256=str(hashes["SHA256"]).lower() if hashes.get("SHA256") else None,
        # sizeKB is rounded: good for the free-space check, not for recognising a finished file.
        size=int(float(size_kb) * 1024) if size_kb else None,
        base_model=str(data.get("baseModel") or ""),
    )
