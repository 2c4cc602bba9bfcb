"""Base-model downloads: Hugging Face, Civitai or any direct URL, resumable and verified.

Command line::

    python -m core.models download SOURCE --dest DIR [--name NAME] [--sha256 HEX] [--file NAME]
    python -m core.models presets

SOURCE is a preset key (``core/model_presets.toml``), ``owner/repo/file.safetensors``, a Hub
``/blob/`` or ``/resolve/`` URL, a Civitai page / ``?modelVersionId=`` / ``api/download/models/ID``
URL, a bare Civitai version id, or any direct URL. Tokens come from ``HF_TOKEN`` /
``CIVITAI_TOKEN`` or ``--token-file`` (never from the command line, where they would land in the
shell history and the process list).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.downloads.civitai import DEFAULT_API_BASE, latest_version_id, resolve_version
from core.downloads.http import DownloadResult, HttpOptions, download_to, probe_name, sha256_of
from core.downloads.sources import CivitaiSource, HFSource, URLSource, parse_source
from core.downloads.tokens import resolve_token
from core.errors import CoreError, cli_error

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, "int | None"], None]
PRESETS_FILE = Path(__file__).with_name("model_presets.toml")


@dataclass(frozen=True)
class ModelPreset:
    """One row of ``model_presets.toml``: what to fetch and how the trainer must treat it."""

    key: str
    label: str
    source: str
    base: str
    v_prediction: bool
    kind: str


def load_presets(path: Path = PRESETS_FILE) -> dict[str, ModelPreset]:
    """Read the presets file; every table becomes a :class:`ModelPreset` keyed by its name."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise CoreError(f"Cannot read the model presets {path}: {error}", "Restore the file from the repository.") from None
    presets = {}
    for key, row in data.items():
        try:
            presets[key] = ModelPreset(key, str(row["label"]), str(row["source"]), str(row["base"]),
                                       bool(row["v_prediction"]), str(row.get("kind", "checkpoint")))
        except (KeyError, TypeError):
            raise CoreError(f"Preset [{key}] in {path} lacks label, source, base or v_prediction.",
                            "Add the missing field.") from None
    return presets


def _with_extension(name: str | None, real_name: str) -> str:
    """The user's chosen name, keeping the real file's extension when the chosen one has none."""
    if not name:
        return real_name
    name = Path(name).name
    suffix = Path(real_name).suffix
    return name if Path(name).suffix or not suffix else name + suffix


def download_model(source: str, dest: Path, name: str | None = None, sha256: str | None = None,
                   file_name: str | None = None, hf_token: str | None = None, civitai_token: str | None = None,
                   token_file: Path | None = None, environ: Mapping[str, str] | None = None,
                   progress: bool = True, retries: int = 5, backoff: float = 1.0,
                   timeout: float = 60.0, on_progress: ProgressCallback | None = None) -> DownloadResult:
    """Download ``source`` into folder ``dest`` and return where it landed.

    ``name`` renames the saved file (its extension is kept); ``sha256`` is checked in addition
    to the hash Civitai reports; ``file_name`` picks a non-primary file of a Civitai version.
    ``on_progress(bytes_so_far, total_or_None)`` is called as bytes arrive (a notebook progress
    bar; ``progress`` switches the console's tqdm bar) and once more with the full size at the end.
    Raises :class:`CoreError` with a hint on every failure the user can act on.
    """
    result = _download_model(source, dest, name, sha256, file_name, hf_token, civitai_token, token_file, environ,
                             progress, retries, backoff, timeout, on_progress)
    if on_progress is not None:
        on_progress(result.size, result.size)  # also for a file that was already there: the bar ends full
    return result


def _download_model(source: str, dest: Path, name: str | None, sha256: str | None, file_name: str | None,
                    hf_token: str | None, civitai_token: str | None, token_file: Path | None,
                    environ: Mapping[str, str] | None, progress: bool, retries: int, backoff: float,
                    timeout: float, on_progress: ProgressCallback | None) -> DownloadResult:
    env = os.environ if environ is None else environ
    presets = load_presets()
    if source in presets:
        source = presets[source].source
    civitai_base = env.get("CIVITAI_API_BASE") or DEFAULT_API_BASE
    hf_endpoint = env.get("HF_ENDPOINT") or None
    parsed = parse_source(source, hf_endpoint=hf_endpoint, civitai_base=civitai_base)
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)

    def options(token: str | None) -> HttpOptions:
        return HttpOptions(token=token, retries=retries, backoff=backoff, timeout=timeout, progress=progress,
                           on_progress=on_progress)

    if isinstance(parsed, HFSource):
        token = resolve_token("huggingface", hf_token, env, token_file)
        return _download_hf(parsed, dest, name, sha256, token, hf_endpoint, _callback_bar(on_progress, progress))
    if isinstance(parsed, CivitaiSource):
        opts = options(resolve_token("civitai", civitai_token, env, token_file))
        version = parsed.version_id or latest_version_id(parsed.model_id or 0, civitai_base, opts)
        info = resolve_version(version, civitai_base, opts, file_name)
        if sha256 and info.sha256 and sha256.lower() != info.sha256:
            raise CoreError(f"--sha256 {sha256} differs from the SHA256 Civitai reports for {info.name} ({info.sha256}).",
                            "Drop --sha256 or check which file you meant.")
        log.info("Civitai version %s: %s", version, info.name)
        return download_to(info.download_url, dest / _with_extension(name, info.name), opts,
                           sha256=sha256 or info.sha256, approx_size=info.size)
    assert isinstance(parsed, URLSource)
    # A token is for its own service: never send it to an arbitrary host.
    opts = options(None)
    real_name, size = probe_name(parsed.url, opts)
    return download_to(parsed.url, dest / _with_extension(name, real_name), opts, sha256=sha256, size=size)


def _callback_bar(on_progress: ProgressCallback | None, show: bool) -> type | None:
    """A tqdm class for huggingface_hub that also feeds ``on_progress`` (None: the Hub's own bar)."""
    if on_progress is None and show:
        return None
    from tqdm.auto import tqdm

    class CallbackBar(tqdm):
        def __init__(self, *args, **kwargs):
            if not show:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            # Counted here: a disabled tqdm stops counting, and the callback must still move.
            self._bytes = int(kwargs.get("initial") or 0)

        def update(self, n=1):
            self._bytes += int(n or 0)
            if on_progress is not None:
                on_progress(self._bytes, int(self.total) if self.total else None)
            return super().update(n)

    return CallbackBar


def _download_hf(source: HFSource, dest: Path, name: str | None, sha256: str | None, token: str | None,
                 endpoint: str | None, bar_class: type | None = None) -> DownloadResult:
    """Through huggingface_hub: it resumes, verifies the Hub's own hash, and honours HF_ENDPOINT."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError)

    final = dest / _with_extension(name, Path(source.filename).name)
    if name and final.exists():
        if sha256 and sha256_of(final) != sha256.lower():
            raise CoreError(f"{final} already exists with another SHA256.", "Move it away or pick another --name.")
        return DownloadResult(final, final.stat().st_size, sha256_of(final), skipped=True)
    where = f"{source.repo_id}/{source.filename}"
    try:
        path = Path(hf_hub_download(source.repo_id, source.filename, revision=source.revision, local_dir=dest,
                                    token=token or False, endpoint=endpoint, tqdm_class=bar_class))
    except LocalEntryNotFoundError:
        # The Hub was unreachable and nothing is cached: a network problem, not a wrong name.
        raise CoreError(f"Cannot reach the Hugging Face Hub for {where}.",
                        "Check the network connection or HF_ENDPOINT (and that HF_HUB_OFFLINE is not set), "
                        "then run the command again.") from None
    except GatedRepoError:
        raise CoreError(f"{source.repo_id} is gated on Hugging Face.",
                        "Accept its licence on the model page, then set HF_TOKEN.") from None
    except RepositoryNotFoundError:
        raise CoreError(f"Hugging Face repo {source.repo_id} not found (or private).",
                        "Check the repo id; for a private repo set HF_TOKEN.") from None
    except EntryNotFoundError:
        raise CoreError(f"No file {source.filename} in {source.repo_id}.", "Check the file name on the repo page.") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", "?")
        raise CoreError(f"Hugging Face refused {where} (HTTP {status}).", "Check HF_TOKEN and the repo id.") from None
    except (OSError, ValueError) as error:
        raise CoreError(f"Cannot download {where} from Hugging Face ({type(error).__name__}).",
                        "Check the network or HF_ENDPOINT; the same command resumes.") from None
    actual = sha256_of(path)
    if sha256 and actual != sha256.lower():
        part = path.with_name(path.name + ".part")
        os.replace(path, part)
        raise CoreError(f"{where} has SHA256 {actual}, not the expected {sha256.lower()}.", f"Kept as {part}.")
    if not name:
        final = path  # keep the Hub's layout so its own "already complete" check keeps working
    if path != final:
        if final.exists():
            raise CoreError(f"{final} already exists.", "Move it away or pick another --name.")
        os.replace(path, final)
    return DownloadResult(final, final.stat().st_size, actual, skipped=False)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: errors print as one message with a hint, no traceback unless --debug."""
    parser = argparse.ArgumentParser(prog="python -m core.models", description="Download base models.")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="download a model file")
    get.add_argument("source")
    get.add_argument("--dest", required=True, type=Path)
    get.add_argument("--name")
    get.add_argument("--sha256")
    get.add_argument("--file", dest="file_name", help="a non-primary file of a Civitai version")
    get.add_argument("--token-file", type=Path, help="JSON token file (see core.downloads.tokens)")
    get.add_argument("--retries", type=int, default=5)
    get.add_argument("--no-progress", action="store_true")
    get.add_argument("--debug", action="store_true")
    commands.add_parser("presets", help="list the model presets")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "presets":
            for preset in load_presets().values():
                vpred = " v-pred" if preset.v_prediction else ""
                print(f"{preset.key:20} {preset.base:5}{vpred:7} {preset.kind:10} {preset.label}")
            return 0
        result = download_model(args.source, args.dest, name=args.name, sha256=args.sha256,
                                file_name=args.file_name, token_file=args.token_file,
                                progress=not args.no_progress, retries=args.retries)
    except CoreError as error:
        return cli_error(error, args.debug)
    print(f"{'Already present' if result.skipped else 'Saved'}: {result.path} ({result.size} bytes, sha256 {result.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
