"""Issue 4: operator, notifier and email backend, run for real (dag.test()) against the SMTP server."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
from types import SimpleNamespace

import pytest

from airflow_secure_mail.channel import MailChannel
from airflow_secure_mail.testing.browser import render
from tests.conftest import load_dag


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_failure_alert_dag_sends_default_alert(mail_env, airflow_db, monkeypatch):
    monkeypatch.setenv("SECURE_MAIL_ALERT_TO", "oncall@example.com")
    dag = load_dag("secure_mail_failure_alert.py", "secure_mail_failure_alert")
    run = dag.test()
    assert run.state == "failed"
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["oncall@example.com"]
    msg = _parsed(received.data)
    # the stdlib folds long subjects before an encoded word; clients unfold to the same words
    assert (
        " ".join(msg["Subject"].split()) == f"[Airflow] FAILED secure_mail_failure_alert.load_warehouse — {run.run_id}"
    )
    text = msg.get_body(("plain",)).get_content()
    for expected in (
        "DAG",
        "secure_mail_failure_alert",
        "load_warehouse",
        run.run_id,
        "Try",
        "1 of 1",
        "RuntimeError: warehouse load failed: 3 rows violate NOT NULL",
    ):
        assert expected in text
    assert "warehouse load failed" in msg.get_body(("html",)).get_content()


def test_weekly_report_dag_mails_csv_from_object_storage(mail_env, airflow_db, monkeypatch, tmp_path):
    monkeypatch.setenv("SECURE_MAIL_REPORT_BASE", f"file://{tmp_path}/reports")
    dag = load_dag("secure_mail_weekly_report.py", "secure_mail_weekly_report")
    run = dag.test()
    assert run.state == "success"
    [received] = mail_env.smtp.messages
    [part] = list(_parsed(received.data).iter_attachments())
    assert part.get_filename().startswith("weekly-") and part.get_filename().endswith(".csv")
    assert "north,1204,98211.40" in part.get_content()


def test_weekly_report_dag_on_s3(mail_env, airflow_db, monkeypatch, s3_conn, seaweed):
    monkeypatch.setenv("SECURE_MAIL_REPORT_BASE", "s3://mail-test/reports")
    monkeypatch.setenv("SECURE_MAIL_REPORT_CONN", s3_conn)
    dag = load_dag("secure_mail_weekly_report.py", "secure_mail_weekly_report")
    run = dag.test()
    assert run.state == "success"
    keys = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket="mail-test", Prefix="reports/")["Contents"]]
    [part] = list(_parsed(mail_env.smtp.messages[0].data).iter_attachments())
    assert f"reports/{part.get_filename()}" in keys


def test_per_recipient_dag_sends_separate_copies_over_one_session(mail_env, airflow_db, monkeypatch):
    monkeypatch.setenv("SECURE_MAIL_TEAM", "ana@example.com,bo@example.com,chen@example.com")
    dag = load_dag("secure_mail_per_recipient.py", "secure_mail_per_recipient")
    run = dag.test()
    assert run.state == "success"
    assert [m.rcpt_tos for m in mail_env.smtp.messages] == [
        ["ana@example.com"],
        ["bo@example.com"],
        ["chen@example.com"],
    ]
    for m in mail_env.smtp.messages:
        others = {"ana@example.com", "bo@example.com", "chen@example.com"} - set(m.rcpt_tos)
        assert not any(o.encode() in m.data for o in others)
    assert mail_env.smtp.connections == 1
    xcom = run.get_task_instance("personal_reports").xcom_pull(task_ids="personal_reports")
    assert len(xcom["message_ids"]) == 3 and set(xcom) >= {"accepted", "refused", "message_ids"}
    assert "Hello" not in repr(xcom)


TEMPLATED_DAG = """
from datetime import datetime
from airflow.sdk import DAG
from airflow_secure_mail import SecureEmailOperator

with DAG("templated_mail", start_date=datetime(2026, 1, 1), schedule=None) as dag:
    SecureEmailOperator(
        task_id="t",
        to="{{ params.who }}@example.com",
        subject="Run {{ run_id }} of {{ dag.dag_id }}",
        text_content="Logical date {{ ds }}",
        headers={"X-Run": "{{ run_id }}"},
        params={"who": "templated"},
    )
"""


def test_operator_templates_render_from_context(mail_env, airflow_db):
    import runpy

    from tests.conftest import DAGS

    path = DAGS / "templated_mail.py"
    path.write_text(TEMPLATED_DAG)
    dag = runpy.run_path(str(path))["dag"]
    run = dag.test()
    [received] = mail_env.smtp.messages
    msg = _parsed(received.data)
    assert received.rcpt_tos == ["templated@example.com"]
    assert msg["Subject"] == f"Run {run.run_id} of templated_mail"
    assert msg["X-Run"] == run.run_id
    assert "Logical date 20" in msg.get_body(("plain",)).get_content()


def test_retry_of_same_task_instance_keeps_message_id(mail_env):
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.pipeline import identity_seed, send_mail

    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)
    request = MailRequest(
        sender="airflow@example.com", to=("a@example.com",), subject="s", text="b", id_seed=identity_seed({"ti": ti})
    )
    first = send_mail(request, channel=MailChannel.for_conn()).receipts[0].message_id
    second = send_mail(request, channel=MailChannel.for_conn()).receipts[0].message_id
    assert first == second and first is not None


def _context(exc: Exception | None = None):
    ti = SimpleNamespace(
        dag_id="sales",
        task_id="load",
        run_id="scheduled__2026-11-27",
        map_index=-1,
        try_number=2,
        max_tries=3,
        hostname="worker-7",
        state="up_for_retry",
        log_url="http://airflow.example/log?x=1",
    )
    return {
        "ti": ti,
        "dag": SimpleNamespace(dag_id="sales"),
        "run_id": ti.run_id,
        "logical_date": "2026-11-27T00:00:00+00:00",
        "exception": exc,
    }


def test_async_notify_sends_retry_alert(mail_env):
    from airflow_secure_mail import SecureEmailNotifier

    notifier = SecureEmailNotifier(to="oncall@example.com")
    asyncio.run(notifier.async_notify(_context(ValueError("bad row\nsecond line"))))
    msg = _parsed(mail_env.smtp.messages[0].data)
    assert " ".join(msg["Subject"].split()) == "[Airflow] RETRY sales.load — scheduled__2026-11-27"
    text = msg.get_body(("plain",)).get_content()
    assert "2 of 4" in text and "worker-7" in text and "ValueError: bad row" in text and "second line" not in text


def test_alert_masks_registered_secrets_in_the_error(mail_env):
    from airflow_secure_mail import SecureEmailNotifier
    from airflow_secure_mail._masking import mask

    mask("s3cr3t-token-value", "token")
    SecureEmailNotifier(to="oncall@example.com").notify(_context(RuntimeError("login failed for s3cr3t-token-value")))
    assert b"s3cr3t-token-value" not in mail_env.smtp.messages[0].data
    assert "***" in _parsed(mail_env.smtp.messages[0].data).get_body(("plain",)).get_content()


def test_email_backend_sends_through_secure_path(mail_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW__EMAIL__EMAIL_BACKEND", "airflow_secure_mail.email_backend.send_email")
    monkeypatch.setenv("AIRFLOW__EMAIL__FROM_EMAIL", "alerts@example.com")
    from airflow.utils.email import send_email

    send_email("ops@example.com; dba@example.com", "legacy alert", "<p>email_on_failure</p>")
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["ops@example.com", "dba@example.com"]
    assert received.mail_from == "alerts@example.com"
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make sysdeps installs it)")
def test_alert_html_renders_in_headless_chromium(tmp_path):
    from airflow_secure_mail.notifications.email import render_alert

    _, text, html = render_alert(_context(RuntimeError("disk <full> & more")))
    assert "RuntimeError: disk <full> & more" in text  # plain text is not HTML-escaped
    page = tmp_path / "alert.html"
    page.write_text(html)
    dom = render(page, tmp_path / "alert.png", width=700, height=600, profile=tmp_path / "profile")
    for expected in (
        "RETRY",
        "sales.load",
        "scheduled__2026-11-27",
        "2 of 4",
        "worker-7",
        "disk &lt;full&gt; &amp; more",
        "Open the task log",
    ):
        assert expected in dom
    assert (tmp_path / "alert.png").stat().st_size > 1000


DAG_LEVEL_ALERT = """
from datetime import datetime
from airflow.sdk import DAG, task
from airflow_secure_mail import SecureEmailNotifier

with DAG("dag_level_alert", start_date=datetime(2026, 1, 1), schedule=None,
         on_failure_callback=SecureEmailNotifier(to="oncall@example.com")) as dag:
    @task(retries=0)
    def broken():
        raise ValueError("upstream file missing")
    broken()
"""


def test_dag_level_failure_callback_sends_alert(mail_env, airflow_db):
    import runpy

    from tests.conftest import DAGS

    path = DAGS / "dag_level_alert.py"
    path.write_text(DAG_LEVEL_ALERT)
    run = runpy.run_path(str(path))["dag"].test()
    assert run.state == "failed"
    [received] = mail_env.smtp.messages
    msg = _parsed(received.data)
    assert " ".join(msg["Subject"].split()).startswith("[Airflow] FAILED dag_level_alert.")
    assert run.run_id in msg.get_body(("plain",)).get_content()


def test_email_backend_dryrun_screens_but_sends_nothing(mail_env):
    from airflow_secure_mail.email_backend import send_email
    from airflow_secure_mail.errors import PolicyViolation

    send_email("ops@example.com", "dry", "<p>x</p>", dryrun=True, from_email="alerts@example.com")
    with pytest.raises(PolicyViolation):
        send_email(
            "ops@example.com", "dry\r\nBcc: x@evil.example", "<p>x</p>", dryrun=True, from_email="alerts@example.com"
        )
    assert mail_env.smtp.connections == 0
