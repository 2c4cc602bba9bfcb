"""Bring images into ``datasets/<project>/<repeats>_<concept>``: from a zip or a folder on the server.

Both keep captions and sub-folders. When the source already has the trainer's layout (``N_name``
folders at its top, possibly inside one wrapping folder), those folders go into the project as
they are and the repeats/concept given are not used. A single wrapping folder (``myset/...``, what
zipping a folder makes) is dropped, so the images land directly in the subset folder where the
trainer looks.

Nothing existing is overwritten: a name clash stops the import before any file is written (or,
with ``on_conflict="skip"``, keeps the file already there). Zips are checked entry by entry
before anything is extracted; extraction goes to a hidden staging folder that is moved into place
only when every entry arrived, so a refused or broken archive leaves nothing half-imported.
"""
from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.datasets.files import is_image_file, require_folder, walk_files
from core.datasets.naming import parse_subset_folder, project_name, subset_folder_name
from core.errors import CoreError

DEFAULT_MAX_UNPACKED_BYTES = 20 * 1024**3  # 20 GiB: far above any LoRA dataset, far below a zip bomb
DEFAULT_MAX_ENTRIES = 200_000
CAPTION_EXTENSIONS = (".txt", ".caption")
ON_CONFLICT = ("error", "skip")
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1024 * 1024
_LISTED = 5


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote. ``target`` is the subset folder, or the project folder for a full layout."""

    target: Path
    files: tuple[Path, ...]  # every file written, absolute
    images: int
    captions: int
    skipped: tuple[str, ...]  # source entries left out on purpose (macOS junk, files already there)
    warnings: tuple[str, ...]

    def summary(self) -> str:
        """One line for the CLI and the panel."""
        return (f"Imported {self.images} image(s) and {self.captions} caption(s) into {self.target}"
                + (f"; skipped {len(self.skipped)}" if self.skipped else "") + ".")


def project_folder(datasets_dir: Path, project: str) -> Path:
    """``datasets/<project>`` with the project name made safe (the rule the training form uses too)."""
    return Path(datasets_dir) / project_name(project)


def subset_folder(datasets_dir: Path, project: str, repeats: int, concept: str) -> Path:
    """``datasets/<project>/<repeats>_<concept>``, names sanitised."""
    return project_folder(datasets_dir, project) / subset_folder_name(repeats, concept)


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def _is_junk(parts: tuple[str, ...]) -> bool:
    """macOS resource forks and thumbnail caches that zips made on Macs and Windows carry along."""
    return parts[0] == "__MACOSX" or parts[-1].lower() in _JUNK_NAMES or parts[-1].startswith("._")


def _layout(relatives: list[PurePosixPath]) -> tuple[list[PurePosixPath], bool]:
    """Drop one folder that wraps everything; tell whether the top level holds ``N_name`` folders."""
    if relatives and all(len(r.parts) > 1 for r in relatives) and len({r.parts[0] for r in relatives}) == 1:
        relatives = [PurePosixPath(*r.parts[1:]) for r in relatives]
    has_subsets = any(len(r.parts) > 1 and parse_subset_folder(r.parts[0]) for r in relatives)
    return relatives, has_subsets


def _destination(datasets_dir: Path, project: str, repeats: int, concept: str, has_subsets: bool) -> Path:
    return project_folder(datasets_dir, project) if has_subsets else subset_folder(datasets_dir, project, repeats, concept)


def _layout_warnings(target: Path, relatives: list[PurePosixPath], has_subsets: bool) -> list[str]:
    warnings = []
    if has_subsets:
        loose = [str(r) for r in relatives if is_image_file(r) and (len(r.parts) == 1 or not parse_subset_folder(r.parts[0]))]
        if loose:
            warnings.append(f"{len(loose)} image(s) are outside any N_name folder and will not train: {_names(loose)}.")
        warnings.append(f"The source already has N_name folders; they were imported into {target} as they are "
                        "(the repeats and concept given were not used).")
    else:
        nested = [str(r) for r in relatives if is_image_file(r) and len(r.parts) > 1]
        if nested:
            warnings.append(f"{len(nested)} image(s) are in sub-folders of {target}, which the trainer does not "
                            f"read: {_names(nested)}. Move them up or into their own N_name folder.")
    return warnings


def _conflicts(target: Path, relatives: list[PurePosixPath], on_conflict: str) -> tuple[set[PurePosixPath], list[str]]:
    if on_conflict not in ON_CONFLICT:
        raise CoreError(f"on_conflict must be one of {ON_CONFLICT}, not {on_conflict!r}.", hint="Use 'error' or 'skip'.")
    taken = [r for r in relatives if (target / r).exists() or (target / r).is_symlink()]
    if taken and on_conflict == "error":
        raise CoreError(
            f"{len(taken)} file(s) already exist in {target}: {_names([str(r) for r in taken])}. Nothing was imported.",
            hint="Import into another concept or project name, or choose 'skip' to keep the files already there.",
        )
    return set(taken), [f"{r} (already in {target})" for r in taken]


def _result(target: Path, written: list[Path], skipped: list[str], warnings: list[str]) -> ImportResult:
    images = sum(1 for path in written if is_image_file(path))
    captions = sum(1 for path in written if path.suffix.lower() in CAPTION_EXTENSIONS)
    return ImportResult(target, tuple(written), images, captions, tuple(skipped), tuple(warnings))


# --- zip ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    relative: PurePosixPath


def _entry_problem(info: zipfile.ZipInfo) -> str:
    """Why an entry must not be extracted ("" when it is fine)."""
    name = info.filename
    unix_mode = info.external_attr >> 16
    kind = stat.S_IFMT(unix_mode)
    if kind == stat.S_IFLNK:
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is a device, pipe or socket, not a file"
    if info.flag_bits & 0x1:
        return "is encrypted"
    if "\x00" in name:
        return "has a NUL character in its name"
    normal = name.replace("\\", "/")  # some Windows tools write backslashes; they are separators there
    if normal.startswith("/") or _DRIVE.match(normal):
        return "has an absolute path"
    if ".." in normal.split("/"):
        return "points outside the target folder ('..')"
    return ""


def _zip_entries(archive: zipfile.ZipFile, source: Path, max_bytes: int, max_entries: int) -> tuple[list[_Entry], list[str]]:
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise CoreError(f"{source} has {len(infos):,} entries, more than the {max_entries:,} allowed.",
                        hint="Split the archive, or raise the limit if you really have that many images.")
    refused = [f"{info.filename!r} {problem}" for info in infos if (problem := _entry_problem(info))]
    if refused:
        raise CoreError(
            f"Refused {source}: {len(refused)} unsafe entr{'y' if len(refused) == 1 else 'ies'}: {_names(refused)}. "
            "Nothing was extracted.",
            hint="Re-create the zip from the image folder itself (no links, no absolute or '..' paths, no password).",
        )
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise CoreError(
            f"{source} would unpack to {total:,} bytes, over the {max_bytes:,}-byte limit (zip-bomb guard). "
            "Nothing was extracted.",
            hint="Check the archive is what you expect; raise max_unpacked_bytes if it really is a dataset that large.",
        )
    entries, skipped = [], []
    for info in infos:
        parts = tuple(part for part in info.filename.replace("\\", "/").split("/") if part not in ("", "."))
        if info.is_dir() or not parts:
            continue
        if _is_junk(parts):
            skipped.append(info.filename)
            continue
        entries.append(_Entry(info, PurePosixPath(*parts)))
    seen: set[PurePosixPath] = set()
    twice = sorted({str(e.relative) for e in entries if e.relative in seen or seen.add(e.relative)})
    if twice:
        raise CoreError(f"Refused {source}: {len(twice)} name(s) appear more than once: {_names(twice)}. "
                        "Nothing was extracted.", hint="Re-create the zip so every file has its own name.")
    return entries, skipped


def _extract_one(archive: zipfile.ZipFile, entry: _Entry, dest: Path, budget: list[int]) -> None:
    """Stream one entry, counting real bytes: a lying header cannot exceed the size cap."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    declared = entry.info.file_size
    written = 0
    with archive.open(entry.info) as source, open(dest, "xb") as target:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > declared or budget[0] < 0:
                raise CoreError(f"Entry {entry.info.filename!r} unpacks to more than its header says (zip-bomb guard). "
                                "Nothing was imported.", hint="The archive is damaged or hostile; do not use it.")
            target.write(chunk)


def import_zip(
    zip_path: Path,
    datasets_dir: Path,
    project: str,
    repeats: int = 10,
    concept: str = "concept",
    *,
    on_conflict: str = "error",
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> ImportResult:
    """Extract ``zip_path`` into ``datasets_dir/<project>/<repeats>_<concept>`` (see the module docstring).

    Refuses, with a :class:`CoreError` and before writing anything: links, absolute paths,
    entries with ``..``, encrypted entries, and archives over ``max_unpacked_bytes`` or
    ``max_entries``. macOS junk (``__MACOSX``, ``._*``, ``.DS_Store``) is skipped.
    """
    zip_path = Path(zip_path).expanduser()
    if not zip_path.is_file():
        raise CoreError(f"The zip file {zip_path} does not exist.", hint="Check the path.")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as problem:
        raise CoreError(f"{zip_path} is not a readable zip file ({problem}).",
                        hint="Re-download it, or re-create it with your system's 'Compress' / 'Send to zip'.") from problem
    with archive:
        entries, skipped = _zip_entries(archive, zip_path, max_unpacked_bytes, max_entries)
        relatives, has_subsets = _layout([e.relative for e in entries])
        entries = [_Entry(e.info, r) for e, r in zip(entries, relatives)]
        target = _destination(datasets_dir, project, repeats, concept, has_subsets)
        _check_inside(target, relatives, zip_path)
        taken, skipped_existing = _conflicts(target, relatives, on_conflict)
        warnings = _layout_warnings(target, relatives, has_subsets)
        made = _missing_parents(target)
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=target))
        written: list[Path] = []
        try:
            budget = [max_unpacked_bytes]
            for entry in entries:
                if entry.relative not in taken:
                    _extract_one(archive, entry, staging / entry.relative, budget)
            written = _move_into_place(staging, target, [e.relative for e in entries if e.relative not in taken])
        except (zipfile.BadZipFile, EOFError) as problem:
            raise CoreError(f"{zip_path} is damaged ({problem}). Nothing was imported.", hint="Re-download it.") from problem
        except OSError as problem:
            raise CoreError(f"Cannot extract {zip_path} into {target}: {problem.strerror or problem}.",
                            hint="Check the disk is not full and that no file name in the zip is also a folder name.") from problem
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # our own staging folder; anything moved out is safe
            if not written:
                _remove_empty(made)
    return _result(target, written, skipped + skipped_existing, warnings)


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, deepest first (what mkdir will create)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this import created, deepest first, only while they are empty (rmdir refuses otherwise)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _check_inside(target: Path, relatives: list[PurePosixPath], source: Path) -> None:
    """Belt and braces after the per-entry checks: every destination resolves inside ``target``."""
    root = target.resolve()
    for relative in relatives:
        if not (root / relative).resolve().is_relative_to(root):
            raise CoreError(f"Refused {source}: entry {str(relative)!r} would land outside {target}. Nothing was extracted.",
                            hint="Re-create the archive without links or '..' in its paths.")


def _move_into_place(staging: Path, target: Path, relatives: list[PurePosixPath]) -> list[Path]:
    written = []
    for relative in relatives:
        dest = target / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # appeared while we were extracting: keep theirs, never overwrite
            raise CoreError(f"{dest} appeared during the import; stopped so nothing is overwritten. "
                            f"Files already imported: {len(written)}.", hint="Run the import again with 'skip'.")
        (staging / relative).replace(dest)
        written.append(dest)
    return written


# --- folder ---------------------------------------------------------------------------------------

def import_folder(
    source: Path,
    datasets_dir: Path,
    project: str,
    repeats: int = 10,
    concept: str = "concept",
    *,
    on_conflict: str = "error",
) -> ImportResult:
    """Copy (never move) the files of a server folder into the dataset, keeping sub-folders.

    Hidden files, macOS junk and ``_``/``.`` folders are left out. Refuses when the source and
    the destination overlap (copying a folder into itself).
    """
    source = require_folder(source, "source folder")
    files = [path for path in walk_files(source) if not _is_junk(path.relative_to(source).parts)]
    relatives, has_subsets = _layout([PurePosixPath(path.relative_to(source).as_posix()) for path in files])
    target = _destination(datasets_dir, project, repeats, concept, has_subsets)
    resolved_target = target.resolve()
    if resolved_target.is_relative_to(source) or source.is_relative_to(resolved_target):
        raise CoreError(f"Cannot import {source} into {target}: one folder is inside the other.",
                        hint="Pick a source folder outside the datasets folder.")
    taken, skipped = _conflicts(target, relatives, on_conflict)
    warnings = _layout_warnings(target, relatives, has_subsets)
    written = []
    for path, relative in zip(files, relatives):
        if relative in taken:
            continue
        dest = target / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, dest)  # copy2 keeps modification times, which sorting by date relies on
        except OSError as problem:
            raise CoreError(f"Cannot copy {path} to {dest}: {problem.strerror or problem}. "
                            f"{len(written)} file(s) were copied before this one.",
                            hint="Check the disk is not full and the datasets folder is writable.") from problem
        written.append(dest)
    return _result(target, written, skipped, warnings)
