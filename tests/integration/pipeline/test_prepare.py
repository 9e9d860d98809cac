"""Screening through the send path (pipeline → TLS SMTP catcher): refusals open no connection; what passes arrives intact.

The rules themselves are tested without servers in test_addresses.py, test_compose.py, test_screen.py and
test_html_screen.py; this file checks the pipeline applies them before connecting and delivers what they pass.
"""

from __future__ import annotations

import email
import email.policy

import pytest

from airflow_secure_mail.errors import PolicyViolation
from airflow_secure_mail.mail.compose import Attachment, MailRequest
from airflow_secure_mail.mail.screen import MailPolicy
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\x00\x00" + b"\x00" * 64


def _request(**kw) -> MailRequest:
    base = {"sender": "airflow@example.com", "to": ("ops@example.com",), "subject": "s", "text": "body"}
    base.update(kw)
    return MailRequest(**base)


def _send(request: MailRequest, policy: MailPolicy | None = None):
    return send_mail(request, channel=MailChannel.for_conn(), policy=policy)


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


@pytest.mark.parametrize(
    ("request_fields", "policy", "rule", "message"),
    [
        ({"subject": "hi\r\nBcc: victim@evil.example"}, None, "header_injection", "subject contains a control"),
        (
            {"attachments": (Attachment("=?utf-8?q?r=0D=0ABcc:_x@evil.example?=.csv", b"a,b\n"),)},
            None,
            "header_injection",
            "attachment file name contains a control",
        ),
        ({"to": ("ops@relay.internal",)}, None, "special_use_domain", "allow_special_use_domains=True"),
        (
            {"to": ("ok@allowed.example",), "bcc": ("hidden@evil.example",)},
            MailPolicy(allowed_recipient_domains=("allowed.example",)),
            "allowed_recipient_domains",
            "recipient hidden@evil.example is outside",
        ),
        (
            {"attachments": (Attachment("report.pdf", EXE),)},
            None,
            "allowed_attachment_types",
            r"'report\.pdf' is application/x-dosexec by content",
        ),
        ({"text": "x" * 20_000}, MailPolicy(max_message_bytes=10_000), "max_message_bytes", "max_message_bytes=10000"),
        ({"text": None, "html": "<p>Hi<script>x()</script></p>"}, None, "html_script", "^HTML body: <script>"),
        (
            {"text": None, "html": '<a href="https://evil.net/">bank.example.com</a>'},
            MailPolicy(html="strip"),
            "html_deceptive_link",
            "shows bank.example.com but points to evil.net",
        ),
    ],
    ids=["header", "encoded_file_name", "special_use", "bcc_outside_allow_list", "type", "size", "script", "deceit"],
)
def test_a_refused_message_opens_no_connection(mail_env, request_fields, policy, rule, message):
    with pytest.raises(PolicyViolation, match=message) as info:
        _send(_request(**request_fields), policy)
    assert info.value.rule == rule
    assert mail_env.smtp.connections == 0 and mail_env.smtp.messages == []


def test_allowed_attachments_arrive_with_their_names(mail_env):
    names = ("r.pdf", "d.csv", "Bericht Ümsatz 2026 – Q4.csv")
    _send(
        _request(attachments=(Attachment(names[0], PDF), Attachment(names[1], b"a,b\n"), Attachment(names[2], b"x\n")))
    )
    [received] = mail_env.smtp.messages
    assert tuple(p.get_filename() for p in _parsed(received.data).iter_attachments()) == names


def test_allow_list_is_checked_against_the_normalized_envelope(mail_env):
    _send(_request(to=("Leser@BÜCHER.example",)), MailPolicy(allowed_recipient_domains=("Bücher.Example",)))
    assert mail_env.smtp.messages[0].rcpt_tos == ["Leser@xn--bcher-kva.example"]


def test_special_use_domains_are_delivered_when_the_policy_allows(mail_env):
    policy = MailPolicy(allow_special_use_domains=True)
    _send(_request(to=("Ops <OPS@Mail.Corp.LOCAL>", "b@relay.internal"), sender="airflow@airflow.internal"), policy)
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["OPS@mail.corp.local", "b@relay.internal"]
    assert received.mail_from == "airflow@airflow.internal"


@pytest.mark.parametrize("body", ["line one\n.\nline two\n", "line one\r.\r\nline two\r\n", ".\r\nQUIT\r\n"])
def test_smuggling_sequences_arrive_as_one_message_with_body_intact(mail_env, body):
    _send(_request(text=body))
    [received] = mail_env.smtp.messages
    text = _parsed(received.data).get_body(("plain",)).get_content()
    assert text.replace("\r\n", "\n").strip("\n") == body.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    assert b"\r\n" in received.data and b"\n" not in received.data.replace(b"\r\n", b"")


def test_bcc_is_in_the_envelope_and_not_in_the_delivered_bytes(mail_env):
    _send(_request(bcc=("hidden@example.com",)))
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["ops@example.com", "hidden@example.com"]
    assert b"hidden@example.com" not in received.data


def test_html_is_delivered_as_screened(mail_env):
    honest = '<p>See <a href="https://example.com/r/1">example.com</a></p>'
    result = _send(_request(text=None, html=honest + "<script>steal()</script>"), MailPolicy(html="strip"))
    [received] = mail_env.smtp.messages
    message = _parsed(received.data)
    assert message.get_body(("html",)).get_content().strip() == f"<html><head></head><body>{honest}</body></html>"
    assert b"steal" not in received.data
    assert [r.message_id for r in result.receipts] == [message["Message-ID"]]


def test_valid_content_type_parameters_reach_the_wire_without_injection(mail_env):
    att = Attachment("report.csv", b"a,b\n", content_type="text/csv; charset=utf-8; header=present")
    _send(_request(attachments=(att,)))
    [received] = mail_env.smtp.messages
    assert b'Content-Type: text/csv; charset="utf-8"; header="present"' in received.data


def test_attachment_from_s3_object_storage(mail_env, s3_conn, seaweed):
    from airflow_secure_mail.pipeline.attachments import load_attachments

    seaweed.client().put_object(Bucket="mail-test", Key="reports/q4.csv", Body=b"region,total\nnorth,1\n")
    [att] = load_attachments(["s3://mail-test/reports/q4.csv"], conn_id=s3_conn)
    _send(_request(attachments=(att,)))
    [part] = list(_parsed(mail_env.smtp.messages[0].data).iter_attachments())
    assert part.get_filename() == "q4.csv"
    assert part.get_content().replace("\r\n", "\n") == "region,total\nnorth,1\n"


def test_a_non_ascii_local_part_in_a_per_recipient_batch_is_refused_before_any_copy_goes_out(mail_env):
    request = _request(to=("ops@example.com", "jörg@example.com"))
    with pytest.raises(PolicyViolation, match="non-ASCII local part: SMTPUTF8 is not supported") as info:
        send_mail(request, channel=MailChannel.for_conn(), one_message_per_recipient=True)
    assert info.value.rule == "address" and info.value.item == "jörg@example.com"
    assert mail_env.smtp.connections == 0 and mail_env.smtp.messages == []


def test_a_non_ascii_local_part_from_elsewhere_is_refused_before_connecting(mail_env):
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook
    from airflow_secure_mail.mail.outgoing import Outgoing

    data = b"Subject: s\r\n\r\nbody\r\n"
    hook = SecureSmtpHook()
    with pytest.raises(PolicyViolation, match="non-ASCII local part") as raw:
        hook.send(data, sender="jörg@example.com", recipients=["ops@example.com"])
    with pytest.raises(PolicyViolation, match="non-ASCII local part") as built:
        hook.send_many([Outgoing("airflow@example.com", ("ops@example.com", "jörg@example.com"), data)])
    assert raw.value.rule == built.value.rule == "address"
    assert mail_env.smtp.connections == 0 and mail_env.smtp.messages == []
