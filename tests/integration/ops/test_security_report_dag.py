"""The example DAG ``secure_mail_security_report`` runs as triggered (no logical date) and mails the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

from airflow_secure_mail.archive.store import MailArchive
from tests.conftest import load_dag
from tests.integration.ops.seed import seed


def test_security_report_dag_mails_the_summary_and_the_page(mail_env, airflow_db, monkeypatch, tmp_path):
    url = f"file://{tmp_path}/archive"
    seeded = seed(MailArchive(url), 40, end=datetime.now(UTC) - timedelta(minutes=5), days=3, refusals=6)
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE", url)
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE_KEY", "")
    monkeypatch.setenv("SECURE_MAIL_REPORT_BASE", f"file://{tmp_path}/reports")
    monkeypatch.setenv("SECURE_MAIL_SECURITY_REPORT_TO", "sec@example.com")
    run = load_dag("secure_mail_security_report.py", "secure_mail_security_report").test(logical_date=None)
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    [received] = mail_env.smtp.messages
    message = message_from_bytes(received.data, policy=policy.default)
    assert received.rcpt_tos == ["sec@example.com"]
    assert str(message["Subject"]) == f"Mail security report, week to {run.run_after:%Y-%m-%d}"
    text = message.get_body(("plain",)).get_content()
    assert f"40 messages to {sum(len(m.recipients) for m in seeded.records)} recipients" in text
    assert "6 refused by the screens" in text
    assert "secure_smtp_default: relay certificate " in text and " days left" in text
    [page] = [p for p in message.iter_attachments()]
    assert page.get_content_type() == "text/html"
    assert page.get_filename() == f"security-{run.run_after:%Y-%m-%d}.html"
    assert 'data-figure="messages">40<' in page.get_content()
