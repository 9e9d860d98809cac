"""SecureSmtpHook: verified TLS with Vault credentials, rotation, refusals before AUTH; send() runs the pipeline."""

from __future__ import annotations

import logging

import pytest

from airflow_secure_mail.errors import TransportSecurityError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.testing.smtp import SmtpCatcher, TestCA
from tests.conftest import load_dag
from tests.helpers import plain_message


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit_tls", "starttls"])
def test_hook_send_delivers_over_tls_with_vault_credentials(mail_env, starttls):
    mail_env.set_smtp_conn(starttls=starttls)
    receipt = SecureSmtpHook().send(plain_message(body="hello over TLS"))
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["ops@example.com"]
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")
    assert received.auth_identity == "airflow"
    assert b"hello over TLS" in received.data
    assert receipt.accepted == ("ops@example.com",)
    assert receipt.tls_version == received.tls_version


def test_dag_run_delivers_over_tls(mail_env, airflow_db, monkeypatch):
    monkeypatch.setenv("SECURE_MAIL_DEMO_TO", "dag-reader@example.com")
    dag = load_dag("secure_mail_hello.py", "secure_mail_hello")
    dr = dag.test()
    assert dr.state == "success"
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["dag-reader@example.com"]
    assert received.tls_version in ("TLSv1.2", "TLSv1.3")
    assert b"Hello from secure_mail_hello" in received.data


def test_password_rotation_in_vault_is_picked_up_without_restart(mail_env):
    hook = SecureSmtpHook()
    hook.send(plain_message())
    mail_env.rotate("rotated-" + "x" * 20)
    hook.send(plain_message())
    assert len(mail_env.smtp.messages) == 2
    assert [a.ok for a in mail_env.smtp.auth_attempts] == [True, False, True]


def test_server_without_starttls_gets_no_auth_and_no_message(mail_env, ca):
    broken = SmtpCatcher(ca, users={"airflow": mail_env.password}, offer_starttls=False).start()
    try:
        mail_env.set_smtp_conn(starttls=True, port=broken.starttls_port)
        with pytest.raises(TransportSecurityError, match="does not offer STARTTLS, and TLS is required"):
            SecureSmtpHook().send(plain_message())
        assert broken.auth_attempts == []
        assert broken.messages == []
    finally:
        broken.stop()


@pytest.mark.parametrize("starttls", [False, True], ids=["implicit_tls", "starttls"])
def test_certificate_from_other_ca_gets_no_auth_and_no_message(mail_env, starttls):
    rogue = SmtpCatcher(TestCA(), users={"airflow": mail_env.password}).start()
    try:
        mail_env.set_smtp_conn(starttls=starttls, port=rogue.port(starttls=starttls))
        with pytest.raises(TransportSecurityError, match="failed verification"):
            SecureSmtpHook().send(plain_message())
        assert rogue.auth_attempts == []
        assert rogue.messages == []
    finally:
        rogue.stop()


def test_secrets_never_in_logs_or_xcom(mail_env, airflow_db, caplog, capfd):
    from pathlib import Path

    caplog.set_level(logging.DEBUG)
    dag = load_dag("secure_mail_hello.py", "secure_mail_hello")
    dr = dag.test()
    assert dr.state == "success"
    out, err = capfd.readouterr()
    xcom = dr.get_task_instance("send_hello").xcom_pull(task_ids="send_hello")
    assert xcom["accepted"] == ["data-team@example.com"]
    assert xcom["tls_version"] in ("TLSv1.2", "TLSv1.3")
    log_files = "".join(p.read_text(errors="replace") for p in Path(airflow_db, "logs").rglob("*") if p.is_file())
    captured = "\n".join([caplog.text, out, err, repr(xcom), log_files])
    assert "send_hello" in captured  # the task's log really was captured
    assert mail_env.password not in captured
    assert mail_env.bao.root_token not in captured


def test_hook_send_is_screened_before_any_connection(mail_env):
    from airflow_secure_mail.errors import PolicyViolation

    message = plain_message()
    message.add_attachment(b"MZ\x90\x00" + b"\x00" * 200, maintype="application", subtype="pdf", filename="r.pdf")
    before = mail_env.smtp.connections
    with pytest.raises(PolicyViolation, match="'r.pdf' is declared application/pdf but its content is") as info:
        SecureSmtpHook().send(message)
    assert info.value.rule == "declared_type_mismatch"
    assert mail_env.smtp.connections == before and mail_env.smtp.messages == []


def test_hook_send_archives_the_exact_bytes_and_keeps_bcc_off_the_wire(mail_env, tmp_path):
    from airflow_secure_mail.archive.record import ArchiveStatus
    from airflow_secure_mail.archive.store import MailArchive

    message = plain_message()
    message["Bcc"] = "hidden@example.com"
    archive = MailArchive(f"file://{tmp_path}/a")
    receipt = SecureSmtpHook().send(message, archive=archive)
    [received] = mail_env.smtp.messages
    assert sorted(received.rcpt_tos) == ["hidden@example.com", "ops@example.com"]
    assert b"hidden@example.com" not in received.data
    [index] = list(tmp_path.glob("a/index/*/*.json"))
    record = archive.lookup(index.stem)
    assert record is not None and record.status is ArchiveStatus.SENT
    assert archive.read_message(record) == received.data
    assert "Message-ID" not in message  # the caller's message is left alone; the copy sent got one
    assert receipt.message_id == record.meta.message_id
    assert f"Message-ID: {receipt.message_id}\r\n".encode() in received.data


def test_send_many_takes_outgoing_values_and_still_the_deprecated_tuples(mail_env):
    from email import policy

    from airflow_secure_mail.mail.outgoing import Outgoing

    data = plain_message().as_bytes(policy=policy.SMTP)
    hook = SecureSmtpHook()
    receipts = hook.send_many([Outgoing("airflow@example.com", ("a@example.com",), data)])
    with pytest.warns(DeprecationWarning, match="pass Outgoing"):
        receipts += hook.send_many([("airflow@example.com", ["b@example.com"], data)])
    assert [m.rcpt_tos for m in mail_env.smtp.messages] == [["a@example.com"], ["b@example.com"]]
    assert [r.accepted for r in receipts] == [("a@example.com",), ("b@example.com",)]


def test_a_large_message_is_streamed_and_arrives_byte_for_byte(mail_env, monkeypatch):
    """Over 1 MB, DATA is written in dot-stuffed slices (transport/data.py), not through aiosmtplib's copies."""
    from email import policy

    from airflow_secure_mail.mail.outgoing import Outgoing
    from airflow_secure_mail.transport import data as data_module
    from airflow_secure_mail.transport.data import STREAM_MIN

    body = "".join(f".line {n} starts with a dot\n..and this one with two\nplain {n}\n" for n in range(40_000))
    message = plain_message()
    message.set_content(body, cte="quoted-printable")
    data = message.as_bytes(policy=policy.SMTP)
    assert len(data) > 2 * STREAM_MIN and b"\r\n.line 1 " in data
    streamed = []
    monkeypatch.setattr(data_module, "_stream_data", _spy(data_module._stream_data, streamed))
    SecureSmtpHook().send(Outgoing("airflow@example.com", ("ops@example.com",), data, "<big@example.com>"))
    [received] = mail_env.smtp.messages
    assert received.data == data
    assert streamed == [len(data)]  # went through the sliced writer, not aiosmtplib's data()


def _spy(fn, calls):  # type: ignore[no-untyped-def]
    async def spied(smtp, data):  # type: ignore[no-untyped-def]
        calls.append(len(data))
        return await fn(smtp, data)

    return spied


def test_wire_bytes_without_message_id_get_one_from_their_content(mail_env, tmp_path):
    """The archive keys a copy by Message-ID: different bytes never share a key, the same bytes do (sent once)."""
    from airflow_secure_mail.archive.store import MailArchive

    archive = MailArchive(f"file://{tmp_path}/a")
    hook = SecureSmtpHook()
    first, second = (f"Subject: n{n}\r\n\r\nbody {n}\r\n".encode() for n in (1, 2))
    ids = [hook.send(data, recipients=["ops@example.com"], archive=archive).message_id for data in (first, second)]
    hook.send(first, recipients=["ops@example.com"], archive=archive)  # a retried task: the same bytes again
    assert len(set(ids)) == 2 and all(i and i.endswith("@example.com>") for i in ids)
    assert [m.data.split(b"\r\n", 1)[0] for m in mail_env.smtp.messages] == [f"Message-ID: {i}".encode() for i in ids]


def _internal_message():  # type: ignore[no-untyped-def]
    message = plain_message("ops@relay.internal")
    del message["From"]
    message["From"] = "airflow@airflow.internal"
    return message


@pytest.mark.parametrize("via", ["connection", "argument"])
def test_hook_send_honours_allow_special_use_domains_for_messages_built_elsewhere(mail_env, via):
    from airflow_secure_mail.mail.screen import MailPolicy

    if via == "connection":
        mail_env.set_smtp_conn(policy={"allow_special_use_domains": True})
    policy = MailPolicy(allow_special_use_domains=True) if via == "argument" else None
    hook = SecureSmtpHook()
    hook.send(_internal_message(), policy=policy)
    hook.send(b"Subject: raw\r\n\r\nbody\r\n", sender="a@airflow.internal", recipients=["b@relay.internal"],
              policy=policy)  # fmt: skip
    assert [(m.mail_from, m.rcpt_tos) for m in mail_env.smtp.messages] == [
        ("airflow@airflow.internal", ["ops@relay.internal"]),
        ("a@airflow.internal", ["b@relay.internal"]),
    ]


def test_send_many_honours_allow_special_use_domains_and_refuses_without_it(mail_env):
    from airflow_secure_mail.errors import PolicyViolation
    from airflow_secure_mail.mail.outgoing import Outgoing
    from airflow_secure_mail.mail.screen import MailPolicy

    data = b"Subject: raw\r\n\r\nbody\r\n"
    outgoing = Outgoing("a@example.com", ("b@relay.internal",), data)
    for message in (_internal_message(), outgoing):
        with pytest.raises(PolicyViolation, match="allow_special_use_domains=True") as info:
            SecureSmtpHook().send_many([message])
        assert info.value.rule == "special_use_domain"
    assert mail_env.smtp.connections == 0
    allowed = MailPolicy(allow_special_use_domains=True)
    SecureSmtpHook().send_many([_internal_message(), outgoing], policy=allowed)
    assert sorted(m.rcpt_tos[0] for m in mail_env.smtp.messages) == ["b@relay.internal", "ops@relay.internal"]


_RAW_BCC = (
    b"From: airflow@example.com\r\nTo: ops@example.com\r\nBcc: hidden@example.com,\r\n"
    b" also-hidden@example.com\r\nSubject: raw\r\n\r\nbody\r\n"
)


def test_a_bcc_field_in_raw_bytes_never_reaches_the_wire_or_the_archive(mail_env, tmp_path):
    from airflow_secure_mail.archive.store import MailArchive

    archive = MailArchive(f"file://{tmp_path}/a")
    SecureSmtpHook().send(_RAW_BCC, recipients=["ops@example.com", "hidden@example.com"], archive=archive)
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["ops@example.com", "hidden@example.com"]
    assert b"Bcc" not in received.data and b"hidden@example.com" not in received.data
    assert received.data.endswith(b"To: ops@example.com\r\nSubject: raw\r\n\r\nbody\r\n")
    [index] = list(tmp_path.glob("a/index/*/*.json"))
    record = archive.lookup(index.stem)
    assert record is not None and archive.read_message(record) == received.data


def test_a_resent_bcc_field_in_raw_bytes_never_reaches_the_wire():
    from airflow_secure_mail.mail.external import outgoing_from

    data = b"From: a@example.com\r\nTo: ops@example.com\r\nResent-Bcc: auditor@example.com\r\nSubject: s\r\n\r\nb\r\n"
    item = outgoing_from(data, sender=None, recipients=["ops@example.com", "auditor@example.com"],
                         default_sender="a@example.com")  # fmt: skip
    assert b"Resent-Bcc" not in item.data and b"auditor@example.com" not in item.data
    assert item.hidden == ("auditor@example.com",)


def test_a_recipient_named_only_in_a_raw_bcc_field_is_never_named_in_an_error(mail_env):
    from airflow_secure_mail.errors import PolicyViolation

    data = b"From: a@example.com\r\nTo: ops@example.com\r\nBcc: Secret <secret@vault.test>\r\nSubject: s\r\n\r\nb\r\n"
    with pytest.raises(PolicyViolation) as info:
        SecureSmtpHook().send(data, recipients=["ops@example.com", "secret@vault.test"])
    assert "secret" not in str(info.value) and "vault.test" not in str(info.value)
    assert mail_env.smtp.connections == 0


def test_an_email_mime_message_as_the_stock_provider_builds_it_is_sent(mail_env):
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    message = MIMEMultipart()
    message["From"] = "airflow@example.com"
    message["To"] = "ops@example.com"
    message["Subject"] = "classic"
    message.attach(MIMEText("hello", "plain"))
    SecureSmtpHook().send(message)
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["ops@example.com"] and b"Subject: classic\r\n" in received.data


def test_a_message_of_another_type_is_our_error(mail_env):
    from airflow_secure_mail.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="cannot send a str: pass an EmailMessage"):
        SecureSmtpHook().send("Subject: hi\r\n\r\nbody", recipients=["ops@example.com"])


_TWO_TYPES = (
    b"From: a@example.com\r\nTo: ops@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\n"
    b'<a href="javascript:alert(1)">x</a><img src=x onerror=alert(1)>\r\n--b--\r\n'
)


@pytest.mark.parametrize(
    ("data", "item"),
    [
        (_TWO_TYPES, "content-type"),
        (b"From: a@example.com\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\n<b onclick=x>b</b>\r\n",
         "content-type"),
        (_TWO_TYPES.replace(b"Content-Type: text/html", b"Content-Disposition: attachment\r\nContent-Disposition: inline"),
         "content-disposition"),
    ],
    ids=["in_a_part", "top_level", "disposition_in_a_part"],
)  # fmt: skip
def test_a_mime_field_given_twice_is_refused_before_connecting(mail_env, data, item):
    """Python reads the first Content-Type, other readers the last: the HTML screen would judge a text part."""
    from airflow_secure_mail.errors import PolicyViolation

    with pytest.raises(PolicyViolation, match="more than one Content-") as info:
        SecureSmtpHook().send(data, recipients=["ops@example.com"])
    assert (info.value.rule, info.value.item) == ("duplicate_header", item)
    assert mail_env.smtp.connections == 0


def test_a_message_written_with_lf_line_endings_is_sent_and_archived_with_crlf(mail_env, tmp_path):
    """``as_bytes()`` with the default policy writes LF only: ordinary mail, sent as the SMTP client writes it."""
    from airflow_secure_mail.archive.store import MailArchive

    archive = MailArchive(f"file://{tmp_path}/a")
    data = plain_message().as_bytes()
    assert b"\r" not in data
    SecureSmtpHook().send(data, recipients=["ops@example.com"], archive=archive)
    [received] = mail_env.smtp.messages
    assert b"\r" not in received.data.replace(b"\r\n", b"") and received.data.endswith(b"\r\n")
    [index] = list(tmp_path.glob("a/index/*/*.json"))
    record = archive.lookup(index.stem)
    assert record is not None and archive.read_message(record) == received.data


@pytest.mark.parametrize(
    ("data", "rule", "message"),
    [
        (
            b"From: a@example.com\r\nFrom: CEO <ceo@example.com>\r\nSubject: s\r\n\r\nb\r\n",
            "duplicate_header",
            "more than one From field",
        ),
        (
            b"From: a@example.com\r\nSubject: s\r\nsubject: t\r\n\r\nb\r\n",
            "duplicate_header",
            "more than one Subject field",
        ),
        (
            b"From: a@example.com\r\nMessage-ID: <1@x>\r\nMessage-ID: <2@x>\r\n\r\nb\r\n",
            "duplicate_header",
            "more than one Message-Id field",
        ),
        (
            b"From: a@example.com\r\nX-Long: " + b"a" * 1000 + b"\r\n\r\nb\r\n",
            "header_line_length",
            "header line 2 is 1008 octets, over the 998",
        ),
        (b"From: a@example.com\r\nSubject: s\nBcc: x@evil.example\r\n\r\nb\r\n", "header_injection", "a bare LF"),
        (b"From: a@example.com\r\nSubject: s\rBcc: x@evil.example\r\n\r\nb\r\n", "header_injection", "a bare CR"),
        (b"From: a@example.com\r\nSubject: s\x00t\r\n\r\nb\r\n", "header_injection", "a NUL"),
    ],
    ids=["second_from", "second_subject", "second_message_id", "long_line", "bare_lf", "bare_cr", "nul"],
)
def test_a_malformed_raw_header_block_is_refused_before_connecting(mail_env, data, rule, message):
    from airflow_secure_mail.errors import PolicyViolation
    from airflow_secure_mail.mail.outgoing import Outgoing

    hook = SecureSmtpHook()
    for sent in (data, Outgoing("a@example.com", ("ops@example.com",), data)):
        with pytest.raises(PolicyViolation, match=message) as info:
            hook.send(sent, recipients=["ops@example.com"])
        assert info.value.rule == rule
    assert mail_env.smtp.connections == 0 and mail_env.smtp.messages == []


def test_an_email_message_with_two_from_fields_is_refused_before_connecting(mail_env):
    from airflow_secure_mail.errors import PolicyViolation

    message = plain_message()
    message.set_raw("From", "CEO <ceo@example.com>")  # as a parsed message can hold: two From fields
    with pytest.raises(PolicyViolation, match="more than one From field") as info:
        SecureSmtpHook().send(message)
    assert info.value.rule == "duplicate_header" and mail_env.smtp.connections == 0
