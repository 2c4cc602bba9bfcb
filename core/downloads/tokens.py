"""Where tokens come from: passed in, the environment, or a private token file (mode 0600)."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from core.errors import CoreError

ENV_NAMES = {"huggingface": "HF_TOKEN", "civitai": "CIVITAI_TOKEN"}


def resolve_token(service: str, passed: str | None = None, environ: Mapping[str, str] | None = None,
                  token_file: Path | None = None) -> str | None:
    """The token for ``service`` ("huggingface" or "civitai"): passed > environment > token file."""
    if passed:
        return passed
    env = os.environ if environ is None else environ
    value = env.get(ENV_NAMES[service])
    if value:
        return value
    if token_file is not None:
        return read_tokens(token_file).get(service)
    return None


def read_tokens(path: Path) -> dict[str, str]:
    """The tokens saved in ``path`` (empty when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise CoreError(f"The token file {path} is not valid JSON.", "Save the tokens again to rewrite it.") from None
    return {str(k): str(v) for k, v in data.items() if k in ENV_NAMES and v}


def save_token(path: Path, service: str, token: str) -> None:
    """Store ``token`` for ``service`` in ``path``, created with mode 0600 and replaced atomically."""
    if service not in ENV_NAMES:
        raise CoreError(f"Unknown token service {service!r}.", f"Use one of: {', '.join(ENV_NAMES)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = read_tokens(path)
    tokens[service] = token
    # mkstemp creates the file 0600 from the start, so the token is never readable by others, even briefly.
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(tokens, out)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
