"""The listener's own thread: sends queued import-error mails and looks for resolved files every interval.

Why a thread: the dag-processor calls the import-error hooks inside the transaction that writes the import-error
table, so a send there (Vault, TLS, the relay) would hold that transaction open; and nothing in Airflow calls a
listener when a file parses again, so someone has to look. One daemon thread per process, started by the first
hook that needs it; ``before_stopping`` drains it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

NAME = "secure-mail-listener"


class ListenerThread:
    """Run ``report(filename, stacktrace)`` for each queued item, and ``look()`` every ``every()`` seconds.

    Started for a job (``on_starting``), the thread reads the job's type after its first wait (Airflow's runner
    names it only after ``on_starting``) and stops looking unless it is the dag-processor.
    """

    def __init__(
        self, report: Callable[[str, str], None], look: Callable[[], object], every: Callable[[], float]
    ) -> None:
        self.report = report
        self.look = look
        self.every = every
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._work: queue.Queue[tuple[str, str] | None] = queue.Queue()  # None wakes the thread to stop

    def put(self, filename: str, stacktrace: str) -> None:
        self._work.put((filename, stacktrace))
        self.start()

    def start(self, job: Any = None) -> None:
        with self._lock:
            if self.thread is not None and self.thread.is_alive():
                return
            self._stop.clear()
            self.thread = threading.Thread(target=self._loop, args=(job,), name=NAME, daemon=True)
            self.thread.start()

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the queued items are handled (before the process stops; tests)."""
        deadline = time.monotonic() + timeout
        while self._work.unfinished_tasks and time.monotonic() < deadline:
            if self.thread is None or not self.thread.is_alive():
                return
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        thread, self.thread = self.thread, None
        if thread is not None:
            self._work.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def _loop(self, job: Any) -> None:
        next_look = time.monotonic() + self.every()
        while not self._stop.is_set():
            try:
                item = self._work.get(timeout=max(0.0, next_look - time.monotonic()))
            except queue.Empty:
                pass
            else:
                try:
                    if item is not None:
                        self.report(*item)
                finally:
                    self._work.task_done()
                continue
            next_look = time.monotonic() + self.every()
            if job is not None and getattr(job, "job_type", None) != "DagProcessorJob":
                if self._work.empty():
                    return  # the scheduler or the triggerer: import errors are not theirs
                continue
            self.look()
