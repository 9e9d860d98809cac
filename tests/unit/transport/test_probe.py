"""transport/probe.py: which connect failures lead to a probe (pure; the probes themselves run against servers in
tests/integration/transport/test_security_mode.py)."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import pytest

from airflow_secure_mail.transport.probe import _no_greeting, _not_tls, security_mismatch
from airflow_secure_mail.transport.tls import TLSPolicy


def _caused(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def _ssl_error(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] ({reason.lower()})")
    error.reason = reason
    return error


def test_greeting_timeout_after_tcp_connected_is_a_missing_greeting():
    exc = _caused(
        aiosmtplib.SMTPConnectTimeoutError("Timed out waiting for server ready message"),
        aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"),
    )
    assert _no_greeting(exc)


def test_tcp_connect_timeout_is_not_a_missing_greeting():
    exc = _caused(aiosmtplib.SMTPConnectTimeoutError("Timed out connecting to host on port 465"), TimeoutError())
    assert not _no_greeting(exc)


@pytest.mark.parametrize(("reason", "not_tls"), [("WRONG_VERSION_NUMBER", True), ("CERTIFICATE_VERIFY_FAILED", False)])
def test_only_bytes_that_are_not_tls_count_as_a_plain_port(reason, not_tls):
    exc = _caused(aiosmtplib.SMTPConnectError("Error connecting to host on port 587"), _ssl_error(reason))
    assert _not_tls(exc) is not_tls


def test_a_refused_connection_probes_nothing():
    """Neither a missing greeting nor a plain answer: no probe, no claim about the setting."""
    policy = TLSPolicy(host="localhost", port=1, security="starttls")
    exc = _caused(aiosmtplib.SMTPConnectError("Error connecting"), ConnectionRefusedError())
    assert asyncio.run(security_mismatch(exc, policy, None, 1.0)) is None
