"""One background worker per panel, so a long import, check or tagging run never freezes the notebook.

The work runs in a thread; errors are shown by the panel's ``guarded`` wrapper like any handler's.
``wait()`` returns when the work is done, which is how tests (and headless notebooks) stay
deterministic. Work started from inside the worker (an import that then re-checks the dataset)
runs right there, in order, instead of queueing behind itself.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class BackgroundTask:
    """Runs one piece of work at a time for a panel; ``guard`` turns errors into panel messages."""

    def __init__(self, guard: Callable[[Callable[..., Any]], Callable[..., Any]], name: str = "panel-worker") -> None:
        self._guard = guard
        self._name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """True while work is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, work: Callable[[], Any], done: Callable[[Any], None] | None = None,
              finally_: Callable[[], None] | None = None) -> bool:
        """Run ``work()`` in the background, then ``done(result)``; ``finally_()`` in every case.

        Returns False (and runs nothing) when other work is still running.
        """
        def run() -> None:
            try:
                self._guard(lambda: (done or (lambda _result: None))(work()))()
            finally:
                if finally_ is not None:
                    self._guard(finally_)()

        if threading.current_thread() is self._thread:
            run()  # already in the background: keep the order, no second thread
            return True
        with self._lock:
            if self.busy:
                return False
            self._thread = threading.Thread(target=run, name=self._name, daemon=True)
            self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current work is done; False when ``timeout`` seconds passed first."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()
