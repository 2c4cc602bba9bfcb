"""Turn what the user pasted (a URL, a repo id, a bare number) into a typed download source.

Pure parsing: no network, so every form is testable offline.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

from core.errors import CoreError


@dataclass(frozen=True)
class HFSource:
    """A file in a Hugging Face repository."""

    repo_id: str
    filename: str
    revision: str = "main"


@dataclass(frozen=True)
class CivitaiSource:
    """A Civitai model version (``version_id``) or, from a page URL without one, a model (``model_id``)."""

    version_id: int | None = None
    model_id: int | None = None


@dataclass(frozen=True)
class URLSource:
    """Any other direct download URL."""

    url: str


Source = HFSource | CivitaiSource | URLSource

_HF_HOSTS = ("huggingface.co", "hf.co", "www.huggingface.co")
_CIVITAI_HOSTS = ("civitai.com", "www.civitai.com")
_REPO_FILE = re.compile(r"^[\w.\-]+/[\w.\-]+/.+\.\w+$")


def parse_source(text: str, hf_endpoint: str | None = None, civitai_base: str | None = None) -> Source:
    """Classify ``text`` as a Hugging Face file, a Civitai version/model, or a direct URL.

    Accepted: ``owner/repo/path/file.safetensors``; ``https://huggingface.co/o/r/blob|resolve/REV/path``;
    ``https://civitai.com/models/123?modelVersionId=456``; ``.../api/download/models/456``; ``456``;
    any other ``http(s)`` URL. Hosts of ``hf_endpoint`` / ``civitai_base`` count as Hub / Civitai too,
    so mirrors and loopback test servers work.
    """
    text = text.strip()
    if text.isdigit():
        return CivitaiSource(version_id=int(text))
    if not re.match(r"^https?://", text):
        if _REPO_FILE.match(text):
            owner, repo, filename = text.split("/", 2)
            return HFSource(f"{owner}/{repo}", filename)
        raise CoreError(
            f"Cannot tell what to download from {text!r}.",
            "Give a Hugging Face 'owner/repo/file.safetensors' or a /blob/ or /resolve/ URL, a Civitai page URL, "
            "an api/download/models/ID URL or a bare version id, or a direct http(s) URL.",
        )
    parsed = urlparse(text)
    host = (parsed.hostname or "").lower()
    netloc = parsed.netloc.lower()
    hf_hosts = set(_HF_HOSTS) | ({urlparse(hf_endpoint).netloc.lower()} if hf_endpoint else set())
    civ_hosts = set(_CIVITAI_HOSTS) | ({urlparse(civitai_base).netloc.lower()} if civitai_base else set())
    parts = [unquote(p) for p in parsed.path.split("/") if p]
    if (host in hf_hosts or netloc in hf_hosts) and len(parts) >= 5 and parts[2] in ("blob", "resolve"):
        return HFSource(f"{parts[0]}/{parts[1]}", "/".join(parts[4:]), parts[3])
    if host in civ_hosts or netloc in civ_hosts:
        query = parse_qs(parsed.query)
        if "modelVersionId" in query and query["modelVersionId"][0].isdigit():
            return CivitaiSource(version_id=int(query["modelVersionId"][0]))
        joined = "/".join(parts)
        match = re.search(r"api/download/models/(\d+)", joined) or re.search(r"api/v1/model-versions/(\d+)", joined)
        if match:
            return CivitaiSource(version_id=int(match.group(1)))
        match = re.match(r"models/(\d+)", joined)
        if match:
            return CivitaiSource(model_id=int(match.group(1)))
        raise CoreError(f"Cannot find a model or version id in the Civitai URL {text!r}.",
                        "Copy the URL of the model page, or its download link.")
    return URLSource(text)
