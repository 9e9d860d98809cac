"""The listener's own thread: runs queued sends and, in the dag-processor, looks for resolved files.

Why a thread: the dag-processor calls the import-error hooks inside the transaction that writes the import-error
table, and the scheduler calls ``on_dag_run_failed`` inside its scheduling loop, so a send there (Vault, TLS,
the relay) would hold that transaction or that loop; and nothing in Airflow calls a listener when a file parses
again, so someone has to look. One daemon thread per process, started by the first hook that needs it;
``before_stopping`` drains it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

NAME = "secure-mail-listener"


class ListenerThread:
    """Run each queued job, and ``look()`` every ``every()`` seconds once this process is known to parse DAGs.

    A process parses DAGs when an import error was queued here, or when the job it started for (``on_starting``)
    turns out to be the dag-processor: the thread reads the job's type after its first wait, because Airflow's
    runner names it only after ``on_starting``. Elsewhere (scheduler, triggerer) it ends once idle.
    """

    def __init__(self, look: Callable[[], object], every: Callable[[], float]) -> None:
        self.look = look
        self.every = every
        self.thread: threading.Thread | None = None
        self.looking = False
        self._job: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()  # None wakes the thread to stop

    def put(self, job: Callable[[], None], *, look: bool = False) -> None:
        """Run ``job`` on the thread; ``look``: this process parses DAGs (an import error came in)."""
        self.looking = self.looking or look
        self._work.put(job)
        self.start()

    def start(self, job: Any = None) -> None:
        with self._lock:
            self._job = job if job is not None else self._job
            if self.thread is not None and self.thread.is_alive():
                return
            self._stop.clear()
            self.thread = threading.Thread(target=self._loop, name=NAME, daemon=True)
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

    def _loop(self) -> None:
        next_look = time.monotonic() + self.every()
        while not self._stop.is_set():
            try:
                item = self._work.get(timeout=max(0.0, next_look - time.monotonic()))
            except queue.Empty:
                pass
            else:
                try:
                    if item is not None:
                        item()
                finally:
                    self._work.task_done()
                continue
            next_look = time.monotonic() + self.every()
            self.looking = self.looking or getattr(self._job, "job_type", None) == "DagProcessorJob"
            if self.looking:
                self.look()
            elif self._done():
                return  # the scheduler or the triggerer: nothing queued, nothing to look for

    def _done(self) -> bool:
        """Let the thread end when idle; under the lock, so a job queued meanwhile starts a new one."""
        with self._lock:
            if not self._work.empty():
                return False
            self.thread = None
            return True
