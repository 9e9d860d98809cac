"""transport/replies.py and transport/describe.py: what replies mean and how a session is described (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airflow_secure_mail.transport.describe import RENEW_WARNING_DAYS, certificate_expiry, describe_session
from airflow_secure_mail.transport.receipt import SessionInfo
from airflow_secure_mail.transport.replies import is_throttling, recipients_error, reply_error


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (421, "4.7.0 Too many messages, slow down"),
        (421, "4.7.28 Our system has detected an unusual rate of unsolicited mail"),
        (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"),
        (450, "4.2.1 The user you are trying to contact is receiving mail too quickly"),
        (454, "Throttling failure: Maximum sending rate exceeded."),
    ],
)
def test_throttling_replies_are_recognised(code, text):
    assert is_throttling(code, text)
    error = reply_error("relay:587", "MAIL", code, text)
    assert error.throttled and error.transient and error.code == code
    assert str(error) == f"relay:587 is throttling us at MAIL ({code} {text})."


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (421, "4.3.2 Service shutting down"),
        (450, "4.7.1 Greylisted, try again later"),
        (454, "4.7.0 TLS not available due to temporary reason"),
        (451, "4.3.0 Local error in processing"),
        (550, "5.7.1 Rate limit"),
        (421, ""),
    ],
)
def test_other_replies_are_not_throttling(code, text):
    assert not is_throttling(code, text)
    assert not reply_error("relay:587", "DATA", code, text).throttled


def test_every_recipient_throttled_is_a_throttled_refusal_naming_no_address():
    refused = {"a@example.com": (450, "4.2.1 slow down"), "bcc@example.com": (450, "4.2.1 slow down")}
    error = recipients_error(refused)
    assert error.throttled and error.refused == refused
    assert str(error) == (
        "every recipient was refused: 2 recipient(s), SMTP code(s) 450; the server is throttling us at RCPT"
    )


def test_reply_at_rcpt_keeps_only_the_status_code_not_the_address():
    error = reply_error("relay:587", "RCPT", 421, "4.7.0 <hidden-bcc@example.com> too many messages")
    assert error.throttled and str(error) == "relay:587 is throttling us at RCPT (421 4.7.0)."


def test_permanent_reply_is_neither_transient_nor_throttled():
    error = reply_error("relay:587", "DATA", 552, "5.3.4 Message too big")
    assert (error.transient, error.throttled, error.maybe_delivered) == (False, False, False)
    assert str(error) == "relay:587 answered 552 '5.3.4 Message too big' at DATA."


def _info(days: float) -> SessionInfo:
    return SessionInfo(
        tls_version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        cert_subject="commonName=localhost",
        cert_issuer="commonName=Test CA",
        cert_not_after=datetime.now(UTC) + timedelta(days=days, hours=1),
        auth_mechanisms=("PLAIN", "LOGIN"),
        size_limit=1000,
        authenticated_as="airflow",
    )


def test_certificate_expiring_soon_is_a_warning():
    expiry = certificate_expiry(_info(RENEW_WARNING_DAYS - 1))
    assert expiry is not None and expiry.days_left == RENEW_WARNING_DAYS - 1 and expiry.renew_soon
    assert describe_session(_info(3)) == (
        "TLSv1.3 TLS_AES_256_GCM_SHA384; cert commonName=localhost issued by commonName=Test CA; "
        "expires in 3 days (WARNING: renew soon); AUTH PLAIN,LOGIN; authenticated; SIZE 1000"
    )


def test_certificate_with_time_left_is_no_warning():
    expiry = certificate_expiry(_info(RENEW_WARNING_DAYS))
    assert expiry is not None and not expiry.renew_soon
    assert "expires in 90 days; AUTH" in describe_session(_info(90))


def test_session_without_certificate_has_no_expiry():
    assert certificate_expiry(SessionInfo()) is None
    assert describe_session(SessionInfo()) == "no TLS; AUTH none offered"
