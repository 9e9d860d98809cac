"""A ``security`` setting that does not match what the port speaks fails at once and says which setting to use;
a port that says nothing at all is still reported (and retried) as a connection failure."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from airflow_secure_mail.errors import DeliveryError, TransportSecurityError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from tests.helpers import plain_message
from tests.integration.conftest import send_with


class SilentPort:
    """Accepts TCP connections and never sends a byte: no greeting, no TLS answer."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentPort]:
    port = SilentPort()
    yield port
    port.close()


def test_starttls_on_the_implicit_tls_port_says_set_security_tls_after_one_attempt(mail_env, api):
    port = mail_env.smtp.tls_port
    # retries=3 would make four 1 s greeting waits: the deadline of 3 s leaves room for one and its probe
    mail_env.set_smtp_conn(starttls=True, port=port, timeout=1, retries=3, retry_backoff=0.05, deadline=3)
    with pytest.raises(TransportSecurityError) as info:
        send_with(api, SecureSmtpHook(), plain_message())
    assert str(info.value) == (
        f"localhost:{port} sent no SMTP greeting: port {port} speaks implicit TLS: set security=tls "
        "(or use the STARTTLS port, usually 587)."
    )
    # The attempt's connection never finished a TLS handshake, so the catcher counts only the probe's:
    # one probe, hence one attempt (each retry would have probed again).
    assert mail_env.smtp.connections == 1
    assert mail_env.smtp.auth_attempts == [] and mail_env.smtp.messages == []


def test_tls_on_the_starttls_port_says_set_security_starttls_after_one_attempt(mail_env, api):
    port = mail_env.smtp.starttls_port
    mail_env.set_smtp_conn(starttls=False, port=port, timeout=1, retries=3, retry_backoff=0.05, deadline=3)
    with pytest.raises(TransportSecurityError) as info:
        send_with(api, SecureSmtpHook(), plain_message())
    assert str(info.value) == (
        f"localhost:{port} answered the TLS handshake in plain text: the port speaks plain SMTP first: "
        "set security=starttls (or use the implicit-TLS port, usually 465)."
    )
    assert mail_env.smtp.connections == 2  # the attempt and the probe
    assert mail_env.smtp.auth_attempts == [] and mail_env.smtp.messages == []


def test_connection_test_names_the_security_setting_too(mail_env):
    port = mail_env.smtp.tls_port
    mail_env.set_smtp_conn(starttls=True, port=port, timeout=1)
    ok, detail = SecureSmtpHook().test_connection()
    assert not ok
    assert detail == (
        f"localhost:{port} sent no SMTP greeting: port {port} speaks implicit TLS: set security=tls "
        "(or use the STARTTLS port, usually 587)."
    )


@pytest.mark.parametrize(("starttls", "probes"), [(True, 1), (False, 0)], ids=["starttls", "tls"])
def test_silent_port_is_still_a_connection_failure(mail_env, silent, starttls, probes):
    """No greeting and no TLS answer either: nothing says the setting is wrong, so the old message stands."""
    mail_env.set_smtp_conn(starttls=starttls, port=silent.port, timeout=1, retries=0)
    with pytest.raises(DeliveryError) as info:
        SecureSmtpHook().send(plain_message())
    assert str(info.value) == (
        f"cannot connect to localhost:{silent.port} (SMTPConnectTimeoutError): check host, port and network."
    )
    assert info.value.transient
    assert len(silent.accepted) == 1 + probes
