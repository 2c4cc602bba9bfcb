"""Model downloads against loopback servers (127.0.0.1 only): Civitai API, a Range file host, HF errors."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import pytest

from core.downloads.sources import CivitaiSource, HFSource, URLSource, parse_source
from core.downloads.tokens import read_tokens, resolve_token, save_token
from core.errors import CoreError
from tests.loopback import hub_files_handler, serving
from core.models import download_model, load_presets, main

TOKEN = "civ-SECRET-token-7f3a9"
PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes, every offset distinguishable


@dataclass
class Behaviour:
    """What the fake servers do, and what they saw."""

    payload: bytes = PAYLOAD
    reported_sha: str = hashlib.sha256(PAYLOAD).hexdigest()
    drop_after: int | None = None  # first file response stops after this many bytes
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def _handler(state: Behaviour):
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a server thread forever

        def log_message(self, *args):  # keep the test output quiet
            pass

        def _json(self, body: dict, code: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_HEAD(self):
            self.do_GET(head=True)

        def do_GET(self, head: bool = False):
            state.requests.append((self.path, dict(self.headers)))
            base = f"http://127.0.0.1:{self.server.server_port}"
            if self.path == "/api/v1/model-versions/4242":
                files = [
                    {"name": "training_data.zip", "downloadUrl": f"{base}/api/download/models/4242?type=Training",
                     "hashes": {"SHA256": "00" * 32}, "sizeKB": 1, "primary": False},
                    {"name": "ponyLike_v6.safetensors", "downloadUrl": f"{base}/api/download/models/4242",
                     "hashes": {"SHA256": state.reported_sha.upper()}, "sizeKB": len(state.payload) / 1024,
                     "primary": True},
                ]
                return self._json({"id": 4242, "baseModel": "Pony", "files": files})
            if self.path == "/api/v1/models/77":
                return self._json({"id": 77, "modelVersions": [{"id": 4242}, {"id": 1}]})
            if self.path.startswith("/api/download/models/4242"):
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._json({"error": "Unauthorized"}, 401)
                # Like Civitai: redirect to a signed CDN URL that needs no token.
                self.send_response(307)
                self.send_header("Location", f"{base}/cdn/abc123?sig=xyz")
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if self.path.startswith("/cdn/") or self.path.startswith("/direct/"):
                return self._file(head)
            self._json({"error": "not found"}, 404)

        def _file(self, head: bool) -> None:
            data = state.payload
            start = 0
            ranged = self.headers.get("Range")
            if ranged:
                start = int(ranged.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Content-Disposition", "attachment; filename=\"directModel.safetensors\"")
            self.end_headers()
            if head:
                return
            body = data[start:]
            if state.drop_after is not None:
                body, state.drop_after = body[: state.drop_after], None
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    state = Behaviour()
    with serving(_handler(state)) as base:
        yield state, {"CIVITAI_API_BASE": base, "CIVITAI_TOKEN": TOKEN}


def _fast(**kwargs):
    return dict(progress=False, backoff=0.0, timeout=5.0, **kwargs)


def test_parse_every_source_form():
    assert parse_source("290640") == CivitaiSource(version_id=290640)
    assert parse_source("https://civitai.com/models/257749/pony?modelVersionId=290640") == CivitaiSource(290640)
    assert parse_source("https://civitai.com/api/download/models/290640?type=Model") == CivitaiSource(290640)
    assert parse_source("https://civitai.com/models/257749/pony-diffusion") == CivitaiSource(model_id=257749)
    assert parse_source("https://huggingface.co/o/r/blob/main/sub/m.safetensors") == HFSource("o/r", "sub/m.safetensors")
    assert parse_source("https://huggingface.co/o/r/resolve/v2/m.ckpt") == HFSource("o/r", "m.ckpt", "v2")
    assert parse_source("o/r/m.safetensors") == HFSource("o/r", "m.safetensors")
    assert parse_source("https://example.org/x.bin") == URLSource("https://example.org/x.bin")
    with pytest.raises(CoreError, match="Cannot tell"):
        parse_source("not a source")


def test_interrupted_civitai_download_resumes_to_exact_bytes(server, tmp_path):
    state, env = server
    state.drop_after = 100_000
    result = download_model("https://civitai.com/models/77?modelVersionId=4242", tmp_path, environ=env, **_fast())
    assert result.path == tmp_path / "ponyLike_v6.safetensors"  # the real name, extension kept
    assert result.path.read_bytes() == PAYLOAD
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert not (tmp_path / "ponyLike_v6.safetensors.part").exists()
    ranges = [h.get("Range") for p, h in state.requests if p.startswith("/cdn/")]
    assert ranges == [None, "bytes=100000-"]
    # A second run recognises the verified file and fetches no bytes.
    before = len([p for p, _ in state.requests if p.startswith("/cdn/")])
    again = download_model("4242", tmp_path, environ=env, **_fast())
    assert again.skipped and len([p for p, _ in state.requests if p.startswith("/cdn/")]) == before


def test_model_page_url_takes_latest_version_and_name_keeps_extension(server, tmp_path):
    _, env = server
    result = download_model(f"{env['CIVITAI_API_BASE']}/models/77/some-model", tmp_path, name="my_base",
                            environ=env, **_fast())
    assert result.path.name == "my_base.safetensors"
    assert result.path.read_bytes() == PAYLOAD


def test_wrong_sha256_is_refused_and_part_kept(server, tmp_path):
    state, env = server
    state.reported_sha = "ab" * 32
    for _ in range(2):  # a second try must not sneak the file into place either
        with pytest.raises(CoreError, match="does not match"):
            download_model("4242", tmp_path, environ=env, **_fast())
        assert not (tmp_path / "ponyLike_v6.safetensors").exists()
        assert (tmp_path / "ponyLike_v6.safetensors.part").read_bytes() == PAYLOAD


def test_token_never_logged_written_or_redirected(server, tmp_path, caplog, capsys, monkeypatch):
    state, env = server
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    state.drop_after = 50_000  # also exercise the retry warning path
    caplog.set_level(logging.DEBUG)
    assert main(["download", "4242", "--dest", str(tmp_path), "--no-progress"]) == 0
    monkeypatch.setenv("CIVITAI_TOKEN", "wrong")  # and the 401 error path
    assert main(["download", "4242", "--dest", str(tmp_path / "b"), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert "Saved:" in out and "Traceback" not in err and "needs a token" in err
    assert TOKEN not in caplog.text + out + err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    for path, headers in state.requests:
        assert TOKEN not in path
        if path.startswith("/cdn/"):  # the signed CDN link never receives the token
            assert "Authorization" not in headers
    assert (tmp_path / "ponyLike_v6.safetensors").read_bytes() == PAYLOAD


def test_direct_url_uses_content_disposition_name(server, tmp_path):
    state, env = server
    state.drop_after = 1234
    result = download_model(f"{env['CIVITAI_API_BASE']}/direct/download?id=9", tmp_path, environ={}, **_fast())
    assert result.path.name == "directModel.safetensors"
    assert result.path.read_bytes() == PAYLOAD
    assert all("Authorization" not in h for p, h in state.requests)  # no token for foreign hosts
    with pytest.raises(CoreError, match="SHA256"):
        download_model(f"{env['CIVITAI_API_BASE']}/direct/x", tmp_path / "c", environ={}, sha256="cd" * 32, **_fast())


def test_too_little_disk_space_stops_before_any_byte(server, tmp_path, monkeypatch):
    import shutil

    from core.downloads import http as http_module

    _, env = server
    real = shutil.disk_usage
    monkeypatch.setattr(http_module.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=len(PAYLOAD) // 2))  # a nearly full disk
    with pytest.raises(CoreError, match="Not enough disk space"):
        download_model("4242", tmp_path, environ=env, **_fast())
    with pytest.raises(CoreError, match="Not enough disk space"):  # a plain URL host: no Civitai settings
        download_model(f"{env['CIVITAI_API_BASE']}/direct/x", tmp_path, environ={}, **_fast())
    assert list(tmp_path.iterdir()) == []


def test_existing_different_file_is_never_overwritten(server, tmp_path):
    _, env = server
    (tmp_path / "ponyLike_v6.safetensors").write_bytes(b"user's own file")
    with pytest.raises(CoreError, match="never overwritten"):
        download_model("4242", tmp_path, environ=env, **_fast())
    assert (tmp_path / "ponyLike_v6.safetensors").read_bytes() == b"user's own file"


def test_missing_version_is_an_error_without_traceback(server, tmp_path, capsys, monkeypatch):
    _, env = server
    monkeypatch.setenv("CIVITAI_API_BASE", env["CIVITAI_API_BASE"])
    assert main(["download", "999", "--dest", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "What to do" in err and "Traceback" not in err


def test_options_repr_hides_the_token():
    from core.downloads.http import HttpOptions, safe_url

    assert TOKEN not in repr(HttpOptions(token=TOKEN))
    assert safe_url(f"https://u:p@civitai.com/api/download/models/1?token={TOKEN}") == \
        "https://civitai.com/api/download/models/1"


def test_token_file_is_private_and_env_wins(tmp_path):
    path = tmp_path / "secrets" / "tokens.json"
    save_token(path, "civitai", "file-token")
    save_token(path, "huggingface", "hf-file")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_tokens(path) == {"civitai": "file-token", "huggingface": "hf-file"}
    assert resolve_token("civitai", None, {}, path) == "file-token"
    assert resolve_token("civitai", None, {"CIVITAI_TOKEN": "env"}, path) == "env"
    assert resolve_token("civitai", "passed", {"CIVITAI_TOKEN": "env"}, path) == "passed"
    assert [p.name for p in path.parent.iterdir()] == ["tokens.json"]  # no temp file left behind


def test_presets_are_complete_and_parse():
    presets = load_presets()
    assert {"sd15", "sdxl_base", "illustrious_xl", "noobai_xl_eps", "noobai_xl_vpred", "pony_v6",
            "animagine_xl", "sdxl_vae_fp16_fix"} <= set(presets)
    assert [k for k, p in presets.items() if p.v_prediction] == ["noobai_xl_vpred"]
    assert presets["sd15"].base == "sd15" and presets["sdxl_vae_fp16_fix"].kind == "vae"
    assert isinstance(parse_source(presets["pony_v6"].source), CivitaiSource)
    assert isinstance(parse_source(presets["sdxl_base"].source), HFSource)


def test_unreachable_hub_is_a_core_error(tmp_path):
    # The suite runs with HF_HUB_OFFLINE=1 (conftest), which the Hub client treats like no network.
    # (A refused connection ends in the same error, after the Hub client's own ~23 s of retries.)
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_SECRET"}  # port 9 (discard): refused
    with pytest.raises(CoreError, match="Cannot reach the Hugging Face Hub") as info:
        download_model("o/r/m.safetensors", tmp_path, environ=env, progress=False)
    assert "hf_SECRET" not in str(info.value)


def test_hub_download_through_loopback_endpoint(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    # conftest switches the Hub offline for the whole suite; this test talks only to 127.0.0.1.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    data = b"tiny-hub-file" * 700
    seen: list[tuple[str, str, str | None]] = []
    with serving(hub_files_handler({"/o/r/resolve/main/sub/m.safetensors": data}, seen)) as endpoint:
        env = {"HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_SECRET_abc"}
        url = f"{endpoint}/o/r/blob/main/sub/m.safetensors"
        result = download_model(url, tmp_path, name="base", environ=env, progress=False)
        assert result.path == tmp_path / "base.safetensors" and result.path.read_bytes() == data
        assert ("GET", "/o/r/resolve/main/sub/m.safetensors", "Bearer hf_SECRET_abc") in seen
        with pytest.raises(CoreError, match="not the expected"):
            download_model("o/r/sub/m.safetensors", tmp_path / "b", sha256="ef" * 32, environ=env, progress=False)
        assert (tmp_path / "b" / "sub" / "m.safetensors.part").read_bytes() == data
        assert not (tmp_path / "b" / "sub" / "m.safetensors").exists()
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert b"hf_SECRET_abc" not in path.read_bytes(), path
