"""The catch-all: a failed task whose task and DAG wire no failure alert of their own goes into a digest.

Airflow 3 calls ``on_task_instance_failed(previous_state, task_instance, error)`` in the worker's task runner
(``airflow.sdk.execution_time.task_runner.finalize``, right after the task's own ``on_failure_callback`` /
``on_retry_callback``), with the ``RuntimeTaskInstance`` (its ``task`` and the task's ``dag`` are the real
objects of the DAG file, callbacks included) and the exception. It is called for a final failure and for a
failure that will be retried (``task_instance.state`` says which); the API server calls it too when a user
marks a task failed, with a database ``TaskInstance``. ``on_dag_run_failed(dag_run, msg)`` runs in the
scheduler's loop (and in the API server when a user marks a run failed); ``msg`` says why: ``task_failure``
(already mailed task by task above), ``timed_out`` (``dagrun_timeout``), ``all_tasks_deadlocked``. The latter
two have no failed task, so the run itself is recorded, from the listener's thread (never in the loop).

A DAG "wires its own alert" when the task or the DAG has an ``on_failure_callback``, or when Airflow will send
its ``email_on_failure`` mail (``email_on_failure`` and ``email`` both set, Airflow's own condition): the listener
then stays silent, so nobody gets two mails for one failure. Everything else is recorded in an
:class:`~airflow_secure_mail.alerts.digest.AlertDigest` (grouped by DAG) and the DAG's due digest is flushed: a
storm of failures is one mail per group interval, retries are counted, not mailed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.alerts.digest import AlertDigest

if TYPE_CHECKING:
    from airflow_secure_mail.listeners.config import ListenerSettings
    from airflow_secure_mail.listeners.mailer import ListenerMailer

log = logging.getLogger(__name__)


def wires_its_own_alert(task: Any) -> bool:
    """True when the task or its DAG alerts on failure by itself (callback, or Airflow's email_on_failure)."""
    dag = getattr(task, "dag", None)
    if getattr(task, "on_failure_callback", None) or getattr(dag, "on_failure_callback", None):
        return True
    return bool(getattr(task, "email_on_failure", False) and getattr(task, "email", None))


class _Named:
    """What a run-level context needs of its DAG: the id (the scheduler's serialized DAG stays there)."""

    def __init__(self, dag_id: str) -> None:
        self.dag_id = dag_id


class CatchAll:
    """Fold failures of DAGs without an alert of their own into the listener's digests."""

    def __init__(
        self, settings: ListenerSettings, mailer: ListenerMailer, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.mailer = mailer
        self.digest = AlertDigest(state=settings.digest_state, group_by=("dag_id",), clock=clock)

    def task_failed(self, task_instance: Any, error: object) -> list[str] | None:
        """Record the failure and send the DAG's due digest; None when the DAG alerts by itself."""
        task = getattr(task_instance, "task", None)
        if task is None or type(task_instance).__module__.startswith("airflow.models"):
            # a database row: the API server, where a user marked the task failed by hand (no callback runs
            # there either, and its serialized task does not say which callbacks the DAG file wired)
            log.debug("secure-mail listener: %s was not failed by its task runner; skipped", task_instance)
            return None
        if wires_its_own_alert(task):
            log.debug("secure-mail listener: %s.%s alerts by itself", task.dag_id, task.task_id)
            return None
        context = {
            "ti": task_instance,
            "task_instance": task_instance,
            "dag": getattr(task, "dag", None),
            "run_id": getattr(task_instance, "run_id", None),
            "exception": error,
        }
        return self._record(context)

    def run_failed(self, dag_id: str, run_id: str, reason: str) -> list[str]:
        """A run that failed with no failed task (``timed_out``, ``all_tasks_deadlocked``): record it, flush."""
        return self._record({"dag": _Named(dag_id), "run_id": run_id, "reason": reason})

    def _record(self, context: dict[str, Any]) -> list[str]:
        event = self.digest.record_context(context)
        sent = self.digest.flush(self.mailer, group=self.digest.group_of(event))
        log.info(
            "secure-mail listener: %s of %s.%s recorded; %d digest(s) sent",
            event.kind.value,
            event.dag_id,
            event.task_id,
            len(sent),
        )
        return sent
