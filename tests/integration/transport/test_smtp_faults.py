"""SmtpFaults: the catcher's injected transient failures, seen through the real client (SecureSmtpHook)."""

from __future__ import annotations

import pytest

from airflow_secure_mail.errors import DeliveryError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.testing.smtp import SmtpFaults

RCPT = "ops@example.com"


def _message(n: int) -> bytes:
    return (
        f"From: airflow@example.com\r\nTo: {RCPT}\r\nSubject: fault {n}\r\n"
        f"Message-ID: <fault-{n}@example.com>\r\n\r\nline one\r\nline two\r\n"
    ).encode()


def _send(n: int = 1) -> None:
    SecureSmtpHook().send(_message(n), sender="airflow@example.com", recipients=[RCPT])


@pytest.fixture
def no_retries(mail_env):  # type: ignore[no-untyped-def]
    mail_env.set_smtp_conn(retries=0)
    return mail_env


@pytest.mark.parametrize(("kind", "stage"), [("421_mail", "MAIL"), ("421_data", "DATA")])
def test_421_fault_fails_the_send_transiently_and_stores_nothing(no_retries, kind: str, stage: str) -> None:
    faults = no_retries.smtp.faults = SmtpFaults(rate=1.0, seed=1, kinds=(kind,))
    expected = rf"answered 421 '4\.4\.2 SmtpCatcher: injected transient fault, closing; try again later' at {stage}"
    with pytest.raises(DeliveryError, match=expected) as caught:
        _send()
    assert caught.value.code == 421
    assert caught.value.transient and not caught.value.maybe_delivered
    assert no_retries.smtp.messages == []
    assert dict(faults.injected) == {kind: 1}


def test_421_at_rcpt_refuses_the_recipient_transiently_and_stores_nothing(no_retries) -> None:
    faults = no_retries.smtp.faults = SmtpFaults(rate=1.0, seed=1, kinds=("421_rcpt",))
    with pytest.raises(DeliveryError, match=r"answered 421 '4\.4\.2' at RCPT; try again later") as caught:
        _send()
    assert caught.value.code == 421  # the server closed the session: the recipient is not refused, the send is
    assert caught.value.transient and not caught.value.maybe_delivered
    assert no_retries.smtp.messages == []
    assert dict(faults.injected) == {"421_rcpt": 1}


def test_drop_mid_data_loses_the_connection_and_stores_nothing(no_retries) -> None:
    faults = no_retries.smtp.faults = SmtpFaults(rate=1.0, seed=1, kinds=("drop_mid_data",))
    with pytest.raises(DeliveryError, match=r"connection to localhost:\d+ lost at DATA") as caught:
        _send()
    # The client cannot tell a drop before the final "." from one after it: it must assume maybe.
    assert caught.value.transient and caught.value.maybe_delivered
    assert no_retries.smtp.messages == []
    assert dict(faults.injected) == {"drop_mid_data": 1}


def test_zero_rate_injects_nothing(no_retries) -> None:
    faults = no_retries.smtp.faults = SmtpFaults(rate=0.0, seed=1)
    for n in range(5):
        _send(n)
    assert [m.data for m in no_retries.smtp.messages] == [_message(n) for n in range(5)]
    assert sum(faults.injected.values()) == 0


def test_retries_deliver_each_message_once_through_faults(mail_env) -> None:
    mail_env.set_smtp_conn(retries=10, retry_backoff=0.01)
    faults = mail_env.smtp.faults = SmtpFaults(rate=0.5, seed=7)
    for n in range(8):
        _send(n)
    assert [m.data for m in mail_env.smtp.messages] == [_message(n) for n in range(8)]
    assert sum(faults.injected.values()) > 0


def test_same_seed_draws_the_same_faults() -> None:
    first, second = SmtpFaults(rate=0.3, seed=42), SmtpFaults(rate=0.3, seed=42)
    assert [first.draw() for _ in range(200)] == [second.draw() for _ in range(200)]


@pytest.mark.parametrize(
    ("options", "error"),
    [({"rate": 1.5}, "rate must be between 0 and 1"), ({"kinds": ("421_helo",)}, "kinds must be some of")],
)
def test_bad_fault_options_are_refused(options: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SmtpFaults(**options)
