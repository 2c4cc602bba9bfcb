"""Imports: zips (captions and folders kept, hostile archives refused), folders, URLs, the Hub, booru tags."""
from __future__ import annotations

import hashlib
import http.server
import json
import stat
import sys
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.dataset_manager import DatasetManager, main
from core.datasets.booru import RAW_TAGS_DIR, clean_booru_folder, import_booru
from core.datasets.importers import import_folder, import_zip
from core.datasets.naming import parse_subset_folder, sanitize_name, subset_folder_name
from core.datasets.remote import import_hf_dataset, import_url, parse_hf_dataset_url, redact_url
from core.errors import CoreError
from core.paths import ProjectPaths
from tests.loopback import serving


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def zip_of(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def subject_entries(image_set, prefix: str) -> dict[str, bytes]:
    """The subject subset's images and captions, under ``prefix``, plus a sub-folder of extras."""
    folder = image_set.subsets[0]
    entries = {f"{prefix}{p.name}": p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    entries[f"{prefix}extras/style_c.webp"] = (image_set.subsets[1] / "style_c.webp").read_bytes()
    entries[f"{prefix}extras/style_c.txt"] = b"style, watercolour"
    return entries


# --- names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, safe", [
    ("my:char/v2?", "my_char_v2_"), ("  ohwx   woman ", "ohwx woman"), ("..hidden", "hidden"), ("_private", "private"),
    ("CON", "CON_"), ("nul.txt", "nul.txt_"), ("trailing. ", "trailing"), ("café 猫", "café 猫"), ("a\x00b\tc", "a_b c"),
])
def test_names_are_safe_on_every_os(raw: str, safe: str) -> None:
    assert sanitize_name(raw) == safe


def test_bad_names_and_repeats_are_refused() -> None:
    for bad in ("", "...", "  _ "):
        with pytest.raises(CoreError):
            sanitize_name(bad)
    for repeats in (0, -1, 1.5, True):
        with pytest.raises(CoreError):
            subset_folder_name(repeats, "x")  # type: ignore[arg-type]
    assert subset_folder_name(10, "my/char") == "10_my_char"
    assert parse_subset_folder("10_ohwx woman") == (10, "ohwx woman") and parse_subset_folder("0_x") is None
    assert len(sanitize_name("é" * 200).encode("utf-8")) <= 120


# --- zip -----------------------------------------------------------------------------------------

def test_zip_import_keeps_captions_and_sub_folders(image_set_template, tmp_path: Path) -> None:
    entries = subject_entries(image_set_template, "myset/")  # one wrapping folder, as zipping a folder makes
    entries["__MACOSX/myset/._plain_rgb.png"] = b"resource fork"
    entries["myset/.DS_Store"] = b"finder"
    archive = zip_of(tmp_path / "set.zip", entries)
    datasets = tmp_path / "datasets"
    result = import_zip(archive, datasets, "My Project", 10, "ohwx woman")
    target = datasets / "My Project" / "10_ohwx woman"
    assert result.target == target
    expected = {name.removeprefix("myset/"): data for name, data in entries.items()
                if name.startswith("myset/") and not name.endswith(".DS_Store")}
    assert files_under(target) == expected  # same bytes, captions and extras/ included, BOM/CRLF untouched
    subject = image_set_template.subsets[0]
    images_in_subject = len([p for p in image_set_template.good + image_set_template.broken if p.parent == subject])
    assert result.images == images_in_subject + 1 == 18  # broken files are imported too: validation reports them
    assert result.captions == len([p for p in image_set_template.caption_files.values() if p.parent == subject]) + 1
    assert sorted(result.skipped) == ["__MACOSX/myset/._plain_rgb.png", "myset/.DS_Store"]
    assert any("sub-folders" in w and "style_c.webp" in w for w in result.warnings)


def test_zip_with_n_name_folders_keeps_the_layout(image_set_template, tmp_path: Path) -> None:
    entries = {f"{sub.name}/{p.name}": p.read_bytes() for sub in image_set_template.subsets for p in sorted(sub.iterdir())}
    archive = zip_of(tmp_path / "layout.zip", entries)
    result = import_zip(archive, tmp_path / "datasets", "proj", 5, "ignored")
    assert result.target == tmp_path / "datasets" / "proj"
    assert files_under(result.target) == entries
    assert any("were not used" in w for w in result.warnings)


@pytest.mark.parametrize("name, what", [
    ("../evil.txt", "'..'"), ("ok/../../evil.txt", "'..'"), ("/etc/evil.txt", "absolute"),
    ("C:/Windows/evil.txt", "absolute"), ("..\\evil.txt", "'..'"),
])
def test_zip_slip_entries_are_refused_before_anything_is_written(tmp_path: Path, name: str, what: str) -> None:
    archive = zip_of(tmp_path / "evil.zip", {"good.png": b"x", name: b"pwned"})
    datasets = tmp_path / "datasets"
    with pytest.raises(CoreError) as caught:
        import_zip(archive, datasets, "proj", 10, "c")
    message = str(caught.value)
    assert "Refused" in message and what in message and "Nothing was extracted" in message and caught.value.hint
    assert not datasets.exists()
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_entry_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("good.png", b"x")
        link = zipfile.ZipInfo("innocent.png")
        link.create_system = 3  # Unix, so external_attr holds the mode
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")  # a link's data is its target
    with pytest.raises(CoreError, match="'innocent.png' is a symbolic link"):
        import_zip(archive, tmp_path / "datasets", "proj", 10, "c")
    assert not (tmp_path / "datasets").exists()


def test_zip_bomb_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    archive = zip_of(tmp_path / "bomb.zip", {"zeros.png": bytes(2_000_000)})
    assert archive.stat().st_size < 20_000  # compresses ~1000:1
    with pytest.raises(CoreError, match="zip-bomb guard"):
        import_zip(archive, tmp_path / "datasets", "proj", 10, "c", max_unpacked_bytes=1_000_000)
    assert not (tmp_path / "datasets").exists()


def test_zip_with_a_lying_size_header_imports_nothing(tmp_path: Path) -> None:
    archive = zip_of(tmp_path / "liar.zip", {"zeros.png": bytes(300_000)})
    data = bytearray(archive.read_bytes())
    # Shrink the declared size in the central directory (offset 24 of the entry record) to 1000 bytes.
    central = data.rindex(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    datasets = tmp_path / "datasets"
    with pytest.raises(CoreError) as caught:
        import_zip(archive, datasets, "proj", 10, "c", max_unpacked_bytes=100_000)
    # zipfile stops at the declared size and its CRC check fails; our own byte count is the second guard.
    assert "damaged" in str(caught.value) and "Nothing was imported" in str(caught.value)
    assert not datasets.exists()  # staging and the folders made for it removed: nothing half-imported


def test_existing_files_stop_the_import_or_are_kept_with_skip(image_set_template, tmp_path: Path) -> None:
    archive = zip_of(tmp_path / "set.zip", {"a.png": b"new a", "a.txt": b"new caption", "b.png": b"new b"})
    datasets = tmp_path / "datasets"
    target = datasets / "proj" / "10_c"
    target.mkdir(parents=True)
    (target / "a.txt").write_bytes(b"my own caption")
    with pytest.raises(CoreError, match="already exist.*a.txt"):
        import_zip(archive, datasets, "proj", 10, "c")
    assert files_under(target) == {"a.txt": b"my own caption"}
    result = import_zip(archive, datasets, "proj", 10, "c", on_conflict="skip")
    assert files_under(target) == {"a.txt": b"my own caption", "a.png": b"new a", "b.png": b"new b"}
    assert result.skipped == (f"a.txt (already in {target})",)


def test_not_a_zip_and_missing_zip(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip")
    with pytest.raises(CoreError, match="not a readable zip"):
        import_zip(fake, tmp_path / "d", "p", 1, "c")
    with pytest.raises(CoreError, match="does not exist"):
        import_zip(tmp_path / "missing.zip", tmp_path / "d", "p", 1, "c")


# --- folder --------------------------------------------------------------------------------------

def test_folder_import_copies_and_leaves_the_source_alone(image_set_template, tmp_path: Path) -> None:
    source = image_set_template.subsets[1]
    before = files_under(source)
    result = import_folder(source, tmp_path / "datasets", "proj", 3, "style")
    assert files_under(source) == before
    assert files_under(result.target) == before
    assert result.target == tmp_path / "datasets" / "proj" / "3_style"
    with pytest.raises(CoreError, match="one folder is inside the other"):
        import_folder(tmp_path / "datasets", tmp_path / "datasets", "proj", 3, "again")


# --- URL and Hugging Face ------------------------------------------------------------------------

Reply = tuple[int, bytes, dict[str, str]]


@contextmanager
def serve(answer) -> Iterator[str]:
    """A loopback HTTP server; ``answer(method, path, headers)`` gives (status, body, headers). Yields its URL."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, head: bool) -> None:
            status, body, headers = answer(self.command, self.path, dict(self.headers))
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self._reply(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._reply(head=True)

        def log_message(self, *args) -> None:
            pass

    with serving(Handler) as base:
        yield base


def static(routes: dict[str, bytes]):
    def answer(method: str, path: str, headers: dict[str, str]) -> Reply:
        body = routes.get(path.split("?")[0])
        return (404, b"not found", {}) if body is None else (200, body, {})
    return answer


def test_url_import_downloads_a_zip_over_http(image_set_template, tmp_path: Path) -> None:
    entries = subject_entries(image_set_template, "")
    payload = zip_of(tmp_path / "served.zip", entries).read_bytes()
    datasets = tmp_path / "datasets"
    with serve(static({"/set.zip": payload, "/page.html": b"<html>hi</html>"})) as base:
        result = import_url(f"{base}/set.zip?token=SECRET123", datasets, "proj", 10, "ohwx")
        assert files_under(result.target) == entries
        with pytest.raises(CoreError) as not_zip:
            import_url(f"{base}/page.html", datasets, "proj2", 1, "c")
        assert "is not a zip file" in str(not_zip.value)
        with pytest.raises(CoreError) as missing:
            import_url(f"{base}/gone.zip?token=SECRET123", datasets, "proj3", 1, "c")
        assert "HTTP 404" in str(missing.value) and "SECRET123" not in str(missing.value)
        with pytest.raises(CoreError, match="download limit"):
            import_url(f"{base}/set.zip", datasets, "proj4", 1, "c", max_bytes=100)
    assert [p.name for p in datasets.iterdir()] == ["proj"]  # no staging leftovers, failed imports left nothing


def test_url_helpers() -> None:
    assert redact_url("https://user:pw@example.com:8443/a/b.zip?token=x#frag") == "https://example.com:8443/a/b.zip"
    ref = parse_hf_dataset_url("https://huggingface.co/datasets/me/my-set/tree/main/images")
    assert (ref.repo_id, ref.revision, ref.subfolder) == ("me/my-set", "main", "images")
    assert parse_hf_dataset_url("hf://datasets/me/my-set").repo_id == "me/my-set"
    assert parse_hf_dataset_url("https://example.com/datasets/me/x") is None
    with pytest.raises(CoreError, match="Only http"):
        import_url("ftp://example.com/x.zip", Path("/nonexistent-unused"), "p", 1, "c")


def fake_hub(repo_id: str, files: dict[str, bytes], seen: list[tuple[str, str, str]]):
    """The few Hub endpoints snapshot_download calls: revision info, the file tree, and resolve (HEAD/GET)."""
    sha = "0123456789abcdef0123456789abcdef01234567"

    def answer(method: str, path: str, headers: dict[str, str]) -> Reply:
        seen.append((method, path, headers.get("Authorization", headers.get("authorization", ""))))
        route = path.split("?")[0]
        if route.startswith(f"/api/datasets/{repo_id}/revision/"):
            info = {"id": repo_id, "sha": sha, "siblings": [{"rfilename": name} for name in files]}
            return 200, json.dumps(info).encode(), {"Content-Type": "application/json"}
        if route.startswith(f"/api/datasets/{repo_id}/tree/"):
            tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in files.items()]
            return 200, json.dumps(tree).encode(), {"Content-Type": "application/json"}
        prefix = f"/datasets/{repo_id}/resolve/{sha}/"
        if route.startswith(prefix) and urllib.parse.unquote(route[len(prefix):]) in files:
            data = files[urllib.parse.unquote(route[len(prefix):])]
            return 200, data, {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
        return 404, b"not found", {}
    return answer


def test_hf_dataset_import_through_a_loopback_hub(image_set_template, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # only our loopback server is reached
    image = image_set_template.good[0].read_bytes()
    files = {"images/a.png": image, "images/a.txt": b"ohwx, smile", "images/B.PNG": image,
             "data/train.parquet": b"PAR1 big shard", "README.md": b"# card"}
    seen: list[tuple[str, str, str]] = []
    datasets = tmp_path / "datasets"
    with serve(fake_hub("me/my-set", files, seen)) as base:
        result = import_hf_dataset("me/my-set", datasets, "proj", 4, "ohwx", token="hf_SECRETTOKEN", endpoint=base)
    assert files_under(result.target) == {"a.png": image, "a.txt": b"ohwx, smile", "B.PNG": image}
    fetched = {path.rsplit("/", 1)[-1] for method, path, _ in seen if method == "GET" and "/resolve/" in path}
    assert fetched == {"a.png", "a.txt", "B.PNG"}  # the parquet shard and the card were never downloaded
    assert all(auth == "Bearer hf_SECRETTOKEN" for _, _, auth in seen)  # the token reached the Hub ...
    written = b"".join(p.read_bytes() for p in datasets.rglob("*") if p.is_file())
    assert b"hf_SECRETTOKEN" not in written  # ... and no file we wrote
    assert [p.name for p in datasets.iterdir()] == ["proj"]  # the staging download is gone


def test_hf_dataset_offline_gives_a_clear_error(tmp_path: Path) -> None:
    # conftest sets HF_HUB_OFFLINE=1: the real snapshot_download runs and finds nothing cached.
    with pytest.raises(CoreError) as caught:
        import_hf_dataset("someone/some-dataset", tmp_path / "datasets", "proj", 10, "c", token="hf_SECRETTOKEN")
    message = str(caught.value)
    assert "someone/some-dataset" in message and "offline" in message and "hf_SECRETTOKEN" not in message
    assert caught.value.__cause__ is None  # the library's error (which may echo headers) is not chained
    assert not [p for p in (tmp_path / "datasets").rglob("*") if p.is_file()]
    with pytest.raises(CoreError, match="not a Hugging Face dataset name"):
        import_hf_dataset("not a repo", tmp_path / "datasets", "proj", 10, "c")


# --- booru ---------------------------------------------------------------------------------------

def gallery_dl_layout(folder: Path, image_bytes: bytes) -> None:
    """What ``gallery-dl --write-tags`` leaves: ``<id>.<ext>`` and ``<id>.<ext>.txt``, one tag per line."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "danbooru_1001.jpg").write_bytes(image_bytes)
    (folder / "danbooru_1001.jpg.txt").write_text("1girl\nlong_hair\njack-o&#039;-lantern\n^_^\nblue_eyes\n", encoding="utf-8")
    (folder / "danbooru_1002.png").write_bytes(image_bytes)
    (folder / "danbooru_1002.png.txt").write_text("solo\nblack_&amp;_white\n", encoding="utf-8")


def test_gallery_dl_tag_files_become_clean_captions(image_set_template, tmp_path: Path) -> None:
    folder = tmp_path / "10_booru"
    gallery_dl_layout(folder, image_set_template.good[0].read_bytes())
    (folder / "danbooru_1002.txt").write_bytes(b"my own caption")  # the user's caption wins
    result = clean_booru_folder(folder)
    assert (folder / "danbooru_1001.txt").read_bytes() == b"1girl, long hair, jack-o'-lantern, ^_^, blue eyes\n"
    assert (folder / "danbooru_1002.txt").read_bytes() == b"my own caption"
    assert [p.name for p in result.written] == ["danbooru_1001.txt"]
    assert (folder / RAW_TAGS_DIR / "danbooru_1001.jpg.txt").is_file()  # raw tags kept aside, not deleted
    assert (folder / "danbooru_1002.png.txt").is_file() and "kept it" in result.skipped[0]


def test_booru_import_without_gallery_dl_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("core.datasets.booru.shutil.which", lambda name: None)  # as on a machine without it
    with pytest.raises(CoreError) as caught:
        import_booru("https://danbooru.donmai.us/posts?tags=x", tmp_path / "d", "p")
    assert "needs gallery-dl" in str(caught.value) and "pip install gallery-dl" in caught.value.hint
    assert not (tmp_path / "d").exists()


def test_booru_import_runs_gallery_dl_and_cleans(image_set_template, tmp_path: Path) -> None:
    # A stand-in gallery-dl (a script writing what the real one writes) checks our command line and flow.
    image = image_set_template.good[0]
    fake = tmp_path / "gallery-dl"
    fake.write_text(
        f"#!{sys.executable}\nimport sys, shutil, pathlib\n"
        "args = sys.argv[1:]\nassert '--write-tags' in args and args[args.index('--range') + 1] == '1-5'\n"
        "dest = pathlib.Path(args[args.index('-D') + 1])\n"
        f"shutil.copy({str(image)!r}, dest / 'danbooru_7.png')\n"
        "(dest / 'danbooru_7.png.txt').write_text('long_hair\\n&quot;quoted&quot;\\n', encoding='utf-8')\n",
        encoding="utf-8")
    fake.chmod(0o755)
    result = import_booru("https://danbooru.donmai.us/posts?tags=x", tmp_path / "datasets", "proj", 2, "chara",
                          limit=5, executable=str(fake))
    assert files_under(result.target) == {"danbooru_7.png": image.read_bytes(), "danbooru_7.txt": b'long hair, "quoted"\n'}
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == ["proj"]
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write('HttpError: 403 Forbidden\\n')\nsys.exit(4)\n",
                    encoding="utf-8")
    with pytest.raises(CoreError, match="exit 4"):
        import_booru("https://danbooru.donmai.us/posts?tags=y", tmp_path / "datasets", "proj2", executable=str(fake))


# --- facade and CLI ------------------------------------------------------------------------------

def test_cli_import_zip_and_error_without_traceback(image_set_template, tmp_path: Path, capsys) -> None:
    archive = zip_of(tmp_path / "set.zip", subject_entries(image_set_template, ""))
    datasets = tmp_path / "datasets"
    assert main(["--datasets-dir", str(datasets), "import-zip", str(archive), "--project", "p", "--concept", "ohwx"]) == 0
    assert "Imported 18 image(s) and 13 caption(s)" in capsys.readouterr().out
    assert main(["--datasets-dir", str(datasets), "import-zip", str(archive), "--project", "p", "--concept", "ohwx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "already exist" in err and "What to do" in err and "Traceback" not in err
    manager = DatasetManager(ProjectPaths.resolve({"LORA_DATASETS_DIR": str(datasets)}))
    assert manager.projects() == ["p"] and manager.subset_dir("p", 10, "ohwx") == datasets / "p" / "10_ohwx"
