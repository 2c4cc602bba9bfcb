"""Upload a LoRA (with sample images and a model card) or a dataset folder to the Hugging Face Hub.

The repo is created when missing, **private** unless asked otherwise (an existing repo keeps its
visibility). Files go up through huggingface_hub's commit API: a "preupload" request per batch
(which also pushes large files to LFS/Xet storage when the Hub asks for it, so the progress bar
moves per batch), then one commit with every file, so a failed upload never leaves half a repo.
The Hub asks for LFS for weights and images; huggingface_hub then sends them to Xet storage when
``hf_xet`` is installed (unless ``HF_HUB_DISABLE_XET`` is set), else through the git-LFS batch API,
and the commit names them by sha256. Text (README, captions) travels inside the commit.

The token comes from the argument, ``HF_TOKEN``, or huggingface_hub's saved login. It travels
only in the Authorization header: it is never logged, never written into the card, and every
error message is built here (and scrubbed) rather than passed through from the HTTP library.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import CoreError

log = logging.getLogger(__name__)

TOKEN_PAGE = "https://huggingface.co/settings/tokens"
DEFAULT_ENDPOINT = "https://huggingface.co"
# Dataset files never uploaded: rejects, pre-fix originals, caption undo history, caches, OS clutter.
SKIPPED_DATASET_DIRS = {"_rejected", "_originals", ".caption_history"}
SKIPPED_SUFFIXES = {".npz", ".part", ".tmp"}
# A preupload batch closes at this many files or bytes, whichever comes first.
BATCH_FILES, BATCH_BYTES = 50, 64 * 1024 * 1024

Progress = Callable[[int, int, str], None]  # (bytes done, bytes total, what is being sent)


@dataclass(frozen=True)
class UploadResult:
    """What was uploaded where."""

    repo_id: str
    repo_type: str  # "model" or "dataset"
    url: str
    private: bool  # what was asked for a new repo (an existing repo keeps its setting)
    files: list[str] = field(default_factory=list)  # paths inside the repo
    total_bytes: int = 0
    commit_url: str = ""


@dataclass(frozen=True)
class HubTarget:
    """Where to upload and with which credentials; ``token`` is never shown (repr=False)."""

    repo_id: str
    endpoint: str
    token: str = field(repr=False)
    private: bool = True


def resolve_target(repo_id: str, token: str | None = None, endpoint: str | None = None, private: bool = True,
                   environ: Mapping[str, str] | None = None) -> HubTarget:
    """Check the repo name and find the token and endpoint; raises :class:`CoreError` with a hint."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    env = os.environ if environ is None else environ
    name = (repo_id or "").strip()
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise CoreError(f"Repo name {name!r} is not valid on Hugging Face.",
                        "Use 'name' or 'user/name' with letters, digits, '-', '_' and '.', at most 96 characters, "
                        "not starting or ending with '-' or '.'.") from None
    chosen = (token or "").strip() or env.get("HF_TOKEN", "").strip() or (get_token() or "")
    if not chosen:
        raise CoreError("No Hugging Face token: uploading needs one with write permission.",
                        f"Create a write token at {TOKEN_PAGE}, then paste it into the token field or set HF_TOKEN.")
    return HubTarget(name, (endpoint or env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"), chosen, private)


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def hub_error(error: Exception, target: HubTarget, action: str) -> CoreError:
    """A :class:`CoreError` for a failed Hub call: what failed and what to do, never the token."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    where = f"{action} {target.repo_id}"
    if isinstance(error, OfflineModeIsEnabled):
        return CoreError(f"Cannot {where}: huggingface_hub is in offline mode.",
                         "Unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) and restart the kernel.")
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            return CoreError(f"Hugging Face refused to {where} (HTTP {status}): the token lacks write permission "
                             "or does not own this namespace.",
                             f"Create a token with write permission at {TOKEN_PAGE}, or upload to your own "
                             "user name.")
        if isinstance(error, RepositoryNotFoundError) or status == 404:
            return CoreError(f"Cannot {where}: the repo was not found (HTTP {status}).",
                             "Check the repo name and that the token's user may write to it.")
        server = _scrub(str(getattr(error, "server_message", "") or ""), target.token)[:300]
        return CoreError(f"Hugging Face answered HTTP {status} to {where}" + (f": {server}" if server else "."),
                         "Try again later; if it persists, check the repo name and the token.")
    # hf_xet reports a refused Xet token or storage call as a plain ConnectionError/RuntimeError.
    if isinstance(error, (ConnectionError, RuntimeError)) and "xet" in str(error).lower():
        reason = _scrub(str(error), target.token)[:300]
        return CoreError(f"Hugging Face's Xet storage did not take the files for {target.repo_id}: {reason}",
                         "Try again later. A Hub mirror (HF_ENDPOINT) may not offer Xet: set HF_HUB_DISABLE_XET=1 "
                         "before starting Jupyter to upload through plain LFS instead.")
    if isinstance(error, ValueError) and "README" in str(error):
        reason = _scrub(str(error), target.token)
        return CoreError(f"Hugging Face rejected the model card of {target.repo_id}: {reason}",
                         "Check the base model id and license you entered.")
    return CoreError(f"Cannot reach {target.endpoint} to {where} ({type(error).__name__}).",
                     "Check the network connection (and HF_ENDPOINT if you use a mirror), then upload again.")


@dataclass(frozen=True)
class OpenRepo:
    """A repo that exists on the Hub (created if it was missing), with the client to write to it."""

    api: Any = field(repr=False)
    repo_id: str  # owner/name as the Hub answered, even when a bare name was given
    repo_type: str
    url: str


def open_repo(target: HubTarget, repo_type: str) -> OpenRepo:
    """Create the repo (private when asked) or accept the existing one."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=target.endpoint, token=target.token)
    try:
        # A model repo is the Hub's default type: sent without "type", as huggingface_hub's own callers do.
        url = api.create_repo(target.repo_id, private=target.private, exist_ok=True,
                              repo_type=None if repo_type == "model" else repo_type)
    except Exception as error:  # noqa: BLE001 - every failure becomes a CoreError without the token
        raise hub_error(error, target, "create the repo") from None
    return OpenRepo(api, url.repo_id or target.repo_id, repo_type, str(url))


def send_files(repo: OpenRepo, target: HubTarget, files: Sequence[tuple[str, Path | bytes]], message: str,
               progress: Progress | None = None, show_bar: bool = True) -> UploadResult:
    """Upload ``(path in repo, local path or bytes)`` pairs in one commit, with a tqdm bar over the bytes.

    ``show_bar=False`` (a caller with its own progress, like the utilities panel) also hides
    huggingface_hub's per-file LFS/Xet bars, which a background thread would print into whichever
    notebook cell ran last.
    """
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.utils import disable_progress_bars
    from tqdm.auto import tqdm

    sizes = [len(data) if isinstance(data, bytes) else Path(data).stat().st_size for _, data in files]
    total = sum(sizes)
    log.info("Uploading %d files (%d bytes) to %s %s", len(files), total, repo.repo_type, repo.repo_id)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=data if isinstance(data, bytes) else str(data))
                  for name, data in files]
    done = 0
    # huggingface_hub's switch is process-wide; its context manager turns the bars back on afterwards.
    quiet = disable_progress_bars() if not show_bar else nullcontext()
    with quiet, tqdm(total=total, unit="B", unit_scale=True, desc=f"Upload to {repo.repo_id}",
                     disable=not show_bar) as bar:
        for batch in _batches(list(zip(operations, sizes))):
            try:
                repo.api.preupload_lfs_files(repo.repo_id, additions=[op for op, _ in batch],
                                             repo_type=repo.repo_type, free_memory=False)
            except Exception as error:  # noqa: BLE001
                raise hub_error(error, target, "upload files to") from None
            sent = sum(size for _, size in batch)
            done += sent
            bar.update(sent)
            if progress:
                progress(done, total, batch[-1][0].path_in_repo)
        try:
            commit = repo.api.create_commit(repo.repo_id, operations, commit_message=message,
                                            repo_type=repo.repo_type)
        except Exception as error:  # noqa: BLE001
            raise hub_error(error, target, "commit files to") from None
    if progress:
        progress(total, total, "done")
    return UploadResult(repo.repo_id, repo.repo_type, repo.url, target.private, [name for name, _ in files], total,
                        str(getattr(commit, "commit_url", "")))


def _batches(items: list[tuple[Any, int]]) -> list[list[tuple[Any, int]]]:
    batches: list[list[tuple[Any, int]]] = [[]]
    size = 0
    for item in items:
        if batches[-1] and (len(batches[-1]) >= BATCH_FILES or size + item[1] > BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(item)
        size += item[1]
    return [batch for batch in batches if batch]


def _existing_file(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CoreError(f"The {what} {path} does not exist.", "Check the path (pick the file again).")
    return path.resolve()


def image_names(images: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """``images/<name>`` inside the repo for each sample image; repeated names get ``_2``, ``_3``..."""
    seen: set[str] = set()
    named = []
    for image in images:
        path = _existing_file(image, "sample image")
        name, number = path.name, 2
        while name in seen:
            name = f"{path.stem}_{number}{path.suffix}"
            number += 1
        seen.add(name)
        named.append((f"images/{name}", path))
    return named


def upload_lora(lora_path: str | Path, repo_id: str, *, images: Sequence[str | Path] = (), token: str | None = None,
                private: bool = True, base_model: str | None = None, trigger_words: list[str] | None = None,
                title: str | None = None, license: str | None = None, description: str = "",
                endpoint: str | None = None, progress: Progress | None = None, show_bar: bool = True,
                environ: Mapping[str, str] | None = None) -> UploadResult:
    """Upload a LoRA file, sample images and a generated README.md model card to a model repo.

    ``base_model`` (a Hub id) and ``trigger_words`` override what the LoRA's metadata says.
    Raises :class:`CoreError` (with a hint, never the token) for a missing file, an invalid repo
    name, a missing or read-only token, and Hub or network failures.
    """
    from core.hub.model_card import card_facts, render_model_card

    lora = _existing_file(lora_path, "LoRA file")
    named_images = image_names(images)
    target = resolve_target(repo_id, token, endpoint, private, environ)
    # Read the LoRA before touching the Hub, so an unreadable file creates no empty repo.
    facts = card_facts(lora, target.repo_id, lora.name, [name for name, _ in named_images], base_model=base_model,
                       trigger_words=trigger_words, title=title, license=license, description=description)
    repo = open_repo(target, "model")
    # The card's diffusers snippet names the repo as created (a bare name gets its owner from the Hub).
    card = _scrub(render_model_card(replace(facts, repo_id=repo.repo_id)), target.token)
    files: list[tuple[str, Path | bytes]] = [(lora.name, lora), *named_images, ("README.md", card.encode("utf-8"))]
    return send_files(repo, target, files, f"Upload {lora.name} (LoRA Easy Training)", progress, show_bar)


def dataset_files(folder: Path) -> list[tuple[str, Path]]:
    """Files of a dataset folder to upload, skipping rejects, originals, caption history and caches."""
    chosen = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or any(part in SKIPPED_DATASET_DIRS or part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in SKIPPED_SUFFIXES:
            continue
        chosen.append((relative.as_posix(), path))
    return chosen


def dataset_card(folder: Path, files: list[tuple[str, Path]]) -> str:
    """A short README.md for a dataset repo: images and captions per sub-folder."""
    from trainer.data.blueprint import IMAGE_EXTENSIONS

    counts: dict[str, list[int]] = {}
    for name, path in files:
        top = name.split("/")[0] if "/" in name else "."
        entry = counts.setdefault(top, [0, 0])
        entry[0] += path.suffix.lower() in IMAGE_EXTENSIONS
        entry[1] += path.suffix.lower() == ".txt"
    lines = ["---", "tags:", "- lora-training", "- image", "---", "", f"# {folder.name}", "",
             "Images with their captions, prepared with LoRA Easy Training. Sub-folders named `N_name` are "
             "repeated N times per epoch by kohya-style trainers.", "",
             "| folder | images | captions |", "|---|---|---|"]
    lines += [f"| {top} | {n_img} | {n_txt} |" for top, (n_img, n_txt) in sorted(counts.items())]
    return "\n".join(lines) + "\n"


def upload_dataset(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool = True,
                   endpoint: str | None = None, progress: Progress | None = None, show_bar: bool = True,
                   environ: Mapping[str, str] | None = None) -> UploadResult:
    """Upload a dataset folder (images, captions, sub-folders) to a dataset repo, private by default.

    ``_rejected``, ``_originals`` and ``.caption_history`` folders, hidden files and latent caches
    stay at home. A README.md is generated unless the folder has its own.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CoreError(f"The dataset folder {root} does not exist.", "Pick the dataset folder again.")
    files: list[tuple[str, Path | bytes]] = list(dataset_files(root.resolve()))
    if not files:
        raise CoreError(f"The dataset folder {root} has no files to upload.", "Import images first.")
    target = resolve_target(repo_id, token, endpoint, private, environ)
    if not any(name == "README.md" for name, _ in files):
        files.append(("README.md", dataset_card(root, [(n, p) for n, p in files if isinstance(p, Path)]).encode()))
    return send_files(open_repo(target, "dataset"), target, files, f"Upload dataset {root.name} (LoRA Easy Training)",
                      progress, show_bar)
