"""SMTP faults around AUTH: a drop after 535 is transient, retried on a fresh connection, and recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_secure_mail.archive.store import MailArchive
from airflow_secure_mail.errors import DeliveryError, SecureMailError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from tests.helpers import numbered_request


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    stack = [exc]
    while stack:
        current = stack.pop()
        if any(current is f for f in found):
            continue
        found.append(current)
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return found


def test_535_then_drop_on_reread_auth_is_retried_on_a_fresh_connection(mail_env, tmp_path):
    mail_env.smtp.script.auth_replies = ["535 5.7.8 Authentication credentials invalid", "drop"]
    archive = MailArchive(f"file://{tmp_path}/a")
    result = send_mail(numbered_request(1), channel=MailChannel.for_conn(), archive=archive)
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["r1@example.com"]
    assert mail_env.smtp.connections == 2
    assert result.receipts[0].attempts == 2
    record = archive.lookup(result.archive_keys[0].rpartition("/")[2])
    assert record is not None and record.status == "sent"


def test_persistent_drop_after_535_is_a_transient_failure_noted_in_the_archive(mail_env, tmp_path):
    mail_env.set_smtp_conn(retries=1)
    mail_env.smtp.script.auth_replies = ["535 5.7.8 no", "drop"] * 2
    archive = MailArchive(f"file://{tmp_path}/a")
    with pytest.raises(DeliveryError, match="lost during AUTH") as info:
        send_mail(numbered_request(2), channel=MailChannel.for_conn(), archive=archive)
    assert info.value.transient
    assert mail_env.smtp.messages == []
    [note] = list(Path(tmp_path, "a").rglob("*.failed-1.json"))
    assert "lost during AUTH" in note.read_text()


def test_server_reply_echoing_the_password_stays_out_of_the_exception_chain(mail_env):
    """A relay that quotes the password back in its 535 and then drops: nothing in the chain keeps it."""
    mail_env.set_smtp_conn(retries=1)
    echo = f"535 5.7.8 bad password {mail_env.password}"
    mail_env.smtp.script.auth_replies = [echo, "drop", echo, "drop"]
    with pytest.raises(SecureMailError) as info:
        SecureSmtpHook().send(_request_message())
    for exc in _chain(info.value):
        assert mail_env.password not in f"{exc} {exc.args!r}"
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_persistent_535_with_echo_keeps_no_reply_in_context(mail_env):
    mail_env.smtp.script.auth_replies = [f"535 5.7.8 bad password {mail_env.password}"] * 2
    with pytest.raises(SecureMailError, match="rejected the credentials") as info:
        SecureSmtpHook().send(_request_message())
    assert all(mail_env.password not in f"{e} {e.args!r}" for e in _chain(info.value))


def _request_message():  # type: ignore[no-untyped-def]
    from airflow_secure_mail.mail.compose import compose

    message, _ = compose(numbered_request(9))
    return message


@pytest.mark.parametrize(
    "url",
    ["http://0.0.0.0:8443\\@127.0.0.1/token", "https://user@login.example.com/token", "https://login.example.com /t"],
)
def test_ambiguous_oauth_endpoint_is_refused(url):
    from airflow_secure_mail.errors import ConfigurationError
    from airflow_secure_mail.transport.oauth import OAuthClient

    with pytest.raises(ConfigurationError, match="oauth_endpoint is an ambiguous address"):
        OAuthClient(token_url=url, client_id="airflow", client_secret="x")


def test_plain_http_oauth_endpoint_to_unspecified_address_is_refused():
    from airflow_secure_mail.errors import ConfigurationError
    from airflow_secure_mail.transport.oauth import OAuthClient

    with pytest.raises(ConfigurationError, match="must use https"):
        OAuthClient(token_url="http://0.0.0.0:8443/token", client_id="airflow", client_secret="x")
