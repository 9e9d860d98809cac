"""What a callback context says about an alert: status, DAG, task, run, try, the masked error, the log link.

The bottom of the alerts wing: it reads an Airflow callback context (duck-typed, no Airflow import but the
masker and the ``[api] base_url`` setting) and imports nothing of this package. Events are built from it, and
the notifier's single-alert mail (``notifications/email.py``, a floor above) renders it, so it lives down here
rather than up there.

The one place that tells which kind of callback a context comes from is :func:`callback_scope` (a task's, a
DAG run's, a missed Deadline Alert's or a human-in-the-loop request's): the notifier and the events both ask
it; :func:`run_fields`, :func:`deadline_fields` and :func:`hitl_fields` say what each of the others reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

_STATUS = {
    "failed": ("FAILED", "#c62828"),
    "up_for_retry": ("RETRY", "#ef6c00"),
    "success": ("SUCCEEDED", "#2e7d32"),
}
_ERROR_LIMIT = 300


def _first_line(exc: object) -> str | None:
    """The exception's first line, redacted by Airflow's masker and truncated."""
    if exc is None:
        return None
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = f"{type(exc).__name__}: {text}" if isinstance(exc, BaseException) else text
    try:
        from airflow.sdk.log import redact  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover
        from airflow.sdk._shared.secrets_masker import redact
    text = str(redact(text))
    return text if len(text) <= _ERROR_LIMIT else text[: _ERROR_LIMIT - 1] + "…"


def alert_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    """What an alert says: status, DAG, task, run, logical date, try N of M, error, host, log link."""
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    state = str(getattr(ti, "state", "") or "").rsplit(".", 1)[-1].lower() or "failed"
    if context.get("exception") is not None and state not in _STATUS:
        state = "failed"
    status, color = _STATUS.get(state, ("FAILED", "#c62828"))
    dag_id = getattr(dag, "dag_id", None) or getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", None) or "(dag)"
    run_id = context.get("run_id") or getattr(ti, "run_id", "?")
    try_number = getattr(ti, "try_number", None)
    max_tries = getattr(ti, "max_tries", None)
    rows = [("DAG", dag_id), ("Task", task_id), ("Run", run_id)]
    if context.get("logical_date"):
        rows.append(("Logical date", str(context["logical_date"])))
    if try_number is not None:
        rows.append(("Try", f"{try_number} of {(max_tries or 0) + 1}"))
    host = getattr(ti, "hostname", None)
    if host:
        rows.append(("Host", host))
    log_url = None
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:
        log_url = None
    return {
        "status": status,
        "color": color,
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "rows": rows,
        "error": _first_line(context.get("exception") or context.get("reason")),
        "log_url": log_url,
        "title": f"[Airflow] {status} {dag_id}.{task_id}",
    }


Scope = Literal["task", "dag_run", "deadline", "hitl"]

TASK: Scope = "task"
DAG_RUN: Scope = "dag_run"
DEADLINE: Scope = "deadline"
HITL: Scope = "hitl"


def deadline_of(context: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The missed deadline a Deadline Alert callback's context names (``{"id": ..., "deadline_time": ...}``)."""
    deadline = context.get("deadline")
    if isinstance(deadline, Mapping) and deadline.get("id") is not None:
        return deadline
    return None


def is_hitl_request(context: Mapping[str, Any]) -> bool:
    """True for the context a human-in-the-loop operator hands its ``notifiers=`` while it waits for a response.

    Duck-typed (``generate_link_to_ui_from_context`` is the HITL operators' own): the same notifier as a failure
    or success callback of such a task sees a context with an exception or a finished state, and alerts.
    """
    task = context.get("task")
    ti = context.get("ti") or context.get("task_instance")
    if task is None or ti is None or not callable(getattr(task, "generate_link_to_ui_from_context", None)):
        return False
    state = str(getattr(ti, "state", "") or "").rsplit(".", 1)[-1].lower()
    return context.get("exception") is None and "reason" not in context and state not in _STATUS


def callback_scope(context: Mapping[str, Any]) -> Scope:
    """Which callback ``context`` comes from: a task's, a DAG run's, a Deadline Alert's or a HITL request's.

    Airflow 3 gives every DAG-level callback a ``reason`` (``task_failure``, ``all_tasks_deadlocked``,
    ``timed_out``, ``success``: ``DagRun.produce_dag_callback``) and, when it knows one, the context of *a*
    task instance of the run (the last to fail, or the one blocking it), so a ``ti`` does not make it a task
    callback: the scheduler's path (``dag_processing/processor.py``) and ``dag.test()``'s
    (``DagRun.execute_dag_callbacks``) both set ``reason``; a task's template context never has one.
    A Deadline Alert's context (``Deadline.handle_miss``, the same for ``AsyncCallback`` in the triggerer and
    ``SyncCallback`` in the executor) holds the run as a dict (``dag_run``) and ``deadline`` (id, time), no
    task instance. A HITL operator calls its notifiers with its running task's context (:func:`is_hitl_request`).
    """
    if deadline_of(context) is not None:
        return DEADLINE
    if "reason" in context:
        return DAG_RUN
    if (context.get("ti") or context.get("task_instance")) is None:
        return DAG_RUN
    if is_hitl_request(context):
        return HITL
    return TASK


_REASONS = {
    "task_failure": "a task failed, so the run cannot succeed",
    "all_tasks_deadlocked": "no task could run: the tasks left wait on upstream tasks that cannot succeed",
    "timed_out": "the run took longer than the DAG's dagrun_timeout and was stopped",
    "success": "every task succeeded",
}
_RUN_TASK_LABEL = {
    "task_failure": "Failed task",
    "all_tasks_deadlocked": "Blocked task",
    "timed_out": "Unfinished task",
    "success": "Last task",
}
_RUN_TASK_NOTE = {
    "task_failure": "the last task to fail; the run's page lists every failed task",
    "all_tasks_deadlocked": "one of the tasks that could not start",
    "timed_out": "one of the tasks still running when it was stopped",
}


def reason_text(reason: object) -> str:
    """Airflow's DAG-callback ``reason`` code in words (an unknown code is quoted as Airflow gave it)."""
    code = str(reason or "").strip()
    return _REASONS.get(code) or (f"Airflow reported {code!r}" if code else "Airflow gave no reason")


def _base_url() -> str:
    try:
        from airflow.sdk.configuration import conf

        return str(conf.get("api", "base_url", fallback="http://localhost:8080/"))
    except Exception:  # pragma: no cover - outside a configured Airflow
        return "http://localhost:8080/"


def run_url(dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow 3 UI, built as the SDK builds a task's ``log_url``."""
    return f"{_base_url().rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


def _task_name(ti: Any) -> str:
    map_index = getattr(ti, "map_index", None)
    index = f"[{map_index}]" if isinstance(map_index, int) and map_index >= 0 else ""
    return f"{getattr(ti, 'task_id', '?')}{index}"


def run_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    """What a DAG-run callback reports: the run, its state, the reason in words, the task the context names.

    The task is the one Airflow put in the context (for ``task_failure`` the failed task instance that ended
    last); other failed tasks are not listed, as only a query of the metadata database (not available to a
    worker) could name them. Never a try number (the run has none) nor the reason code as an error.
    """
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    reason = str(context.get("reason") or "")
    dag_id = str(getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "?"))
    run_id = str(context.get("run_id") or getattr(dag_run, "run_id", None) or getattr(ti, "run_id", "?"))
    state = str(getattr(dag_run, "state", "") or "").rsplit(".", 1)[-1].lower()
    state = state or ("success" if reason == "success" else "failed")
    succeeded = state == "success"
    status, color = ("SUCCEEDED", "#2e7d32") if succeeded else ("FAILED", "#c62828")
    rows = [("DAG", dag_id), ("Run", run_id), ("State", state)]
    logical_date = context.get("logical_date") or getattr(dag_run, "logical_date", None)
    if logical_date:
        rows.append(("Logical date", str(logical_date)))
    for label, attr in (("Started", "start_date"), ("Ended", "end_date")):
        value = getattr(dag_run, attr, None)
        if value:
            rows.append((label, str(value)))
    rows.append(("Reason", reason_text(reason)))
    if ti is not None and getattr(ti, "task_id", None):
        note = _RUN_TASK_NOTE.get(reason)
        rows.append((_RUN_TASK_LABEL.get(reason, "Task"), _task_name(ti) + (f" ({note})" if note else "")))
    return {
        "status": f"DAG run {status}",
        "color": color,
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "reason": reason,
        "reason_text": reason_text(reason),
        "task": _task_name(ti) if ti is not None and getattr(ti, "task_id", None) else None,
        "rows": rows,
        "run_url": run_url(dag_id, run_id),
        "title": f"[Airflow] DAG run {status} {dag_id}",
    }


def _when(value: object) -> datetime | None:
    """A timestamp of a deadline context: a datetime (Airflow's serializer keeps them) or an ISO string."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _utc(value: datetime | None) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if value is not None else "?"


def _span(seconds: float) -> str:
    """``1h 02m 05s`` / ``4m 10s`` / ``12s``."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def deadline_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    """What a missed Deadline Alert reports: the DAG, the run, the deadline and how late, a link to the run.

    Everything comes from the context the scheduler stored with the callback (the run as ``DAGRunResponse``
    JSON: ``dag_run_id``, not ``run_id``), never from the clock: a triggerer that runs the callback again after
    a restart renders the same mail, so its Message-ID (seeded by the deadline id) and archive record match.
    "Late by" is measured at the scheduler's last look at the run (``last_scheduling_decision``) or the run's
    end, whichever is later, as that snapshot recorded them.
    """
    deadline = deadline_of(context) or {}
    dag_run = context.get("dag_run") or {}
    dag_id = str(_get(dag_run, "dag_id") or _get(context.get("dag"), "dag_id") or "?")
    run_id = str(_get(dag_run, "dag_run_id") or _get(dag_run, "run_id") or context.get("run_id") or "?")
    state = str(_get(dag_run, "state") or "").rsplit(".", 1)[-1].lower() or "running"
    due = _when(deadline.get("deadline_time"))
    rows = [("DAG", dag_id), ("Run", run_id), ("Deadline", _utc(due)), ("Run state", state)]
    for label, name in (("Queued", "queued_at"), ("Started", "start_date"), ("Ended", "end_date")):
        value = _when(_get(dag_run, name))
        if value is not None:
            rows.append((label, _utc(value)))
    seen = [t for t in (_when(_get(dag_run, "last_scheduling_decision")), _when(_get(dag_run, "end_date"))) if t]
    late = None
    if due is not None and seen and max(seen) > due:
        late = _span((max(seen) - due).total_seconds())
        rows.append(("Late by", f"{late} (when the scheduler found the deadline missed)"))
    else:
        rows.append(("Late by", "the deadline passed before the run finished"))
    rows.append(("Deadline id", str(deadline.get("id"))))
    return {
        "status": "DEADLINE MISSED",
        "color": "#6a1b9a",
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "deadline_id": str(deadline.get("id")),
        "deadline_time": _utc(due),
        "late": late,
        "rows": rows,
        "run_url": run_url(dag_id, run_id),
        "title": f"[Airflow] DEADLINE MISSED {dag_id}",
    }


def hitl_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    """What a human-in-the-loop request says: the DAG, task and run, the HITL subject and body, the options
    (and defaults), who is assigned, and the UI's required-action page as Airflow builds its link."""
    task = context["task"]
    ti = context.get("ti") or context.get("task_instance")
    dag_id = str(getattr(ti, "dag_id", None) or getattr(task, "dag_id", "?"))
    task_id = str(getattr(ti, "task_id", None) or getattr(task, "task_id", "?"))
    run_id = str(context.get("run_id") or getattr(ti, "run_id", "?"))
    options = [str(o) for o in (getattr(task, "options", None) or [])]
    defaults = [str(o) for o in (getattr(task, "defaults", None) or [])]
    assigned = [u for u in (getattr(task, "assigned_users", None) or []) if isinstance(u, Mapping)]
    rows = [("DAG", dag_id), ("Task", task_id), ("Run", run_id)]
    rows.append(("Options", ", ".join(options) + (" (choose one or more)" if getattr(task, "multiple", False) else "")))
    if defaults:
        rows.append(("Default", ", ".join(defaults) + " (taken if no one responds in time)"))
    if assigned:
        rows.append(("Assigned to", ", ".join(str(u.get("name") or u.get("id")) for u in assigned)))
    # Airflow's own URL of the page; with our base URL (``[api] base_url``, else Airflow's default), since
    # Airflow's builder raises "Not able to retrieve base_url" when the option is unset and the task fails.
    link = type(task).generate_link_to_ui_from_context(context=context, base_url=_base_url())
    return {
        "status": "INPUT REQUIRED",
        "color": "#1565c0",
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "subject": str(getattr(task, "subject", "") or ""),
        "body": str(getattr(task, "body", "") or "") or None,
        "options": options,
        "assigned": assigned,
        "rows": rows,
        "link": link,
        "title": f"[Airflow] INPUT REQUIRED {dag_id}.{task_id}",
    }
