"""SecureEmailOperator run for real (dag.test()) against the SMTP server."""

from __future__ import annotations

import email
import email.policy
from types import SimpleNamespace

from airflow_secure_mail.pipeline.channel import MailChannel
from tests.conftest import load_dag


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


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
    from airflow_secure_mail.pipeline.send import identity_seed, send_mail

    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1)
    request = MailRequest(
        sender="airflow@example.com", to=("a@example.com",), subject="s", text="b", id_seed=identity_seed({"ti": ti})
    )
    first = send_mail(request, channel=MailChannel.for_conn()).receipts[0].message_id
    second = send_mail(request, channel=MailChannel.for_conn()).receipts[0].message_id
    assert first == second and first is not None
