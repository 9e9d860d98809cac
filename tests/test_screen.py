"""Screening what is emitted: decoded MIME parameters, declared types, special-use domains (real SMTP catcher)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_secure_mail.errors import PolicyViolation
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.mail.compose import Attachment, MailRequest, compose
from airflow_secure_mail.mail.screen import MailPolicy, screen
from airflow_secure_mail.pipeline import send_mail

CSV = b"name,amount\nalice,10\n"
INJECTED = "Bcc: attacker@evil.example"


def _request(*attachments: Attachment, to: tuple[str, ...] = ("ops@example.com",), sender="airflow@example.com"):
    return MailRequest(sender=sender, to=to, subject="report", text="see attached", attachments=attachments)


def _send(request: MailRequest, policy: MailPolicy | None = None):  # type: ignore[no-untyped-def]
    return send_mail(request, hook=SecureSmtpHook(), policy=policy)


def _refused_before_connecting(mail_env, request: MailRequest, rule: str, policy: MailPolicy | None = None) -> str:
    with pytest.raises(PolicyViolation) as info:
        _send(request, policy)
    assert info.value.rule == rule
    assert mail_env.smtp.connections == 0 and mail_env.smtp.messages == []
    return str(info.value)


@pytest.mark.parametrize(
    "filename",
    [
        "=?utf-8?q?r=0D=0ABcc:_attacker@evil.example?=.csv",
        "=?utf-8?b?cg0KQmNjOiBhdHRhY2tlckBldmlsLmV4YW1wbGU=?=.csv",
        "=?iso-8859-1?q?r=0ABcc:_attacker@evil.example?=.csv",
        "utf-8''r%0D%0ABcc%3A%20attacker%40evil.example.csv",
    ],
    ids=["rfc2047-q", "rfc2047-b", "rfc2047-lf-latin1", "rfc2231"],
)
def test_encoded_file_name_decoding_to_crlf_is_refused(mail_env, filename):
    message = _refused_before_connecting(mail_env, _request(Attachment(filename, CSV)), "header_injection")
    assert "attachment file name" in message


@pytest.mark.parametrize(
    "content_type",
    [
        'text/csv; name="=?utf-8?q?r=0D=0ABcc:_attacker@evil.example?="',
        "text/csv; name*=utf-8''r%0D%0ABcc%3A%20attacker%40evil.example",
        "text/csv\r\nBcc: attacker@evil.example",
    ],
    ids=["rfc2047-param", "rfc2231-param", "raw-crlf"],
)
def test_content_type_parameter_decoding_to_crlf_is_refused(mail_env, content_type):
    att = Attachment("report.csv", CSV, content_type=content_type)
    _refused_before_connecting(mail_env, _request(att), "header_injection")


def test_emitted_part_headers_are_screened_even_if_compose_let_them_through():
    """Defence in depth: a part header added after compose that decodes to CR/LF is caught by screen."""
    message, envelope = compose(_request(Attachment("report.csv", CSV)))
    [part] = list(message.iter_attachments())
    part.set_param("name", "=?utf-8?q?r=0D=0ABcc:_attacker@evil.example?=")
    with pytest.raises(PolicyViolation, match="MIME part .* Content-Type") as info:
        screen(message, envelope, MailPolicy(), (Attachment("report.csv", CSV),))
    assert info.value.rule == "header_injection"


def test_valid_content_type_parameters_reach_the_wire_without_injection(mail_env):
    att = Attachment("report.csv", CSV, content_type="text/csv; charset=utf-8; header=present")
    _send(_request(att))
    [received] = mail_env.smtp.messages
    assert b'Content-Type: text/csv; charset="utf-8"; header="present"' in received.data
    assert INJECTED.encode() not in received.data


@given(st.text(min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_no_file_name_makes_an_extra_header_line(name):
    """Whatever the file name, either compose/screen refuse it or the part has exactly our three headers."""
    from email import message_from_bytes
    from email import policy as email_policy

    request = _request(Attachment(f"{name}.csv", CSV))
    try:
        message, envelope = compose(request)
        screen(message, envelope, MailPolicy(), request.attachments)
    except PolicyViolation:
        return
    wire = message.as_bytes(policy=email_policy.SMTP)
    parsed = message_from_bytes(wire, policy=email_policy.default)
    [part] = list(parsed.iter_attachments())
    assert sorted(k.lower() for k in part) == [
        "content-disposition",
        "content-transfer-encoding",
        "content-type",
        "mime-version",
    ]


# -- declared types ---------------------------------------------------------------------------


def test_csv_declared_html_is_refused(mail_env):
    att = Attachment("report.csv", b"name\n<img src=x onerror=alert(1)>\n", content_type="text/html")
    message = _refused_before_connecting(mail_env, _request(att), "allowed_attachment_types")
    assert "would be sent as text/html" in message


def test_declared_type_must_agree_with_content_even_when_both_are_allowed(mail_env):
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    att = Attachment("report.png", pdf, content_type="image/png")
    message = _refused_before_connecting(mail_env, _request(att), "declared_type_mismatch")
    assert "declared image/png but its content is application/pdf" in message


def test_text_family_declared_types_agree_with_text_content(mail_env):
    _send(_request(Attachment("report.csv", CSV, content_type="text/plain")))
    [received] = mail_env.smtp.messages
    assert b"Content-Type: text/plain" in received.data


# -- special-use domains ------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["ops@mail.corp.local", "ops@relay.internal", "ops@host.test", "ops@x.alt"])
def test_special_use_domains_are_refused_by_default_and_say_how_to_allow(mail_env, address):
    message = _refused_before_connecting(mail_env, _request(to=(address,)), "special_use_domain")
    assert "allow_special_use_domains=True" in message


def test_special_use_domains_are_delivered_when_the_policy_allows(mail_env):
    policy = MailPolicy(allow_special_use_domains=True)
    _send(_request(to=("Ops <OPS@Mail.Corp.LOCAL>", "b@relay.internal"), sender="airflow@airflow.internal"), policy)
    [received] = mail_env.smtp.messages
    assert received.rcpt_tos == ["OPS@mail.corp.local", "b@relay.internal"]
    assert received.mail_from == "airflow@airflow.internal"


def test_allowed_special_use_domain_still_gets_syntax_checks(mail_env):
    policy = MailPolicy(allow_special_use_domains=True)
    _refused_before_connecting(mail_env, _request(to=("ops@local",)), "address", policy)
    _refused_before_connecting(mail_env, _request(to=("ops@bad_label.local",)), "address", policy)


# -- HTML attachments ---------------------------------------------------------------------------

HTML_REPORT = b"<!DOCTYPE html>\n<html><body><h1>Summary</h1><p>42 rows loaded.</p></body></html>\n"
HTML_ALLOWED = MailPolicy(allowed_attachment_types=(*MailPolicy().allowed_attachment_types, "text/html"))


def test_html_attachment_is_off_by_default_and_the_error_says_how_to_allow_it(mail_env):
    message = _refused_before_connecting(
        mail_env, _request(Attachment("summary.html", HTML_REPORT)), "allowed_attachment_types"
    )
    assert "would be sent as text/html" in message
    assert "add 'text/html' to allowed_attachment_types" in message


def test_allowed_html_attachment_is_delivered_as_html_by_file_name(mail_env):
    _send(_request(Attachment("summary.html", HTML_REPORT)), HTML_ALLOWED)
    [received] = mail_env.smtp.messages
    assert b"Content-Type: text/html" in received.data
    assert b'filename="summary.html"' in received.data


def test_allowed_html_attachment_with_active_content_is_refused_naming_the_file(mail_env):
    evil = HTML_REPORT.replace(b"<p>", b'<p onclick="steal()">')
    message = _refused_before_connecting(
        mail_env, _request(Attachment("summary.html", evil)), "html_event_handler", HTML_ALLOWED
    )
    assert message.startswith("attachment 'summary.html':")


def test_text_that_is_not_html_cannot_travel_as_an_html_attachment(mail_env):
    att = Attachment("summary.html", b"name,amount\nalice,10\n")
    _refused_before_connecting(mail_env, _request(att), "extension_mismatch", HTML_ALLOWED)
