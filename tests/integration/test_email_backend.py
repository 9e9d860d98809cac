"""The legacy ``[email] email_backend`` path: screened and sent through the pipeline."""

from __future__ import annotations

import pytest


def test_email_backend_sends_through_secure_path(mail_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW__EMAIL__EMAIL_BACKEND", "airflow_secure_mail.email_backend.send_email")
    monkeypatch.setenv("AIRFLOW__EMAIL__FROM_EMAIL", "alerts@example.com")
    from airflow.utils.email import send_email

    send_email("ops@example.com; dba@example.com", "legacy alert", "<p>email_on_failure</p>")
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["ops@example.com", "dba@example.com"]
    assert received.mail_from == "alerts@example.com"
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")
    # email_on_failure mail is automated: out-of-office replies must not loop back (RFC 3834)
    assert b"\r\nAuto-Submitted: auto-generated\r\n" in received.data
    assert b"\r\nX-Auto-Response-Suppress: All\r\n" in received.data


def test_email_backend_dryrun_screens_but_sends_nothing(mail_env):
    from airflow_secure_mail.email_backend import send_email
    from airflow_secure_mail.errors import PolicyViolation

    send_email("ops@example.com", "dry", "<p>x</p>", dryrun=True, from_email="alerts@example.com")
    with pytest.raises(PolicyViolation, match="subject contains a control character"):
        send_email(
            "ops@example.com", "dry\r\nBcc: x@evil.example", "<p>x</p>", dryrun=True, from_email="alerts@example.com"
        )
    assert mail_env.smtp.connections == 0


def test_email_backend_honours_the_connections_allow_special_use_domains(mail_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW__EMAIL__EMAIL_BACKEND", "airflow_secure_mail.email_backend.send_email")
    monkeypatch.setenv("AIRFLOW__EMAIL__FROM_EMAIL", "airflow@airflow.internal")
    from airflow.utils.email import send_email

    from airflow_secure_mail.errors import PolicyViolation

    with pytest.raises(PolicyViolation, match="allow_special_use_domains=True") as info:
        send_email("ops@relay.internal", "alert", "<p>x</p>")
    assert info.value.rule == "special_use_domain" and mail_env.smtp.connections == 0
    mail_env.set_smtp_conn(policy={"allow_special_use_domains": True})
    send_email("ops@relay.internal", "alert", "<p>x</p>")
    [received] = mail_env.smtp.messages
    assert (received.mail_from, received.rcpt_tos) == ("airflow@airflow.internal", ["ops@relay.internal"])
