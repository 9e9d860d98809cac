"""Transport security against real and deliberately broken servers: TLS refused before AUTH, nothing sent."""

from __future__ import annotations

import datetime as dt
import ssl
import time

import pytest

from airflow_secure_mail.errors import (
    ConfigurationError,
    DeliveryError,
    TransportSecurityError,
)
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from tests.helpers import plain_message as _message
from tests.integration.conftest import send_with as _send


def test_starttls_missing_refuses_before_auth(mail_env, server_factory, api):
    broken = server_factory(offer_starttls=False)
    mail_env.set_smtp_conn(starttls=True, port=broken.starttls_port)
    with pytest.raises(TransportSecurityError, match="does not offer STARTTLS"):
        _send(api, SecureSmtpHook(), _message())
    assert broken.auth_attempts == [] and broken.messages == []


def test_starttls_refused_by_server_refuses_before_auth(mail_env, server_factory, api):
    server = server_factory()
    server.script.refuse_starttls = True
    mail_env.set_smtp_conn(starttls=True, port=server.starttls_port)
    with pytest.raises(TransportSecurityError, match="refused STARTTLS"):
        _send(api, SecureSmtpHook(), _message())
    assert server.auth_attempts == [] and server.messages == []


def test_wrong_host_name_refused_before_auth(mail_env, server_factory, ca):
    server = server_factory(server_context=ca.server_context("mail.example.org"))
    mail_env.set_smtp_conn(port=server.tls_port)
    with pytest.raises(TransportSecurityError, match="failed verification"):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == [] and server.messages == []


def test_expired_certificate_refused_before_auth(mail_env, server_factory, ca):
    now = dt.datetime.now(dt.UTC)
    ctx = ca.server_context(not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    server = server_factory(server_context=ctx)
    mail_env.set_smtp_conn(starttls=True, port=server.starttls_port)
    with pytest.raises(TransportSecurityError, match="expired"):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == [] and server.messages == []


def test_old_tls_only_server_refused_before_auth(mail_env, server_factory, ca):
    server = server_factory(server_context=ca.server_context(max_version=ssl.TLSVersion.TLSv1_1))
    mail_env.set_smtp_conn(starttls=True, port=server.starttls_port)
    with pytest.raises(TransportSecurityError, match="TLS handshake"):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == [] and server.messages == []


def test_tls13_minimum_is_enforced(mail_env, server_factory, ca):
    server = server_factory(server_context=ca.server_context(max_version=ssl.TLSVersion.TLSv1_2))
    mail_env.set_smtp_conn(port=server.tls_port, min_tls_version="TLSv1.3")
    with pytest.raises(
        TransportSecurityError,
        match=r"TLS handshake with localhost:\d+ was aborted by the server; it must support TLSv1.3 or newer",
    ):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == []


def test_plaintext_for_non_loopback_host_is_refused(mail_env):
    mail_env.set_smtp_conn(host="smtp.example.com", port=25, security="none")
    with pytest.raises(ConfigurationError, match="plaintext is allowed only on loopback"):
        SecureSmtpHook().send(_message())


def test_auth_is_plain_or_login_only_over_tls(mail_env):
    SecureSmtpHook().send(_message())
    assert [(a.mechanism, a.tls) for a in mail_env.smtp.auth_attempts] == [("PLAIN", True)]


def test_mutual_tls_with_client_certificate_from_vault(mail_env, server_factory, ca):
    from airflow_secure_mail.errors import SecureMailError

    server = server_factory(server_context=ca.requiring_client_cert(ca.server_context()))
    cert, key = ca.client_pair()
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(path="smtp/mtls", secret={"cert": cert, "key": key})
    mail_env.set_smtp_conn(port=server.tls_port)
    with pytest.raises(SecureMailError, match=r"cannot connect to localhost:\d+ \(SMTPConnectError\)"):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == [] and server.messages == []
    mail_env.set_smtp_conn(
        port=server.tls_port, client_cert="vault:smtp/mtls#cert", client_key="vault:smtp/mtls#key", retries=0
    )
    SecureSmtpHook().send(_message())
    assert len(server.messages) == 1


def test_stuck_server_times_out_instead_of_hanging(mail_env):
    """A server that accepts the TCP connection and never says a word."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    try:
        mail_env.set_smtp_conn(port=listener.getsockname()[1], timeout=1, retries=1, deadline=10)
        start = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            SecureSmtpHook().send(_message())
        assert time.monotonic() - start < 8
        assert info.value.transient
    finally:
        listener.close()
