"""callback_scope tells the four kinds of callback context apart (issue 22)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from airflow_secure_mail.alerts.fields import DAG_RUN, DEADLINE, HITL, TASK, callback_scope, deadline_fields


class _Hitl:
    """Duck-typed like Airflow's HITL operators (they alone have this static method)."""

    @staticmethod
    def generate_link_to_ui_from_context(*, context, base_url=None):  # type: ignore[no-untyped-def]
        return f"{base_url}required_actions"


def _ti(state: str) -> SimpleNamespace:
    return SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1, state=state)


def test_each_kind_of_context():
    deadline = {"dag_run": {"dag_id": "d", "dag_run_id": "r"}, "deadline": {"id": "x", "deadline_time": None}}
    assert callback_scope(deadline) == DEADLINE
    assert callback_scope({"reason": "task_failure", "ti": _ti("failed")}) == DAG_RUN
    assert callback_scope({"ti": _ti("failed")}) == TASK
    assert callback_scope({"ti": _ti("running"), "task": _Hitl()}) == HITL
    # the same notifier as the HITL task's failure callback alerts, it does not ask for input again
    assert callback_scope({"ti": _ti("failed"), "task": _Hitl(), "exception": ValueError("x")}) == TASK
    assert callback_scope({"ti": _ti("running"), "task": object()}) == TASK


def test_deadline_fields_read_only_the_stored_context():
    due = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
    context = {
        "dag_run": {
            "dag_id": "sales",
            "dag_run_id": "scheduled__2026-12-08",
            "state": "running",
            "start_date": "2026-12-08T00:30:00+00:00",
            "last_scheduling_decision": "2026-12-08T01:04:05+00:00",
        },
        "deadline": {"id": "7f", "deadline_time": due},
    }
    fields = deadline_fields(context)
    assert fields["rows"] == [
        ("DAG", "sales"),
        ("Run", "scheduled__2026-12-08"),
        ("Deadline", "2026-12-08 01:00:00 UTC"),
        ("Run state", "running"),
        ("Started", "2026-12-08 00:30:00 UTC"),
        ("Late by", "4m 05s (when the scheduler found the deadline missed)"),
        ("Deadline id", "7f"),
    ]
    assert fields["run_url"] == "http://localhost:8080/dags/sales/runs/scheduled__2026-12-08"
    assert deadline_fields(context) == fields  # no clock: a re-run renders the same mail
