"""Issue 4: compose and screen, through the public API, with the SMTP server as the witness."""

from __future__ import annotations

import email
import email.policy
import io
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_secure_mail.errors import PolicyViolation
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.mail.compose import Attachment, MailRequest, compose
from airflow_secure_mail.mail.screen import MailPolicy, screen
from airflow_secure_mail.pipeline import send_mail

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\x00\x00" + b"\x00" * 64
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 32


def _request(**kw) -> MailRequest:
    base = {"sender": "airflow@example.com", "to": ("ops@example.com",), "subject": "s", "text": "body"}
    base.update(kw)
    return MailRequest(**base)


def _send(mail_env, request: MailRequest, policy: MailPolicy | None = None):
    return send_mail(request, hook=SecureSmtpHook(), policy=policy)


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


@pytest.mark.parametrize(
    "field",
    [
        {"subject": "hi\r\nBcc: victim@evil.example"},
        {"to": ("Eve\r\nBcc: x@evil.example <eve@example.com>",)},
        {"attachments": (Attachment("a.csv\r\nX-Evil: 1", b"a,b\n"),)},
        {"headers": (("X-Report", "ok\nBcc: x@evil.example"),)},
        {"headers": (("X-Bad\r\nBcc", "x"),)},
        {"sender": "airflow@example.com\r\nBcc: x@evil.example"},
    ],
    ids=["subject", "display_name", "file_name", "header_value", "header_name", "sender"],
)
def test_crlf_anywhere_is_refused_before_connecting(mail_env, field):
    with pytest.raises(PolicyViolation) as info:
        _send(mail_env, _request(**field))
    assert info.value.rule in ("header_injection", "address")
    assert mail_env.smtp.connections == 0


@pytest.mark.parametrize("breaker", ["\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c"])
def test_unicode_line_breaks_are_refused_like_crlf(mail_env, breaker):
    """str.splitlines() breaks on these too; found by the property test below (NEL in a header value)."""
    with pytest.raises(PolicyViolation) as info:
        _send(mail_env, _request(headers=(("X-Report", f"ok{breaker}Bcc: x@evil.example"),)))
    assert info.value.rule == "header_injection"
    assert mail_env.smtp.connections == 0


def test_pdf_named_file_holding_an_executable_is_refused(mail_env):
    with pytest.raises(PolicyViolation, match=r"report\.pdf") as info:
        _send(mail_env, _request(attachments=(Attachment("report.pdf", EXE),)))
    assert info.value.rule == "allowed_attachment_types"
    assert mail_env.smtp.connections == 0


def test_extension_must_agree_with_content(mail_env):
    with pytest.raises(PolicyViolation) as info:
        _send(mail_env, _request(attachments=(Attachment("chart.pdf", PNG),)))
    assert info.value.rule == "extension_mismatch"


def test_macro_enabled_office_file_is_refused(mail_env):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
        zf.writestr("xl/vbaProject.bin", b"\x00macro")
    with pytest.raises(PolicyViolation, match="macroenabled"):
        _send(mail_env, _request(attachments=(Attachment("numbers.xlsx", buf.getvalue()),)))


def test_shell_script_disguised_as_text_is_refused(mail_env):
    with pytest.raises(PolicyViolation):
        _send(mail_env, _request(attachments=(Attachment("notes.txt", b"#!/bin/sh\nrm -rf /\n"),)))


def test_allowed_attachments_pass_and_arrive(mail_env):
    _send(mail_env, _request(attachments=(Attachment("r.pdf", PDF), Attachment("d.csv", b"a,b\n1,2\n"))))
    [received] = mail_env.smtp.messages
    names = [p.get_filename() for p in _parsed(received.data).iter_attachments()]
    assert names == ["r.pdf", "d.csv"]


@pytest.mark.parametrize(
    "rcpt",
    [
        "bob@evil.example",
        "bob@allowed.example.evil.example",
        '"alice@allowed.example" <bob@evil.example>',
        "alice@allowed.example, bob@evil.example",
        "bob@аllowed.example",  # Cyrillic a
        "alice@allowed.example@evil.example",
        '"bob@evil.example"@allowed.example',
        "alice@allowed.example <bob@evil.example>",
    ],
)
def test_recipient_outside_allow_list_is_refused_and_server_sees_nothing(mail_env, rcpt):
    policy = MailPolicy(allowed_recipient_domains=("allowed.example",))
    with pytest.raises(PolicyViolation):
        _send(mail_env, _request(to=(rcpt,)), policy)
    assert mail_env.smtp.connections == 0


def test_allow_list_is_case_and_idna_normalized(mail_env):
    policy = MailPolicy(allowed_recipient_domains=("Bücher.Example",))
    _send(mail_env, _request(to=("Leser@BÜCHER.example",)), policy)
    assert mail_env.smtp.messages[0].rcpt_tos == ["Leser@xn--bcher-kva.example"]


def test_oversized_message_is_refused_before_connecting(mail_env):
    with pytest.raises(PolicyViolation, match="max_message_bytes=10000") as info:
        _send(mail_env, _request(text="x" * 20_000), MailPolicy(max_message_bytes=10_000))
    assert info.value.rule == "max_message_bytes"
    assert mail_env.smtp.connections == 0


def test_too_many_recipients_refused(mail_env):
    with pytest.raises(PolicyViolation, match="max_recipients=2"):
        _send(mail_env, _request(to=("a@example.com", "b@example.com", "c@example.com")), MailPolicy(max_recipients=2))


@pytest.mark.parametrize("body", ["line one\n.\nline two\n", "line one\r.\r\nline two\r\n", ".\r\nQUIT\r\n"])
def test_smuggling_sequences_arrive_as_one_message_with_body_intact(mail_env, body):
    _send(mail_env, _request(text=body))
    [received] = mail_env.smtp.messages
    text = _parsed(received.data).get_body(("plain",)).get_content()
    assert text.replace("\r\n", "\n").strip("\n") == body.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    assert b"\r\n" in received.data and b"\n" not in received.data.replace(b"\r\n", b"")


def test_non_ascii_attachment_name_survives(mail_env):
    _send(mail_env, _request(attachments=(Attachment("Bericht Ümsatz 2026 – Q4.csv", b"a;b\n"),)))
    [part] = list(_parsed(mail_env.smtp.messages[0].data).iter_attachments())
    assert part.get_filename() == "Bericht Ümsatz 2026 – Q4.csv"


def test_bcc_is_in_envelope_not_headers(mail_env):
    _send(mail_env, _request(bcc=("hidden@example.com",)))
    [received] = mail_env.smtp.messages
    assert "hidden@example.com" in received.rcpt_tos
    assert b"hidden@example.com" not in received.data


def test_html_only_gets_a_text_alternative(mail_env):
    html = "<h1>Totals</h1><p>Revenue <b>42</b></p><script>x()</script>"  # refused by default; stripped here
    _send(mail_env, _request(text=None, html=html), MailPolicy(html="strip"))
    msg = _parsed(mail_env.smtp.messages[0].data)
    assert msg.get_body(("plain",)).get_content().split() == ["Totals", "Revenue", "42"]
    assert "<b>42</b>" in msg.get_body(("html",)).get_content()


def test_message_id_is_deterministic_for_the_same_task_instance():
    a, _ = compose(_request(id_seed="dag|task|run|-1"))
    b, _ = compose(_request(id_seed="dag|task|run|-1"))
    c, _ = compose(_request(id_seed="dag|task|run2|-1"))
    assert a["Message-ID"] == b["Message-ID"] != c["Message-ID"]


def test_attachment_from_s3_object_storage(mail_env, s3_conn, seaweed):
    from airflow_secure_mail.sources import load_attachments

    seaweed.client().put_object(Bucket="mail-test", Key="reports/q4.csv", Body=b"region,total\nnorth,1\n")
    [att] = load_attachments(["s3://mail-test/reports/q4.csv"], conn_id=s3_conn)
    _send(mail_env, _request(attachments=(att,)))
    [part] = list(_parsed(mail_env.smtp.messages[0].data).iter_attachments())
    assert part.get_filename() == "q4.csv"
    assert part.get_content().replace("\r\n", "\n") == "region,total\nnorth,1\n"


# -- property tests ----------------------------------------------------------------------------

_header_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
_ALLOWED_HEADERS = {
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "x-report",
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_header_text, name=_header_text, value=_header_text, filename=_header_text)
def test_compose_and_screen_only_emit_requested_headers_or_raise_policy_violation(subject, name, value, filename):
    request = _request(
        subject=subject,
        to=(f'"{name}" <ops@example.com>',),
        headers=(("X-Report", value),),
        attachments=(Attachment((filename or "f") + ".csv", b"a,b\n"),),
    )
    try:
        message, envelope = compose(request)
        data = message.as_bytes(policy=email.policy.SMTP)
        screen(message, envelope, MailPolicy(), request.attachments, encoded_size=len(data))
    except PolicyViolation:
        return
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    names = {line.split(":", 1)[0].lower() for line in head.split("\r\n") if line and not line[0].isspace()}
    assert names <= _ALLOWED_HEADERS
    assert envelope.recipients == ("ops@example.com",)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_address_parser_only_raises_policy_violation(text):
    from airflow_secure_mail.mail.addresses import parse_mailbox

    try:
        box = parse_mailbox(text)
    except PolicyViolation:
        return
    assert "\r" not in box.addr and "\n" not in box.addr and box.addr.count("@") == 1
