"""The catch-all through real DAG runs (dag.test() runs the worker's task runner in this process)."""

from __future__ import annotations

import email
import email.policy
import runpy

import pytest

from tests.conftest import DAGS

DAG_FILE = """
from datetime import datetime
from airflow.sdk import DAG, task
from airflow_secure_mail import SecureEmailNotifier

own = SecureEmailNotifier(to="owner@example.com")

with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None{dag_kw}) as dag:
    @task(retries=0{task_kw})
    def load() -> None:
        raise RuntimeError("warehouse unreachable")

    load()
"""


def _dag(dag_id: str, *, dag_kw: str = "", task_kw: str = ""):
    path = DAGS / f"{dag_id}.py"
    path.write_text(DAG_FILE.format(dag_id=dag_id, dag_kw=dag_kw, task_kw=task_kw))
    return runpy.run_path(str(path))["dag"]


@pytest.fixture
def registered(listener, monkeypatch):
    """The listener with the catch-all on, registered with the task runner's listener manager."""
    from airflow.sdk.listener import get_listener_manager

    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_CATCH_ALL", "true")
    manager = get_listener_manager()
    manager.add_listener(listener)
    yield listener
    manager.pm.unregister(listener)


@pytest.fixture
def catch_all(listener, monkeypatch):
    """The listener with the catch-all on, called directly as the scheduler calls it."""
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_CATCH_ALL", "true")
    return listener


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_a_dag_with_no_callback_fails_into_one_listener_mail(mail_env, airflow_db, registered):
    run = _dag("catch_all_plain").test()
    assert run.state == "failed"
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["oncall@example.com"]
    msg = _parsed(received.data)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert " ".join(msg["Subject"].split()).startswith("[Airflow] 1 failure in 1 DAG since ")
    text = msg.get_body(("plain",)).get_content()
    assert "catch_all_plain.load" in text
    assert "RuntimeError: warehouse unreachable" in text


@pytest.mark.parametrize(
    ("dag_kw", "task_kw"),
    [(", on_failure_callback=own", ""), ("", ", on_failure_callback=own")],
    ids=["dag-callback", "task-callback"],
)
def test_a_dag_with_its_own_callback_gets_only_its_own_mail(mail_env, airflow_db, registered, dag_kw, task_kw):
    run = _dag(f"catch_all_own_{'dag' if dag_kw else 'task'}", dag_kw=dag_kw, task_kw=task_kw).test()
    assert run.state == "failed"
    assert [m.rcpt_tos for m in mail_env.smtp.messages] == [["owner@example.com"]]


def test_email_on_failure_counts_as_its_own_alert(mail_env, airflow_db, registered):
    run = _dag("catch_all_email", task_kw=", email='team@example.com', email_on_failure=True").test()
    assert run.state == "failed"
    assert all(m.rcpt_tos != ["oncall@example.com"] for m in mail_env.smtp.messages)


def test_a_storm_of_failures_stays_one_mail(mail_env, airflow_db, registered):
    path = DAGS / "catch_all_storm.py"
    path.write_text(
        DAG_FILE.replace(
            "    load()\n",
            "    load.override(task_id='a')()\n    load.override(task_id='b')()\n    load.override(task_id='c')()\n",
        ).format(dag_id="catch_all_storm", dag_kw="", task_kw="")
    )
    run = runpy.run_path(str(path))["dag"].test()
    assert run.state == "failed"
    assert len(mail_env.smtp.messages) == 1  # the next two wait for the digest's group interval


def test_catch_all_off_sends_nothing(mail_env, airflow_db, listener, monkeypatch):
    from airflow.sdk.listener import get_listener_manager

    manager = get_listener_manager()
    manager.add_listener(listener)
    try:
        run = _dag("catch_all_off").test()
    finally:
        manager.pm.unregister(listener)
    assert run.state == "failed"
    assert mail_env.smtp.messages == []


def test_a_retry_is_counted_not_mailed(mail_env, airflow_db, registered):
    path = DAGS / "catch_all_retry.py"
    path.write_text(
        DAG_FILE.replace("retries=0{task_kw}", "retries=1, retry_delay=0").format(dag_id="catch_all_retry", dag_kw="")
    )
    run = runpy.run_path(str(path))["dag"].test()
    assert run.state == "failed"
    [received] = mail_env.smtp.messages  # the retry alone sent nothing; the final failure is the one mail
    text = _parsed(received.data).get_body(("plain",)).get_content()
    assert "catch_all_retry.load" in text


def _failed_run(dag_id: str, *, own_callback: bool = False):
    """A DagRun as the scheduler hands it to on_dag_run_failed: the ORM row with its serialized DAG attached."""
    from types import SimpleNamespace

    from airflow.models.dagrun import DagRun

    run = DagRun(dag_id=dag_id, run_id=f"scheduled__{dag_id}", run_type="scheduled")
    run.dag = SimpleNamespace(dag_id=dag_id, has_on_failure_callback=own_callback)
    return run


@pytest.mark.parametrize("reason", ["timed_out", "all_tasks_deadlocked"])
def test_a_run_that_fails_with_no_failed_task_is_one_mail_from_the_listeners_thread(mail_env, catch_all, reason):
    listener = catch_all
    listener.on_dag_run_failed(dag_run=_failed_run("slow_dag"), msg=reason)
    listener.drain()
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["oncall@example.com"]
    text = _parsed(received.data).get_body(("plain",)).get_content()
    assert "slow_dag" in text and "scheduled__slow_dag" in text


@pytest.mark.parametrize(
    ("msg", "own"),
    [
        ("task_failure", False),  # the worker's on_task_instance_failed covered it task by task
        ("Dag Run's state was manually set to `failed`.", False),  # the API server, a user's decision
        ("timed_out", True),  # the DAG's own on_failure_callback runs for it
    ],
)
def test_runs_the_listener_leaves_alone(mail_env, catch_all, msg, own):
    listener = catch_all
    listener.on_dag_run_failed(dag_run=_failed_run("other_dag", own_callback=own), msg=msg)
    listener.drain()
    assert mail_env.smtp.messages == []
