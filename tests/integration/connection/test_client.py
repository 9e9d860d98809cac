"""SmtpClient through the hook: the connection test, shared SSL contexts, the connection's policy, no secret in any failure."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.pipeline.channel import MailChannel
from tests.helpers import plain_message as _message


def test_connection_test_reports_tls_and_sends_nothing(mail_env):
    ok, detail = SecureSmtpHook().test_connection()
    assert ok
    assert "TLSv1.3" in detail and "AUTH LOGIN,OAUTHBEARER,PLAIN,XOAUTH2" in detail and "authenticated" in detail
    assert mail_env.smtp.messages == []


def test_connection_test_warns_on_expiring_certificate(mail_env, server_factory, ca):
    now = dt.datetime.now(dt.UTC)
    server = server_factory(
        server_context=ca.server_context(not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=5))
    )
    mail_env.set_smtp_conn(port=server.tls_port)
    ok, detail = SecureSmtpHook().test_connection()
    assert ok and "WARNING: renew soon" in detail


def test_canary_secrets_never_leak_at_any_failure_stage(mail_env, server_factory, ca, caplog, capfd):
    """Unique secrets in Vault; failures forced at every stage; no canary anywhere we can see."""
    import logging
    import secrets

    from airflow_secure_mail.errors import SecureMailError
    from airflow_secure_mail.testing.smtp import TestCA

    caplog.set_level(logging.DEBUG)
    canary = "CANARY-" + secrets.token_hex(12)
    mail_env.rotate(canary)
    errors: list[str] = []

    def attempt(**conn):
        mail_env.set_smtp_conn(**conn)
        try:
            SecureSmtpHook().send(_message())
        except SecureMailError as exc:
            errors.append(f"{exc!s} {exc!r} {exc.__cause__!r} {exc.__context__!r}")

    mail_env.smtp.users["airflow"] = "server-expects-other"  # 535 twice
    attempt()
    mail_env.smtp.users["airflow"] = canary
    rogue = server_factory(ca=TestCA())  # TLS failure
    attempt(port=rogue.tls_port)
    mail_env.smtp.script.data_replies = ["554 5.7.1 rejected"]  # delivery failure
    attempt()
    mail_env.smtp.script.data_replies = ["451 4.3.0 try again later"] * 2  # transient exhaustion
    attempt(retries=1)
    mail_env.smtp.script.greeting_failures = 1000  # a relay throttling at the greeting until the deadline
    attempt(deadline=2, retry_backoff=0.5)
    mail_env.smtp.script.greeting_failures = 0
    attempt(vault_path="smtp/missing")  # Vault failure
    assert len(errors) == 6
    out, err = capfd.readouterr()
    for text in [*errors, caplog.text, out, err]:
        assert canary not in text
        assert mail_env.bao.root_token not in text


def test_policy_defaults_come_from_the_connection(mail_env):
    from airflow_secure_mail.errors import PolicyViolation
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.pipeline.send import send_mail

    mail_env.set_smtp_conn(policy={"allowed_recipient_domains": ["example.org"], "max_recipients": 5})
    request = MailRequest(sender="airflow@example.com", to=("ops@example.com",), subject="s", text="b")
    with pytest.raises(PolicyViolation, match="allowed_recipient_domains"):
        send_mail(request, channel=MailChannel.for_conn())
    assert mail_env.smtp.connections == 0


def test_connection_test_reports_failure_without_raising(mail_env, server_factory):
    broken = server_factory(offer_starttls=False)
    mail_env.set_smtp_conn(starttls=True, port=broken.starttls_port)
    ok, detail = SecureSmtpHook().test_connection()
    assert not ok and "does not offer STARTTLS" in detail


@pytest.fixture
def context_builds(monkeypatch):
    """How many SSL contexts were built (the real ``TLSPolicy.ssl_context`` still runs)."""
    from airflow_secure_mail.transport.tls import TLSPolicy

    builds: list[str | None] = []
    real = TLSPolicy.ssl_context

    def counting(self):
        builds.append(self.ca_cert)
        return real(self)

    monkeypatch.setattr(TLSPolicy, "ssl_context", counting)
    return builds


def test_sessions_of_one_connection_share_one_ssl_context(mail_env, context_builds, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(mail_env.smtp.ca.pem)
    mail_env.set_smtp_conn(ca_cert=str(ca))
    hook = SecureSmtpHook()
    hook.send(_message())
    hook.send(_message())
    SecureSmtpHook().send_many([_message(f"r{n}@example.com") for n in range(6)], concurrency=3)
    assert len(mail_env.smtp.messages) == 8 and mail_env.smtp.connections >= 3
    assert context_builds == [str(ca)]


def test_a_rewritten_ca_file_gives_a_new_ssl_context(mail_env, context_builds, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(mail_env.smtp.ca.pem)
    mail_env.set_smtp_conn(ca_cert=str(ca))
    SecureSmtpHook().send(_message())
    ca.write_text(mail_env.smtp.ca.pem + mail_env.smtp.ca.pem)  # rotation: a bundle with the new CA beside
    SecureSmtpHook().send(_message())
    SecureSmtpHook().send(_message())
    assert context_builds == [str(ca), str(ca)] and len(mail_env.smtp.messages) == 3


def test_new_pem_text_gives_a_new_ssl_context(mail_env, context_builds):
    SecureSmtpHook().send(_message())
    rotated = (mail_env.smtp.ca.pem + mail_env.smtp.ca.pem).strip()  # a bundle: the new CA beside the old
    mail_env.set_smtp_conn(ca_cert=rotated)
    SecureSmtpHook().send(_message())
    SecureSmtpHook().send(_message())
    assert context_builds[-1] == rotated and context_builds.count(rotated) == 1
    assert len(mail_env.smtp.messages) == 3
