"""Resumable, verified HTTP downloads with the standard library's urllib.

Why urllib: ``requests`` is not installed and huggingface_hub's helpers are tied to the Hub; urllib
gives us Range requests, redirects and timeouts with nothing to install. Tokens go in
``add_unredirected_header`` so they are never replayed to the CDN a download link redirects to,
and every URL that reaches a log or an error message goes through :func:`safe_url` first.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm.auto import tqdm

from core.errors import CoreError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "lora-easy-training/1"
# Status codes worth retrying: the server or a proxy is struggling, not refusing.
_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}


@dataclass
class HttpOptions:
    """How to talk to the server: auth, retries, timeouts, progress."""

    token: str | None = field(default=None, repr=False)  # repr=False: never printed with the options
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 60.0
    progress: bool = True
    extra_headers: dict[str, str] = field(default_factory=dict)
    # Called as on_progress(bytes_so_far, total_or_None) after every chunk (a notebook progress bar).
    on_progress: Callable[[int, int | None], None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DownloadResult:
    """Where the file ended up, its size and SHA256, and whether it was already there."""

    path: Path
    size: int
    sha256: str
    skipped: bool


def safe_url(url: str) -> str:
    """The URL without its query and credentials: safe to log (query strings may carry tokens)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return f"{parsed.scheme}://{host}{parsed.path}"


def sha256_of(path: Path) -> str:
    """SHA256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def open_url(url: str, options: HttpOptions, method: str = "GET", start: int = 0):
    """Open ``url`` with auth (never replayed on redirect) and an optional Range from ``start``."""
    request = urllib.request.Request(url, method=method)
    request.add_header("User-Agent", _USER_AGENT)
    for key, value in options.extra_headers.items():
        request.add_header(key, value)
    if options.token:
        request.add_unredirected_header("Authorization", f"Bearer {options.token}")
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=options.timeout)


def http_error(error: urllib.error.HTTPError, url: str) -> CoreError:
    """A CoreError that says what the status means for the user (the URL shown without its query)."""
    where = safe_url(url)
    if error.code in (401, 403):
        return CoreError(f"The server refused the download of {where} (HTTP {error.code}).",
                         "This file needs a token: set HF_TOKEN / CIVITAI_TOKEN or pass --token, "
                         "and accept the model's licence on its page if it asks.")
    if error.code == 404:
        return CoreError(f"Nothing found at {where} (HTTP 404).", "Check the repo id, file name or version id.")
    return CoreError(f"The server answered HTTP {error.code} for {where}.", "Try again later.")


def filename_from_headers(headers, url: str) -> str:
    """The file name from Content-Disposition (RFC 6266, incl. ``filename*=UTF-8''``), else the URL path."""
    disposition = headers.get("Content-Disposition") or ""
    match = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", disposition)
    name = unquote(match.group(1).strip().strip('"')) if match else ""
    if not name:
        match = re.search(r'filename\s*=\s*"([^"]+)"', disposition) or re.search(r"filename\s*=\s*([^;]+)", disposition)
        name = match.group(1).strip() if match else ""
    if not name:
        name = unquote(urlparse(url).path.rstrip("/").rsplit("/", 1)[-1])
    # Only the last path component: a header must not steer the file outside --dest.
    name = Path(name.replace("\\", "/")).name
    if not name or name in (".", ".."):
        raise CoreError(f"Cannot tell the file name for {safe_url(url)}.", "Pass --name NAME.ext.")
    return name


def _check_space(folder: Path, needed: int, where: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise CoreError(f"Not enough disk space in {folder} for {where}: {needed / 1e9:.2f} GB needed, "
                        f"{free / 1e9:.2f} GB free.", "Free some space or choose another --dest.")


def _total_from(response, start: int) -> int | None:
    content_range = response.headers.get("Content-Range") or ""
    match = re.search(r"/(\d+)\s*$", content_range)
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return int(length) + start if length and length.isdigit() else None


def _verify_existing(dest: Path, sha256: str | None, size: int | None) -> DownloadResult | None:
    """A finished file that matches is skipped; one that does not is never overwritten."""
    if not dest.exists():
        return None
    if sha256:
        actual = sha256_of(dest)
        if actual == sha256.lower():
            return DownloadResult(dest, dest.stat().st_size, actual, skipped=True)
        raise CoreError(f"{dest} already exists and its SHA256 differs from the expected one.",
                        "Move or rename that file, or pass another --name; it is never overwritten.")
    if size is not None and dest.stat().st_size == size:
        return DownloadResult(dest, size, sha256_of(dest), skipped=True)
    raise CoreError(f"{dest} already exists and cannot be verified as the same file.",
                    "Move or rename that file, or pass another --name; it is never overwritten.")


def download_to(url: str, dest: Path, options: HttpOptions, sha256: str | None = None,
                size: int | None = None, approx_size: int | None = None) -> DownloadResult:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming, retrying and verifying.

    ``sha256`` (if known) must match before the rename; on a mismatch the ``.part`` stays for
    inspection and the error says so. ``size`` (if known) is used for the free-space check before
    the first byte and to recognise a finished file; ``approx_size`` (e.g. Civitai's rounded
    ``sizeKB``) only for the free-space check.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    existing = _verify_existing(dest, sha256, size)
    if existing:
        log.info("Already downloaded and verified: %s", dest)
        return existing
    part = dest.with_name(dest.name + ".part")
    expected = size if size is not None else approx_size
    if expected is not None:
        _check_space(dest.parent, max(0, expected - (part.stat().st_size if part.exists() else 0)), dest.name)
    total = size
    attempt = 0
    while True:
        start = part.stat().st_size if part.exists() else 0
        if total is not None and start == total:
            break  # a previous run got every byte; only verification is left
        try:
            total = _fetch(url, part, start, total, options, dest)
            if total is None or part.stat().st_size >= total:
                break
            raise ConnectionError("connection closed early")
        except urllib.error.HTTPError as error:
            if error.code == 416 and start > 0:
                break  # the range starts at the end: the .part is complete
            if error.code not in _TRANSIENT or attempt >= options.retries:
                raise http_error(error, url) from None
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException, socket.timeout, TimeoutError) as error:
            if attempt >= options.retries:
                raise CoreError(f"The download of {safe_url(url)} kept failing ({type(error).__name__}).",
                                f"Run the same command again: it resumes from {part.name}.") from None
        attempt += 1
        wait = options.backoff * (2 ** (attempt - 1))
        log.warning("Download of %s interrupted; retry %d/%d in %.1fs", safe_url(url), attempt, options.retries, wait)
        time.sleep(wait)
    return _finish(part, dest, sha256)


def _fetch(url: str, part: Path, start: int, total: int | None, options: HttpOptions, dest: Path) -> int | None:
    """One request: append to ``part`` from ``start``; return the total size if the server told it."""
    with open_url(url, options, start=start) as response:
        if start > 0 and response.status != 206:
            start = 0  # the server ignored Range: start over rather than append a second copy
        total = _total_from(response, start) or total
        if total is not None:
            _check_space(dest.parent, total - start, dest.name)
        mode = "ab" if start > 0 else "wb"
        with open(part, mode) as handle, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                             desc=dest.name, disable=not options.progress) as bar:
            done = start
            for block in iter(lambda: response.read(_CHUNK), b""):
                handle.write(block)
                bar.update(len(block))
                done += len(block)
                if options.on_progress is not None:
                    options.on_progress(done, total)
    return total


def _finish(part: Path, dest: Path, sha256: str | None) -> DownloadResult:
    actual = sha256_of(part)
    if sha256 and actual != sha256.lower():
        raise CoreError(f"The downloaded file's SHA256 {actual} does not match the expected {sha256.lower()}.",
                        f"Kept as {part}; delete it to download again, or check the --sha256 value.")
    os.replace(part, dest)  # atomic on one file system: dest is either absent or complete
    log.info("Saved %s", dest)
    return DownloadResult(dest, dest.stat().st_size, actual, skipped=False)


def probe_name(url: str, options: HttpOptions) -> tuple[str, int | None]:
    """Ask the server (HEAD, else a one-byte GET) for the file name and size without downloading."""
    for method in ("HEAD", "GET"):
        try:
            with open_url(url, options, method=method) as response:
                length = response.headers.get("Content-Length")
                name = filename_from_headers(response.headers, response.geturl())
                size = int(length) if method == "HEAD" and length and length.isdigit() else None
                return name, size
        except urllib.error.HTTPError as error:
            if method == "GET" or error.code not in (405, 501):
                raise http_error(error, url) from None
        except (urllib.error.URLError, OSError) as error:
            raise CoreError(f"Cannot reach {safe_url(url)} ({type(error).__name__}).",
                            "Check the URL and the network connection.") from None
    raise AssertionError("unreachable")
