"""What a send reports to StatsD, against the TLS catcher and OpenBao: sent, recipients, latency, the relay's
certificate, throttling, retries, Vault errors by kind."""

from __future__ import annotations

import json
import socket

import pytest

from airflow_secure_mail.errors import DeliveryError, VaultSecretError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.transport.describe import certificate_expiry
from tests.helpers import plain_message

P = "airflow.secure_mail."


def test_a_send_counts_the_copy_its_recipients_latency_and_the_relay_certificate(mail_env, statsd):
    mail_env.smtp.script.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    with pytest.raises(DeliveryError, match="1 of 3 recipients refused"):
        SecureSmtpHook().send(plain_message("ops@example.com", "dev@example.com", "gone@example.com"))
    assert statsd.total(P + "sent") == 1
    assert statsd.total(P + "recipients.accepted") == 2
    assert statsd.total(P + "recipients.refused") == 1
    assert statsd.total(P + "recipients") == 3
    [latency] = statsd.values(P + "delivery_latency", "ms")
    assert latency > 0
    days = statsd.values(P + "relay_cert_days_left.localhost", "g")
    assert days and days == statsd.values(P + "relay_cert_days_left", "g")
    assert statsd.total(P + "throttled") == 0 and statsd.total(P + "retried") == 0


def test_the_certificate_gauge_is_the_days_the_session_saw(mail_env, statsd):
    import asyncio

    info = asyncio.run(SecureSmtpHook().client.info())
    expiry = certificate_expiry(info)
    assert expiry is not None
    assert statsd.values(P + "relay_cert_days_left.localhost", "g") == [expiry.days_left]


def test_a_transient_failure_retried_is_counted_once(mail_env, statsd):
    mail_env.smtp.script.data_replies = ["451 4.3.0 try again later"]
    receipt = SecureSmtpHook().send(plain_message())
    assert receipt.attempts == 2
    assert statsd.total(P + "retried") == 1
    assert statsd.total(P + "throttled") == 0
    assert statsd.total(P + "sent") == 1


def test_a_relay_asking_to_slow_down_is_throttled_not_retried(mail_env, statsd):
    mail_env.smtp.script.data_replies = ["454 4.7.0 Throttling: slow down"]
    receipt = SecureSmtpHook().send(plain_message())
    assert receipt.attempts == 2
    assert statsd.total(P + "throttled") == 1
    assert statsd.total(P + "retried") == 0


def test_retries_given_up_count_every_retry_and_no_copy_sent(mail_env, statsd):
    mail_env.smtp.script.data_replies = ["451 4.3.0 try again later"] * 10
    mail_env.set_smtp_conn(retries=2, retry_backoff=0.01)
    with pytest.raises(DeliveryError):
        SecureSmtpHook().send(plain_message())
    assert statsd.total(P + "retried") == 2
    assert statsd.total(P + "sent") == 0
    assert statsd.values(P + "delivery_latency", "ms") == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_vault_unreachable_is_counted_as_unreachable(mail_env, statsd):
    conn = dict(mail_env.bao.connection_uri(), port=_closed_port())
    mail_env.monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", json.dumps(conn))
    with pytest.raises(VaultSecretError):
        SecureSmtpHook().send(plain_message())
    assert statsd.total(P + "vault_errors.unreachable") >= 1
    assert statsd.total(P + "vault_errors") == statsd.total(P + "vault_errors.unreachable")
    assert mail_env.smtp.connections == 0


def test_vault_denying_the_token_is_counted_once_per_read_as_denied(mail_env, statsd):
    """Two reads are denied: the incident freeze switch (the send goes on, never known) and the credentials."""
    conn = dict(mail_env.bao.connection_uri(), password="s.not-a-token")
    mail_env.monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", json.dumps(conn))
    with pytest.raises(VaultSecretError):
        SecureSmtpHook().send(plain_message())
    assert statsd.total(P + "vault_errors.denied") == 2
    assert statsd.total(P + "vault_errors") == 2


def test_the_smtp_secret_missing_from_vault_is_counted_as_missing(mail_env, statsd):
    mail_env.set_smtp_conn(vault_path="smtp/not-written-" + mail_env.secret_path.rsplit("-", 1)[-1])
    with pytest.raises(VaultSecretError, match="no secret at"):
        SecureSmtpHook().send(plain_message())
    assert statsd.total(P + "vault_errors.missing") == 1
    assert statsd.total(P + "vault_errors") == 1


def test_an_absent_recipient_key_is_no_vault_error(mail_env, statsd):
    """Reading a secret that may be absent (none stored) is an answer, not a failure to count."""
    from airflow_secure_mail.vault import vault_for

    with pytest.raises(VaultSecretError) as info:
        vault_for().read("pgp/nobody-" + mail_env.secret_path.rsplit("-", 1)[-1])
    assert info.value.missing
    assert statsd.total(P + "vault_errors") == 0
