"""Transient failures retried on a fresh connection, permanent ones not; refused recipients named."""

from __future__ import annotations

import time

import pytest

from airflow_secure_mail.errors import (
    DeliveryError,
)
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.pipeline.channel import MailChannel
from tests.helpers import plain_message as _message
from tests.integration.conftest import send_with as _send


def test_421_at_greeting_then_success(mail_env, api):
    mail_env.smtp.script.greeting_failures = 1
    receipt = _send(api, SecureSmtpHook(), _message())
    assert receipt.attempts == 2
    assert mail_env.smtp.connections == 2
    assert len(mail_env.smtp.messages) == 1


def test_451_after_data_then_success_on_new_connection(mail_env, api):
    mail_env.smtp.script.data_replies = ["451 4.3.0 try again later"]
    receipt = _send(api, SecureSmtpHook(), _message())
    assert receipt.attempts == 2
    assert mail_env.smtp.connections == 2
    assert len(mail_env.smtp.messages) == 1


def test_dropped_connection_mid_data_is_retried(mail_env):
    mail_env.smtp.script.drop_in_data = 1
    receipt = SecureSmtpHook().send(_message())
    assert receipt.attempts == 2
    assert len(mail_env.smtp.messages) == 1


def test_persistent_transient_failure_gives_up_after_retries(mail_env):
    mail_env.smtp.script.data_replies = ["451 4.3.0 try again later"] * 10
    mail_env.set_smtp_conn(retries=2)
    with pytest.raises(DeliveryError) as info:
        SecureSmtpHook().send(_message())
    assert info.value.transient and not info.value.throttled and info.value.code == 451
    assert mail_env.smtp.connections == 3 and mail_env.smtp.messages == []


def test_busy_greetings_are_throttling_retried_with_backoff_until_the_deadline(mail_env):
    """A 421 greeting (too busy) is the relay asking us to slow down: not a failure that uses up ``retries``."""
    mail_env.set_smtp_conn(retries=2, retry_backoff=1.0, deadline=4)
    # A first send logs in to Vault and builds the TLS context: `deadline` bounds the delivery batch (its Vault
    # reads included), and on a loaded worker that set-up alone has taken over 2 s before the batch began.
    SecureSmtpHook().send(_message())
    mail_env.smtp.script.greeting_failures = 1000
    connected_before = mail_env.smtp.connections
    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        SecureSmtpHook().send(_message())
    assert time.monotonic() - started < 4 + 2
    assert info.value.throttled and info.value.transient and info.value.code == 421
    assert "the relay was still throttling when the deadline of 4s ran out" in str(info.value)
    # Connects at 0 s, then after pauses of 1-2 s and 2-3 s (the next pause ends after the deadline).
    assert 2 <= mail_env.smtp.connections - connected_before <= 4 and len(mail_env.smtp.messages) == 1


def test_552_is_permanent_and_not_retried(mail_env, api):
    mail_env.smtp.script.data_replies = ["552 5.3.4 message too big for policy"]
    with pytest.raises(DeliveryError) as info:
        _send(api, SecureSmtpHook(), _message())
    assert info.value.code == 552 and not info.value.transient
    assert mail_env.smtp.connections == 1 and mail_env.smtp.messages == []


def test_server_size_limit_checked_before_data(mail_env, server_factory):
    server = server_factory(data_size_limit=2000)
    mail_env.set_smtp_conn(port=server.tls_port)
    msg = _message()
    msg.set_content("x" * 5000)
    with pytest.raises(DeliveryError, match=r"accepts at most 2000 \(SIZE\)"):
        SecureSmtpHook().send(msg)
    assert server.messages == []


def test_one_recipient_of_three_refused(mail_env, api):
    mail_env.smtp.script.rcpt_replies = {"bad@example.com": "550 5.1.1 no such user"}
    msg = _message("a@example.com", "bad@example.com", "c@example.com")
    with pytest.raises(DeliveryError, match=r"1 of 3 recipients refused: bad@example.com \(550\)") as info:
        _send(api, SecureSmtpHook(), msg)
    assert info.value.refused == {"bad@example.com": (550, "5.1.1 no such user")}
    assert mail_env.smtp.messages[0].rcpt_tos == ["a@example.com", "c@example.com"]
    receipt = _send(api, SecureSmtpHook(), msg, allow_partial=True)
    assert receipt.accepted == ("a@example.com", "c@example.com")
    assert set(receipt.refused) == {"bad@example.com"}


def test_every_recipient_refused_names_no_address_but_keeps_the_details(mail_env):
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.pipeline.send import send_mail

    mail_env.smtp.script.rcpt_replies = {
        "a@example.com": "550 5.1.1 no such user",
        "hidden@example.com": "550 5.1.1 no such user",
    }
    request = MailRequest(sender="airflow@example.com", to=("a@example.com",), bcc=("hidden@example.com",), subject="s")
    with pytest.raises(DeliveryError) as info:
        send_mail(request, channel=MailChannel.for_conn())
    assert str(info.value) == "every recipient was refused: 2 recipient(s), SMTP code(s) 550"
    assert set(info.value.refused) == {"a@example.com", "hidden@example.com"}
    assert mail_env.smtp.messages == []


def test_send_many_spreads_over_a_bounded_number_of_sessions(mail_env):
    messages = [
        Outgoing("airflow@example.com", (f"r{n}@example.com",), b"Subject: n\r\n\r\nbody\r\n") for n in range(10)
    ]
    receipts = SecureSmtpHook().send_many(messages, concurrency=3)
    assert [r.accepted for r in receipts] == [(f"r{n}@example.com",) for n in range(10)]
    assert len(mail_env.smtp.messages) == 10
    assert 1 <= mail_env.smtp.connections <= 3
