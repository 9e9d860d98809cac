"""The Airflow plugin that registers the listener (entry point ``airflow.plugins``).

Why an ``airflow.plugins`` entry point and not the provider info's ``plugins``: with Airflow's default
``[core] lazy_discover_providers = True`` the plugins manager never reads provider info, while it always
loads entry-point plugins. Every component loads plugins (scheduler, dag-processor, triggerer, API server,
each task), so this module imports only the standard library, pluggy and the SDK's plugin base; the
settings, the pipeline and the digests load on the first hook call that needs them. Off until
``[secure_mail] listener_to`` is set; a bad setting logs one line once and the component runs on.

Which process runs which hook (Airflow 3.3), with what, and what the listener does:

- ``on_new_dag_import_error`` / ``on_existing_dag_import_error(filename, stacktrace)``: the dag-processor's
  manager, inside the transaction that writes the import-error table; full path and stack trace. Queued;
  the listener's thread mails, and every ``RESOLVE_EVERY`` seconds compares that table with the files it
  mailed about (resolved lines).
- ``on_task_instance_failed(previous_state, task_instance, error)``: the worker's task runner, after the task's
  own callbacks, also for a try that will be retried; ``RuntimeTaskInstance`` with the DAG file's task and DAG
  objects. (The API server calls it with a database row when a user marks a task failed: ignored.) The
  catch-all records it and sends the due digest from the task process, as a task's notifier would.
- ``on_dag_run_failed(dag_run, msg)``: the scheduler's loop (``DagRun.update_state``, dagrun_timeout), the
  ``DagRun`` with its serialized DAG; the API server when a user marks a run failed. Only ``timed_out`` and
  ``all_tasks_deadlocked`` runs are recorded, queued to the thread.
- ``on_starting`` / ``before_stopping(component)``: every job (scheduler, dag-processor, triggerer); start and
  drain the thread.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import pluggy
from airflow.sdk.plugins_manager import AirflowPlugin

from airflow_secure_mail.listeners.background import ListenerThread

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from airflow_secure_mail.listeners.catch_all import CatchAll
    from airflow_secure_mail.listeners.config import ListenerSettings
    from airflow_secure_mail.listeners.import_errors import ImportErrorAlerts

log = logging.getLogger(__name__)

hookimpl = pluggy.HookimplMarker("airflow")

RESOLVE_EVERY = 60.0
"""Seconds between two looks at the import-error table for files that import again (in the dag-processor)."""

RUN_ONLY_REASONS = frozenset({"timed_out", "all_tasks_deadlocked"})
"""The scheduler's reasons for a failed run that no failed task reports (``DagRun.update_state``, dagrun_timeout)."""

_UNREAD: Any = object()


def _describe(exc: BaseException) -> str:
    """Our errors say what to fix; another library's message may quote anything, so only its type is kept."""
    from airflow_secure_mail.errors import SecureMailError

    if isinstance(exc, SecureMailError):
        return str(exc)
    log.debug("secure-mail listener: %s", type(exc).__name__, exc_info=exc)
    return f"{type(exc).__name__} (its traceback is logged at DEBUG)"


class SecureMailListener:
    """Airflow listener hooks: import errors (dag-processor), task failures (worker task runner)."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None, background: bool = True) -> None:
        self.clock = clock  # tests move time; Airflow's instance uses the wall clock
        self.background = background
        self._settings: ListenerSettings | None = _UNREAD
        self._import_errors: ImportErrorAlerts | None = None
        self._catch_all: CatchAll | None = None
        self._lock = threading.Lock()
        self.thread = ListenerThread(self.resolve_once, every=lambda: RESOLVE_EVERY)

    def reset(self) -> None:
        """Read the configuration again at the next hook call (tests, or after changing it)."""
        self.thread.stop()
        with self._lock:
            self._settings, self._import_errors, self._catch_all = _UNREAD, None, None

    def settings(self) -> ListenerSettings | None:
        """The settings, read once per process; None (off) when unset or unusable (logged once)."""
        with self._lock:
            if self._settings is _UNREAD:
                from airflow_secure_mail.listeners.config import read_settings

                try:
                    self._settings = read_settings()
                except Exception as exc:
                    log.error("secure-mail listener is off: %s", _describe(exc))
                    self._settings = None
            return self._settings

    def import_errors(self) -> ImportErrorAlerts | None:
        settings = self.settings()
        if settings is None or not settings.import_errors:
            return None
        if self._import_errors is None:
            from airflow_secure_mail.listeners.import_errors import ImportErrorAlerts
            from airflow_secure_mail.listeners.mailer import ListenerMailer

            self._import_errors = ImportErrorAlerts(settings, ListenerMailer(settings), clock=self.clock)
        return self._import_errors

    def catch_all(self) -> CatchAll | None:
        settings = self.settings()
        if settings is None or not settings.catch_all:
            return None
        if self._catch_all is None:
            from airflow_secure_mail.listeners.catch_all import CatchAll
            from airflow_secure_mail.listeners.mailer import ListenerMailer

            self._catch_all = CatchAll(settings, ListenerMailer(settings), clock=self.clock)
        return self._catch_all

    # -- dag-processor ---------------------------------------------------------------------------
    @hookimpl
    def on_new_dag_import_error(self, filename: str, stacktrace: str) -> None:
        self._import_error(filename, stacktrace)

    @hookimpl
    def on_existing_dag_import_error(self, filename: str, stacktrace: str) -> None:
        self._import_error(filename, stacktrace)

    def _import_error(self, filename: str, stacktrace: str) -> None:
        """Queue the report for the listener's thread: Airflow calls this inside the transaction that writes the
        import-error table, and a send (Vault, TLS, the relay) must not hold that transaction open."""
        try:
            if self.import_errors() is None:
                return
            if not self.background:
                self._report(filename, stacktrace)
                return
            self.thread.put(lambda: self._report(filename, stacktrace), look=True)
        except Exception as exc:
            log.error("secure-mail listener: import error of %s not mailed: %s", filename, _describe(exc))

    def _report(self, filename: str, stacktrace: str) -> None:
        try:
            alerts = self.import_errors()
            if alerts is not None:
                alerts.report(filename, stacktrace)
        except Exception as exc:
            log.error("secure-mail listener: import error of %s not mailed: %s", filename, _describe(exc))

    @hookimpl
    def on_starting(self, component: Any) -> None:
        """A job starts (scheduler, dag-processor, triggerer): its runner names its type only after this call,
        so the thread looks once it waited one interval, and stops unless this is the dag-processor."""
        if type(component).__name__ != "Job":
            return
        try:
            if self.import_errors() is not None:
                self.thread.start(component)
        except Exception as exc:
            log.error("secure-mail listener: resolved lines are off: %s", _describe(exc))

    @hookimpl
    def before_stopping(self, component: Any) -> None:
        if type(component).__name__ == "Job":
            self.thread.drain()
            self.thread.stop()

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the queued import errors are mailed (tests; Airflow's ``before_stopping``)."""
        self.thread.drain(timeout)

    def resolve_once(self) -> list[str]:
        """Mail a resolved line for each mailed file the import-error table no longer lists."""
        try:
            alerts = self.import_errors()
            if alerts is None:
                return []
            from airflow_secure_mail.listeners.import_errors import broken_files

            return alerts.resolve(broken_files())
        except Exception as exc:
            log.error("secure-mail listener: resolved lines not mailed: %s", _describe(exc))
            return []

    # -- worker task runner ----------------------------------------------------------------------
    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        try:
            catch_all = self.catch_all()
            if catch_all is not None:
                catch_all.task_failed(task_instance, error)
        except Exception as exc:
            who = f"{getattr(task_instance, 'dag_id', '?')}.{getattr(task_instance, 'task_id', '?')}"
            log.error("secure-mail listener: failure of %s not mailed: %s", who, _describe(exc))

    # -- scheduler -------------------------------------------------------------------------------
    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        """A run failed. ``task_failure`` runs were covered task by task in the worker, and a run a user marked
        failed in the API server is no failure to report; ``timed_out`` and ``all_tasks_deadlocked`` have no
        failed task to say so, so the run itself goes into the digest, from the listener's thread (this hook
        runs in the scheduler's loop)."""
        try:
            catch_all = self.catch_all()
            if catch_all is None or msg not in RUN_ONLY_REASONS:
                return
            if getattr(getattr(dag_run, "dag", None), "has_on_failure_callback", False):
                return  # the DAG's own callback runs for this run (the scheduler sends it to the dag-processor)
            dag_id, run_id = str(dag_run.dag_id), str(dag_run.run_id)
        except Exception as exc:
            log.error("secure-mail listener: failed run not mailed: %s", _describe(exc))
            return

        def send() -> None:
            try:
                catch_all.run_failed(dag_id, run_id, msg)
            except Exception as exc:
                log.error("secure-mail listener: failed run %s %s not mailed: %s", dag_id, run_id, _describe(exc))

        if self.background:
            self.thread.put(send)
        else:
            send()


listener = SecureMailListener()
"""The one listener of this process (Airflow registers it; tests call ``listener.reset()``)."""


class SecureMailListenerPlugin(AirflowPlugin):
    """Registers :data:`listener` with Airflow's listener manager in every component."""

    name = "airflow_secure_mail_listener"
    listeners = [listener]
