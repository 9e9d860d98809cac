"""Every send a screen refuses leaves one metadata-only record in the archive, and the original error goes on."""

from __future__ import annotations

import json
import logging
import re
import secrets
from pathlib import Path

import pytest

from airflow_secure_mail.archive.refusals import domains_only
from airflow_secure_mail.errors import EncryptionKeyMissing, PolicyViolation, SendFrozen
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.mail.protect import Protection
from airflow_secure_mail.mail.screen import MailPolicy
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail

ORIGIN = {"dag_id": "dag", "task_id": "task", "run_id": "run", "map_index": -1, "try_number": 1}
ADDRESS = re.compile(rb"[\w.+-]+@[\w-]+\.[\w.]+")
TEAM = {"to": ("ana@example.com",), "cc": ("bo@corp.example.org",), "bcc": ("hidden.auditor@example.net",)}


@pytest.fixture(autouse=True)
def _fresh_freeze_state():
    from airflow_secure_mail.connection.freeze import forget

    forget()
    yield
    forget()


def _records(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((root / "refusals").rglob("*.json"))]


def _request(**kw) -> MailRequest:  # type: ignore[no-untyped-def]
    base = {"sender": "airflow@example.com", "subject": "numbers", "text": "42", **TEAM}
    return MailRequest(**(base | kw))


def _refused_send(tmp_path, request, **kw) -> tuple[BaseException, bytes]:  # type: ignore[no-untyped-def]
    archive = f"file://{tmp_path}/archive"
    with pytest.raises((PolicyViolation, EncryptionKeyMissing)) as info:
        send_mail(request, channel=MailChannel.for_conn(), archive=archive, origin=ORIGIN, **kw)
    [record] = _records(tmp_path / "archive")
    return info.value, record


def _assert_domains_only(record: bytes, data: dict, domains: list[str]) -> None:  # type: ignore[type-arg]
    assert data["recipient_domains"] == domains
    text = json.dumps(data, ensure_ascii=False).encode()  # "…@example.com" as the record means it
    assert ADDRESS.findall(text) == [], record  # not one address, Bcc or not
    assert not any(local.encode() in record for local in ("ana@", "bo@", "hidden.auditor", "ops@"))
    assert "recipients" not in data


def test_policy_refusal_is_recorded_with_domains_only_and_the_error_unchanged(mail_env, tmp_path, caplog):
    policy = MailPolicy(max_recipients=2)
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"):
        error, record = _refused_send(tmp_path, _request(), policy=policy)
    assert type(error) is PolicyViolation
    assert str(error) == "3 recipients exceed max_recipients=2: split the mail or raise the limit."
    data = json.loads(record)
    assert (data["rule"], data["error_type"], data["recipient_count"]) == ("max_recipients", "PolicyViolation", 3)
    assert data["reason"] == str(error)
    assert data["airflow"] == ORIGIN and data["conn_id"] == "secure_smtp_default"
    assert data["sender_domain"] == "example.com"
    _assert_domains_only(record, data, ["corp.example.org", "example.com", "example.net"])
    assert mail_env.smtp.connections == 0 and mail_env.smtp.messages == []
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused by rule")]
    name = next((tmp_path / "archive" / "refusals").rglob("*.json")).relative_to(tmp_path / "archive")
    assert line == f"refused by rule 'max_recipients': recorded at file://{tmp_path}/archive/{name}"
    assert not ADDRESS.search(caplog.text.encode())


def test_record_refused_recipients_keeps_the_addresses(mail_env, tmp_path):
    policy = MailPolicy(max_recipients=2, record_refused_recipients=True)
    _, record = _refused_send(tmp_path, _request(), policy=policy)
    data = json.loads(record)
    assert data["recipients"] == ["ana@example.com", "bo@corp.example.org", "hidden.auditor@example.net"]


def test_html_refusal_is_recorded(mail_env, tmp_path):
    html = '<p>hi</p><a href="javascript:alert(1)">x</a>'
    error, record = _refused_send(tmp_path, _request(html=html, text=None))
    data = json.loads(record)
    assert isinstance(error, PolicyViolation) and data["rule"] == error.rule
    assert data["error_type"] == type(error).__name__ and data["reason"] == str(error)
    _assert_domains_only(record, data, ["corp.example.org", "example.com", "example.net"])
    assert mail_env.smtp.connections == 0


INJECTED = b"From: a@example.com\r\nSubject: s\nBcc: x@evil.example\r\n\r\nb\r\n"


@pytest.mark.parametrize(
    "as_given",
    [
        pytest.param(lambda data: Outgoing("a@example.com", ("ops@example.com",), data), id="outgoing"),
        pytest.param(lambda data: data, id="bytes"),
    ],
)
def test_header_injection_through_the_hook_is_recorded(mail_env, tmp_path, as_given):
    archive = f"file://{tmp_path}/archive"
    with pytest.raises(PolicyViolation) as info:
        SecureSmtpHook().send(as_given(INJECTED), recipients=["ops@example.com"], archive=archive)
    assert type(info.value) is PolicyViolation and info.value.rule == "header_injection"
    assert str(info.value).startswith("header line 2 holds a bare LF:")
    [record] = _records(tmp_path / "archive")
    parsed = json.loads(record)
    assert (parsed["rule"], parsed["recipient_count"], parsed["sender_domain"]) == (
        "header_injection",
        1,
        "example.com",
    )
    _assert_domains_only(record, parsed, ["example.com"])
    assert mail_env.smtp.connections == 0 and mail_env.smtp.messages == []


def test_missing_pgp_key_is_recorded_as_missing_key(mail_env, tmp_path):
    protection = Protection(encrypt="pgp", keys_vault_path=f"mail-keys-{secrets.token_hex(3)}")
    error, record = _refused_send(tmp_path, _request(), protection=protection)
    assert type(error) is EncryptionKeyMissing
    data = json.loads(record)
    assert (data["rule"], data["error_type"]) == ("missing_key", "EncryptionKeyMissing")
    assert data["reason"] == domains_only(str(error)) and "ana@" not in data["reason"]
    _assert_domains_only(record, data, ["corp.example.org", "example.com", "example.net"])
    assert mail_env.smtp.connections == 0


def test_frozen_send_is_recorded_as_rule_frozen(mail_env, tmp_path):
    from airflow_secure_mail.cli.main import main

    assert main(["incident", "freeze", "--conn-id", "secure_smtp_default", "--reason", "phishing wave"]) == 0
    error, record = _refused_send(tmp_path, _request())
    assert type(error) is SendFrozen and error.reason == "phishing wave"
    data = json.loads(record)
    assert (data["rule"], data["error_type"], data["reason"]) == ("frozen", "SendFrozen", str(error))
    _assert_domains_only(record, data, ["corp.example.org", "example.com", "example.net"])
    assert mail_env.smtp.connections == 0


def test_a_refusal_without_archive_is_counted_and_raised(mail_env, monkeypatch):
    from airflow_secure_mail import _metrics

    counted: list[tuple[str, dict]] = []  # type: ignore[type-arg]
    monkeypatch.setattr(_metrics, "incr", lambda name, count=1, **tags: counted.append((name, tags)))
    with pytest.raises(PolicyViolation, match="exceed max_recipients=2"):
        send_mail(_request(), channel=MailChannel.for_conn(), policy=MailPolicy(max_recipients=2))
    assert counted == [("refused", {"rule": "max_recipients"})]


def test_an_unwritable_archive_warns_and_the_original_error_is_raised(mail_env, tmp_path, caplog):
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "refusals").write_text("not a folder")
    with caplog.at_level(logging.INFO, logger="airflow_secure_mail"), pytest.raises(PolicyViolation) as info:
        send_mail(
            _request(), channel=MailChannel.for_conn(), policy=MailPolicy(max_recipients=2),
            archive=f"file://{tmp_path}/archive",
        )  # fmt: skip
    assert type(info.value) is PolicyViolation and info.value.rule == "max_recipients"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("refused by rule 'max_recipients': the refusal record was not written (")
    assert mail_env.smtp.connections == 0


def test_a_refused_dry_run_is_not_recorded(mail_env, tmp_path, monkeypatch):
    from airflow_secure_mail import _metrics

    counted: list[str] = []
    monkeypatch.setattr(_metrics, "incr", lambda name, count=1, **tags: counted.append(name))
    with pytest.raises(PolicyViolation):
        send_mail(
            _request(), channel=MailChannel.for_conn(), policy=MailPolicy(max_recipients=2),
            archive=f"file://{tmp_path}/archive", dry_run=True,
        )  # fmt: skip
    assert not (tmp_path / "archive" / "refusals").exists() and counted == []
