"""One background worker per panel, so a long import, check or tagging run never freezes the notebook.

The work runs in a thread; errors are shown by the panel's ``guarded`` wrapper like any handler's.
``wait()`` returns when the work is done, which is how tests (and headless notebooks) stay
deterministic. Work started from inside the worker (an import that then re-checks the dataset)
runs right there, in order. Work started with ``queue=True`` while the worker is busy runs after
it (a newer queued job replaces an older one: a refresh asked for twice is done once).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_Job = tuple[Callable[[], Any], Callable[[Any], None] | None, Callable[[], None] | None]


class BackgroundTask:
    """Runs one piece of work at a time for a panel; ``guard`` turns errors into panel messages."""

    def __init__(self, guard: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
                 name: str = "panel-worker") -> None:
        self._guard = guard or (lambda action: action)  # None: the work guards itself
        self._name = name
        self._thread: threading.Thread | None = None
        self._queued: _Job | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """True while work is running or queued."""
        return self._thread is not None

    def start(self, work: Callable[[], Any], done: Callable[[Any], None] | None = None,
              finally_: Callable[[], None] | None = None, *, queue: bool = False) -> bool:
        """Run ``work()`` in the background, then ``done(result)``; ``finally_()`` in every case.

        Returns False (and runs nothing) when other work is running, unless ``queue``.
        """
        job: _Job = (work, done, finally_)
        if threading.current_thread() is self._thread:
            self._run(job)  # already in the background: keep the order, no second thread
            return True
        with self._lock:
            if self._thread is not None:
                if queue:
                    self._queued = job
                    return True
                return False
            self._thread = threading.Thread(target=self._loop, args=(job,), name=self._name, daemon=True)
            self._thread.start()
        return True

    def _run(self, job: _Job) -> None:
        work, done, finally_ = job
        try:
            self._guard(lambda: (done or (lambda _result: None))(work()))()
        finally:
            if finally_ is not None:
                self._guard(finally_)()

    def _loop(self, job: _Job | None) -> None:
        while job is not None:
            self._run(job)
            with self._lock:  # the same lock as start(): a job queued now is either seen here or starts a thread
                job, self._queued = self._queued, None
                if job is None:
                    self._thread = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current (and queued) work is done; False when ``timeout`` seconds passed first."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()
