"""A background thread for the setup panel's long actions (download, self-check), with ``wait()`` for tests."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Worker:
    """Runs one action at a time in a daemon thread; the notebook stays responsive meanwhile."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, action: Callable[[], Any]) -> bool:
        """Start ``action`` (already guarded by the panel); False when the previous one still runs."""
        if self.busy:
            return False
        self._thread = threading.Thread(target=action, name=self._name, daemon=True)
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running action ends; False when ``timeout`` seconds passed first."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()
