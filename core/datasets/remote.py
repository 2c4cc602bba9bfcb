"""Imports from the network: a zip at a URL, and a Hugging Face dataset repo.

Downloads land in a hidden staging file or folder inside the datasets folder (same disk, so no
surprise "disk full" on a small system disk), are then imported with the zip or folder importer
and their checks, and the staging copy is removed. Tokens are passed to the library and never
printed: URLs in messages are shown without their query string.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core.datasets.importers import (
    DEFAULT_MAX_UNPACKED_BYTES, ImportResult, import_folder, import_zip,
)
from core.errors import CoreError
from trainer.data.blueprint import IMAGE_EXTENSIONS

DEFAULT_MAX_DOWNLOAD_BYTES = 20 * 1024**3
_CHUNK = 1024 * 1024
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_HF_URL = re.compile(r"^(?:https?://(?:www\.)?huggingface\.co/|hf://)datasets/([^/\s]+/[^/\s?#]+)(?:/tree/([^/\s?#]+)(?:/([^?#]*))?)?/?(?:[?#].*)?$")
# Caption and image files only: dataset repos often also hold parquet shards of gigabytes.
_HF_PATTERNS = [f"*{ext}" for ext in IMAGE_EXTENSIONS] + [f"*{ext.upper()}" for ext in IMAGE_EXTENSIONS] + ["*.txt", "*.caption"]


@dataclass(frozen=True)
class HfDatasetRef:
    """A Hugging Face dataset repo, optionally a revision and a folder inside it."""

    repo_id: str
    revision: str | None = None
    subfolder: str | None = None


def redact_url(url: str) -> str:
    """``url`` without query string, fragment or user:password, safe to show in messages and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_hf_dataset_url(url: str) -> HfDatasetRef | None:
    """The dataset repo of ``https://huggingface.co/datasets/owner/name[/tree/rev[/folder]]`` or ``hf://datasets/...``."""
    match = _HF_URL.match(url.strip())
    if not match:
        return None
    subfolder = (match.group(3) or "").strip("/") or None
    return HfDatasetRef(match.group(1), match.group(2), subfolder)


def download_file(url: str, dest: Path, *, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES, timeout: float = 60.0) -> int:
    """Stream ``url`` (http or https) into ``dest``; return the byte count. Stops past ``max_bytes``."""
    shown = redact_url(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CoreError(f"Only http:// and https:// links can be downloaded, not {shown!r}.",
                        hint="Paste the direct download link of the zip.")
    request = urllib.request.Request(url, headers={"User-Agent": "lora-easy-training-dataset-import"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "xb") as target:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise CoreError(f"{shown} is {int(length):,} bytes, over the {max_bytes:,}-byte download limit.",
                                hint="Check the link; raise the limit if the dataset really is that large.")
            total = 0
            while chunk := response.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise CoreError(f"{shown} sent more than the {max_bytes:,}-byte download limit; stopped.",
                                    hint="Check the link; raise the limit if the dataset really is that large.")
                target.write(chunk)
            return total
    except urllib.error.HTTPError as problem:
        hint = ("The link needs a login or has expired: use a public or freshly made link."
                if problem.code in (401, 403) else "Check the link in a browser.")
        raise CoreError(f"Download of {shown} failed: HTTP {problem.code} {problem.reason}.", hint=hint) from problem
    except (urllib.error.URLError, TimeoutError, ConnectionError) as problem:
        reason = getattr(problem, "reason", problem)
        raise CoreError(f"Cannot reach {shown}: {reason}.",
                        hint="Check the address and that this server has internet access.") from problem


def import_url(
    url: str,
    datasets_dir: Path,
    project: str,
    repeats: int = 10,
    concept: str = "concept",
    *,
    token: str | None = None,
    on_conflict: str = "error",
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    timeout: float = 60.0,
) -> ImportResult:
    """Import from a link: a Hugging Face dataset page goes to :func:`import_hf_dataset`, anything else
    must be a direct link to a zip file, downloaded and passed to :func:`import_zip`."""
    reference = parse_hf_dataset_url(url)
    if reference is not None:
        return import_hf_dataset(reference.repo_id, datasets_dir, project, repeats, concept, revision=reference.revision,
                                 subfolder=reference.subfolder, token=token, on_conflict=on_conflict)
    datasets_dir = Path(datasets_dir)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=datasets_dir))
    try:
        archive = staging / "download.zip"
        download_file(url, archive, max_bytes=max_bytes, timeout=timeout)
        with open(archive, "rb") as stream:
            magic = stream.read(4)
        if magic not in _ZIP_MAGIC:
            raise CoreError(f"{redact_url(url)} is not a zip file (it starts with {magic!r}).",
                            hint="Use the direct download link of a .zip (not the page that shows it).")
        return import_zip(archive, datasets_dir, project, repeats, concept, on_conflict=on_conflict,
                          max_unpacked_bytes=max_unpacked_bytes)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our download, not the user's files


def _hub_error(repo_id: str, problem: Exception) -> CoreError:
    """A CoreError for a huggingface_hub failure; never includes the token."""
    name = type(problem).__name__
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return CoreError(f"The Hugging Face dataset {repo_id} was not found, or it is private or gated.",
                         hint="Check the name (owner/name); for a private or gated dataset give a token with read access.")
    if name == "RevisionNotFoundError":
        return CoreError(f"The Hugging Face dataset {repo_id} has no such branch, tag or commit.", hint="Check the revision.")
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return CoreError(f"Cannot download the Hugging Face dataset {repo_id}: the Hub is unreachable or offline mode "
                         "is on (HF_HUB_OFFLINE=1).",
                         hint="Check this server's internet access and unset HF_HUB_OFFLINE, or import a zip instead.")
    first_line = (str(problem).splitlines() or [name])[0][:200]
    return CoreError(f"Download of the Hugging Face dataset {repo_id} failed: {first_line}",
                     hint="Check the dataset name and your internet access, then try again.")


def import_hf_dataset(
    repo_id: str,
    datasets_dir: Path,
    project: str,
    repeats: int = 10,
    concept: str = "concept",
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | None = None,
    on_conflict: str = "error",
    endpoint: str | None = None,
) -> ImportResult:
    """Download the images and captions of a Hugging Face dataset repo and import them like a folder.

    Uses ``huggingface_hub.snapshot_download(repo_type="dataset")``; only image and caption files
    are fetched. ``subfolder`` limits it to one folder of the repo.
    """
    from huggingface_hub import snapshot_download  # imported here: opening the notebook stays fast

    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise CoreError(f"{repo_id!r} is not a Hugging Face dataset name.", hint="Use owner/name, e.g. myname/mychar-images.")
    datasets_dir = Path(datasets_dir)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".hf-", dir=datasets_dir))
    patterns = [f"{subfolder}/**/{p}" for p in _HF_PATTERNS] + [f"{subfolder}/{p}" for p in _HF_PATTERNS] if subfolder else _HF_PATTERNS
    try:
        try:
            snapshot_download(repo_id, repo_type="dataset", revision=revision, local_dir=staging, token=token,
                              allow_patterns=patterns, endpoint=endpoint)
        except Exception as problem:  # noqa: BLE001 - the Hub raises many types; each becomes one clear message
            raise _hub_error(repo_id, problem) from None  # "from None": the chained error may echo request headers
        source = staging / subfolder if subfolder else staging
        if not source.is_dir() or not any(p.is_file() for p in source.rglob("*") if ".cache" not in p.parts):
            raise CoreError(f"The Hugging Face dataset {repo_id} has no image or caption files"
                            + (f" in {subfolder}" if subfolder else "") + ".",
                            hint="Datasets stored as parquet shards are not supported; use one with image files.")
        return import_folder(source, datasets_dir, project, repeats, concept, on_conflict=on_conflict)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our staging copy
