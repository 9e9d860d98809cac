"""Issue 2: the first secure path, end to end against real servers."""

from __future__ import annotations

import logging
from email.message import EmailMessage

import pytest

from airflow_secure_mail.errors import TransportSecurityError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.testing.smtp import SmtpCatcher, TestCA
from tests.conftest import load_dag


def _message(to: str = "ops@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "airflow@example.com"
    msg["To"] = to
    msg["Subject"] = "foundation"
    msg.set_content("hello over TLS")
    return msg


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit_tls", "starttls"])
def test_hook_send_delivers_over_tls_with_vault_credentials(mail_env, starttls):
    mail_env.set_smtp_conn(starttls=starttls)
    receipt = SecureSmtpHook().send(_message())
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["ops@example.com"]
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")
    assert received.auth_identity == "airflow"
    assert b"hello over TLS" in received.data
    assert receipt.accepted == ("ops@example.com",)
    assert receipt.tls_version == received.tls_version


def test_dag_run_delivers_over_tls(mail_env, airflow_db, monkeypatch):
    monkeypatch.setenv("SECURE_MAIL_DEMO_TO", "dag-reader@example.com")
    dag = load_dag("secure_mail_hello.py", "secure_mail_hello")
    dr = dag.test()
    assert dr.state == "success"
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["dag-reader@example.com"]
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")
    assert b"Hello from secure_mail_hello" in received.data


def test_password_rotation_in_vault_is_picked_up_without_restart(mail_env):
    hook = SecureSmtpHook()
    hook.send(_message())
    mail_env.rotate("rotated-" + "x" * 20)
    hook.send(_message())
    assert len(mail_env.smtp.messages) == 2
    assert [a.ok for a in mail_env.smtp.auth_attempts] == [True, False, True]


def test_server_without_starttls_gets_no_auth_and_no_message(mail_env, ca):
    broken = SmtpCatcher(ca, users={"airflow": mail_env.password}, offer_starttls=False).start()
    try:
        mail_env.set_smtp_conn(starttls=True, port=broken.starttls_port)
        with pytest.raises(TransportSecurityError, match="does not offer STARTTLS, and TLS is required"):
            SecureSmtpHook().send(_message())
        assert broken.auth_attempts == []
        assert broken.messages == []
    finally:
        broken.stop()


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit_tls", "starttls"])
def test_certificate_from_other_ca_gets_no_auth_and_no_message(mail_env, starttls):
    rogue = SmtpCatcher(TestCA(), users={"airflow": mail_env.password}).start()
    try:
        mail_env.set_smtp_conn(starttls=starttls, port=rogue.port(starttls=starttls))
        with pytest.raises(TransportSecurityError, match="failed verification"):
            SecureSmtpHook().send(_message())
        assert rogue.auth_attempts == []
        assert rogue.messages == []
    finally:
        rogue.stop()


def test_secrets_never_in_logs_or_xcom(mail_env, airflow_db, caplog, capfd):
    from pathlib import Path

    caplog.set_level(logging.DEBUG)
    dag = load_dag("secure_mail_hello.py", "secure_mail_hello")
    dr = dag.test()
    assert dr.state == "success"
    out, err = capfd.readouterr()
    xcom = dr.get_task_instance("send_hello").xcom_pull(task_ids="send_hello")
    assert xcom["accepted"] == ["data-team@example.com"]
    assert xcom["tls_version"] in ("TLSv1.2", "TLSv1.3")
    log_files = "".join(p.read_text(errors="replace") for p in Path(airflow_db, "logs").rglob("*") if p.is_file())
    captured = "\n".join([caplog.text, out, err, repr(xcom), log_files])
    assert "send_hello" in captured  # the task's log really was captured
    assert mail_env.password not in captured
    assert mail_env.bao.root_token not in captured
