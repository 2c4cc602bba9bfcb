"""A small Jupyter server extension that makes even ``GET /api`` ask for the token.

jupyter_server answers its version endpoint ``/api`` without authentication, which lets anyone
who finds a rented server's public port fingerprint it. ``jupyter.sh`` loads this extension so
every endpoint of our server, that one included, answers 403 without the token.
"""
from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Tell jupyter_server where the extension lives."""
    return [{"module": "core.jupyter_api_lock"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register an authenticated version handler in front of jupyter_server's public one."""
    from jupyter_server.base.handlers import APIVersionHandler
    from jupyter_server.utils import url_path_join

    class TokenOnlyVersionHandler(APIVersionHandler):
        """The same answer as jupyter_server's, but without the ``allow_unauthenticated`` mark.

        With ``allow_unauthenticated_access = False`` (set by jupyter.sh) the base handler's
        ``prepare`` refuses any request without a valid token with 403.
        """

        def get(self) -> None:
            # The override itself carries no allow_unauthenticated mark, which is the point.
            super().get()

    pattern = url_path_join(serverapp.base_url, r"/api/?")
    # tornado tries host rules added later before the original catch-all rule, so this one wins.
    serverapp.web_app.add_handlers(".*$", [(pattern, TokenOnlyVersionHandler)])
    serverapp.log.info("core.jupyter_api_lock: /api now requires the token")
