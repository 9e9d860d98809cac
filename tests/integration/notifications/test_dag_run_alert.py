"""Issue 21 item 7: a DAG-level callback sends its own "DAG run FAILED" mail, never a task's "Try x of y"."""

from __future__ import annotations

import email
import email.policy
import logging
import runpy

from tests.conftest import DAGS

BOTH = """
from datetime import datetime
from airflow.sdk import DAG, task
from airflow_secure_mail import SecureEmailNotifier

alert = SecureEmailNotifier(to="oncall@example.com")
with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None, on_failure_callback=alert) as dag:
    @task(retries=0{task_callback})
    def broken():
        raise ValueError("upstream file missing")
    broken()
"""


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def raw_subject(data: bytes) -> bytes:
    """The Subject field as sent, unfolded as RFC 5322 says (CRLF removed, the folding space kept)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.lower().startswith(b"subject:"))
    field = [lines[start]]
    for line in lines[start + 1 :]:
        if line[:1] not in (b" ", b"\t"):
            break
        field.append(line)
    return b"".join(field)


def assert_subject(data: bytes, expected: str) -> None:
    """Decoded by a real parser exactly (no leading or double space) and, on the wire, plain ASCII."""
    assert _parsed(data)["Subject"] == expected
    assert raw_subject(data) == b"Subject: " + expected.encode("ascii")


def _run(dag_id: str, task_callback: bool):
    path = DAGS / f"{dag_id}.py"
    path.write_text(BOTH.format(dag_id=dag_id, task_callback=", on_failure_callback=alert" if task_callback else ""))
    run = runpy.run_path(str(path))["dag"].test()
    assert run.state == "failed"
    return run


def _run_mail_lines(dag_id: str, run_id: str) -> list[str]:
    from urllib.parse import quote

    return [
        f"DAG run FAILED: {dag_id}",
        f"DAG           {dag_id}",
        f"Run           {run_id}",
        "State         failed",
        "Reason        a task failed, so the run cannot succeed",
        "Failed task   broken (the last task to fail; the run's page lists every failed task)",
        f"Run: http://localhost:8080/dags/{dag_id}/runs/{quote(run_id, safe='')}",
    ]


def test_notifier_on_the_dag_and_the_task_sends_one_task_mail_and_one_distinct_run_mail(mail_env, airflow_db, caplog):
    caplog.set_level(logging.INFO, logger="airflow_secure_mail")
    run = _run("dag_and_task_alert", task_callback=True)
    assert len(mail_env.smtp.messages) == 2
    task_mail, run_mail = sorted(mail_env.smtp.messages, key=lambda m: b"DAG run" in raw_subject(m.data))
    assert_subject(task_mail.data, f"[Airflow] FAILED dag_and_task_alert.broken - {run.run_id}")
    assert_subject(run_mail.data, f"[Airflow] DAG run FAILED dag_and_task_alert - {run.run_id}")
    assert _parsed(task_mail.data)["Message-ID"] != _parsed(run_mail.data)["Message-ID"]
    task_text = _parsed(task_mail.data).get_body(("plain",)).get_content()
    assert "Error: ValueError: upstream file missing" in task_text and "Try           1 of 1" in task_text
    text = _parsed(run_mail.data).get_body(("plain",)).get_content()
    lines = text.splitlines()
    for line in _run_mail_lines("dag_and_task_alert", run.run_id):
        assert line in lines
    assert "Try" not in text and "Error" not in text and "task_failure" not in text
    html = _parsed(run_mail.data).get_body(("html",)).get_content()
    assert "Open the DAG run" in html and "a task failed, so the run cannot succeed" in html
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("alert mail sent to 1 recipient(s) for dag_and_task_alert.broken (<") for m in logged)
    assert any(
        m.startswith(f"alert mail sent to 1 recipient(s) for DAG run dag_and_task_alert {run.run_id}") for m in logged
    )


def test_notifier_on_the_dag_only_sends_one_run_mail(mail_env, airflow_db):
    run = _run("dag_only_alert", task_callback=False)
    [received] = mail_env.smtp.messages
    assert_subject(received.data, f"[Airflow] DAG run FAILED dag_only_alert - {run.run_id}")
    lines = _parsed(received.data).get_body(("plain",)).get_content().splitlines()
    for line in _run_mail_lines("dag_only_alert", run.run_id):
        assert line in lines


def test_a_run_context_without_a_task_still_says_what_happened(mail_env):
    """The scheduler drops ``ti`` for old task instances and a timed-out run may name none: no task row then."""
    from types import SimpleNamespace

    from airflow_secure_mail import SecureEmailNotifier

    context = {"dag": SimpleNamespace(dag_id="nightly"), "run_id": "scheduled__2026-11-27", "reason": "timed_out"}
    SecureEmailNotifier(to="oncall@example.com").notify(context)
    [received] = mail_env.smtp.messages
    assert_subject(received.data, "[Airflow] DAG run FAILED nightly - scheduled__2026-11-27")
    lines = _parsed(received.data).get_body(("plain",)).get_content().splitlines()
    assert "Reason        the run took longer than the DAG's dagrun_timeout and was stopped" in lines
    assert "State         failed" in lines
    assert not any(line.startswith(("Failed task", "Unfinished task", "Try")) for line in lines)


def test_a_subject_of_seventy_odd_characters_decodes_without_a_leading_space(mail_env):
    from airflow_secure_mail import SecureEmailNotifier

    subject = "[Airflow] FAILED both_alert.broken - manual__2026-12-08T00:19:16.287807+00:00"
    assert len(subject) == 77
    SecureEmailNotifier(to="oncall@example.com", subject=subject, text_content="x").notify({})
    assert_subject(mail_env.smtp.messages[0].data, subject)
