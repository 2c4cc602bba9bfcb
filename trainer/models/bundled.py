"""The architecture configs shipped with the trainer, made into a folder ``from_single_file`` can use offline.

diffusers' ``from_single_file`` needs a folder with the pipeline's JSON configs *and* tokenizer
files (without one it asks the Hub even with ``local_files_only=True``). We ship the configs of
the real SD1.5, SD2 (512 and 768-v) and SDXL base models in ``configs/<kind>/``; the tokenizer
vocabularies (about 1.5 MB each) are fetched once from the Hub repo named in the kind's
``tokenizer_sources.json`` and kept in a cache folder together with a copy of the configs.

Tests point :class:`BundledConfigs` at their own ``root`` (a copy of a tiny fixture's configs
plus a ``tokenizer_sources.json``) and give it a ``fetch_tokenizer`` that copies the fixture's
tokenizer: the same code then runs for real, offline, on a tiny model.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import TrainerError

CONFIGS_ROOT = Path(__file__).resolve().parent / "configs"
SOURCES_FILE = "tokenizer_sources.json"
# The files a slow CLIPTokenizer reads; special_tokens_map.json is optional in some repos.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
OPTIONAL_TOKENIZER_FILES = ("special_tokens_map.json",)
COMPLETE_MARKER = ".complete"

# (repo_id, subfolder, destination folder) -> None; fills the folder with tokenizer files.
TokenizerFetcher = Callable[[str, str, Path], None]


def default_cache_dir() -> Path:
    """Where prepared config folders live: ``$LORA_CACHE_DIR/model_configs`` or ``~/.cache/lora_easy_training``."""
    base = os.environ.get("LORA_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "lora_easy_training") / "model_configs"


def bundled_kind(family: str, v_parameterization: bool) -> str:
    """The bundled config folder for a family; SD2 has two (the weights cannot tell them apart)."""
    if family == "sd1":
        return "sd15"
    if family == "sd2":
        return "sd2_768_v" if v_parameterization else "sd2_512"
    if family == "sdxl":
        return "sdxl"
    raise TrainerError(f"No bundled configs for the model family {family!r}.", hint="Set model_config.")


def fetch_tokenizer_from_hub(repo_id: str, subfolder: str, dest: Path) -> None:
    """Download a CLIP tokenizer's files through huggingface_hub's cache and copy them into ``dest``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES + OPTIONAL_TOKENIZER_FILES:
        try:
            cached = hf_hub_download(repo_id, name, subfolder=subfolder or None)
        except EntryNotFoundError:
            if name in OPTIONAL_TOKENIZER_FILES:
                continue
            raise
        shutil.copyfile(cached, dest / name)


@dataclass(frozen=True)
class BundledConfigs:
    """Where the bundled configs come from, where the prepared copies go, and how tokenizers are fetched."""

    root: Path = CONFIGS_ROOT
    cache_dir: Path = field(default_factory=default_cache_dir)
    fetch_tokenizer: TokenizerFetcher = fetch_tokenizer_from_hub

    def prepare(self, kind: str) -> Path:
        """A folder with ``kind``'s configs and tokenizers, built on first use and reused after.

        The folder name carries a digest of the bundled files, so editing them builds a new one.
        """
        source = Path(self.root) / kind
        if not (source / "model_index.json").is_file():
            raise TrainerError(
                f"Bundled model configs {source} are missing.",
                hint="Reinstall the trainer, or set model_config to a diffusers folder of the same architecture.",
                option="model_config",
            )
        target = Path(self.cache_dir) / f"{kind}-{_digest(source)}"
        if (target / COMPLETE_MARKER).is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # Build beside the target and rename: a half-built folder (no network, Ctrl-C) is never used.
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{kind}-") as tmp:
            staged = Path(tmp) / "configs"
            shutil.copytree(source, staged, ignore=shutil.ignore_patterns(SOURCES_FILE))
            for component, where in _tokenizer_sources(source).items():
                self._fetch(where["repo_id"], where.get("subfolder", ""), staged / component)
            (staged / COMPLETE_MARKER).write_text(kind + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(staged, target)
        return target

    def _fetch(self, repo_id: str, subfolder: str, dest: Path) -> None:
        try:
            self.fetch_tokenizer(repo_id, subfolder, dest)
        except TrainerError:
            raise
        except Exception as problem:  # offline, HTTP and cache errors all end here
            where = f"{repo_id}/{subfolder}" if subfolder else repo_id
            raise TrainerError(
                f"Loading a single-file model without model_config needs the tokenizer files from the Hugging "
                f"Face repo {where}, which could not be fetched ({type(problem).__name__}: {problem}).",
                hint="Go online once (the files are cached afterwards), or set model_config to a local diffusers "
                     "folder of the same architecture (its configs and tokenizer files are enough).",
                option="model_config",
            ) from problem


def _tokenizer_sources(source: Path) -> dict[str, dict[str, str]]:
    path = source / SOURCES_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _digest(folder: Path) -> str:
    """A short hash of every file's relative name and bytes under ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
