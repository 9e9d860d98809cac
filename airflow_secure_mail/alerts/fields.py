"""What a callback context says about an alert: status, DAG, task, run, try, the masked error, the log link.

The bottom of the alerts wing: it reads an Airflow callback context (duck-typed, no Airflow import but the
masker) and imports nothing of this package. Events are built from it, and the notifier's single-alert mail
(``notifications/email.py``, a floor above) renders it, so it lives down here rather than up there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
