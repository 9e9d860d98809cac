"""mail/compose.py: a MailRequest becomes an EmailMessage and its envelope (pure, no server)."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_secure_mail.errors import PolicyViolation
from airflow_secure_mail.mail.compose import Attachment, Envelope, MailRequest, compose, html_to_text
from airflow_secure_mail.mail.screen import MailPolicy, screen
from tests.strategies import addr_specs

CONTROL = "contains a control character"


def _request(**kw) -> MailRequest:
    base = {"sender": "airflow@example.com", "to": ("ops@example.com",), "subject": "s", "text": "body"}
    base.update(kw)
    return MailRequest(**base)


def _wire(request: MailRequest) -> tuple[bytes, Envelope]:
    message, envelope = compose(request)
    return message.as_bytes(policy=email.policy.SMTP), envelope


def _parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def _head(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"subject": "hi\r\nBcc: victim@evil.example"}, f"subject {CONTROL}"),
        ({"to": ("Eve\r\nBcc: x@evil.example <eve@example.com>",)}, f"to {CONTROL}"),
        ({"cc": ("eve@example.com\nBcc: x@evil.example",)}, f"cc {CONTROL}"),
        ({"reply_to": "eve@example.com\r\nBcc: x@evil.example"}, f"reply_to {CONTROL}"),
        ({"attachments": (Attachment("a.csv\r\nX-Evil: 1", b"a,b\n"),)}, f"attachment file name {CONTROL}"),
        ({"headers": (("X-Report", "ok\nBcc: x@evil.example"),)}, f"header X-Report {CONTROL}"),
        ({"headers": (("X-Bad\r\nBcc", "x"),)}, f"header name {CONTROL}"),
        ({"sender": "airflow@example.com\r\nBcc: x@evil.example"}, f"sender {CONTROL}"),
        (
            {"attachments": (Attachment("a.csv", b"a,b\n", content_type="text/csv\r\nBcc: x@evil.example"),)},
            f"attachment content_type {CONTROL}",
        ),
    ],
    ids=[
        "subject", "display_name", "cc", "reply_to", "file_name", "header_value", "header_name", "sender",
        "content_type",
    ],
)  # fmt: skip
def test_crlf_in_any_field_is_refused_naming_the_field(field, message):
    with pytest.raises(PolicyViolation, match=message) as info:
        compose(_request(**field))
    assert info.value.rule == "header_injection"


@pytest.mark.parametrize("breaker", ["\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x00"])
def test_unicode_line_breaks_and_nul_are_refused_like_crlf(breaker):
    """str.splitlines() breaks on these too; found by a property test (NEL in a header value)."""
    with pytest.raises(PolicyViolation, match=f"header X-Report {CONTROL}") as info:
        compose(_request(headers=(("X-Report", f"ok{breaker}Bcc: x@evil.example"),)))
    assert info.value.rule == "header_injection"


@pytest.mark.parametrize("name", ["Bcc", "From", "message-id", "Content-Type", "X Report", "Ümlaut"])
def test_custom_headers_may_not_replace_ours_or_be_malformed(name):
    with pytest.raises(PolicyViolation, match=f"custom header {name!r} is not allowed") as info:
        compose(_request(headers=((name, "x"),)))
    assert (info.value.rule, info.value.item) == ("header_injection", name)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"headers": (("References", "<a@x>"), ("references", "<b@x>"))}, "references"),
        ({"headers": (("In-Reply-To", "<a@x>"), ("In-Reply-To", "<b@x>"))}, "in-reply-to"),
        ({"reply_to": "r@example.com", "headers": (("Reply-To", "evil@example.net"),)}, "reply-to"),
    ],
    ids=["references", "in_reply_to", "reply_to_twice"],
)
def test_a_single_use_header_given_twice_is_refused_not_a_raw_error(fields, name):
    with pytest.raises(PolicyViolation, match=f"(?i)custom header {name!r} is given twice") as info:
        compose(_request(**fields))
    assert (info.value.rule, info.value.item.lower()) == ("duplicate_header", name)


@pytest.mark.parametrize("name", ["Resent-Bcc", "resent-to", "Resent-From"])
def test_a_resent_header_is_not_a_custom_header(name):
    """Resent-* lines are restore's to write; a Resent-Bcc would name a hidden recipient on the wire."""
    with pytest.raises(PolicyViolation, match=f"custom header {name!r} is not allowed") as info:
        compose(_request(headers=((name, "x@example.com"),)))
    assert info.value.rule == "header_injection"


def test_a_request_without_recipients_is_refused():
    with pytest.raises(PolicyViolation, match="no recipients: give at least one of to, cc or bcc") as info:
        compose(_request(to=()))
    assert info.value.rule == "recipients"


def test_an_attachment_type_that_is_not_a_mime_type_is_refused():
    with pytest.raises(PolicyViolation, match=r"has content_type 'csv': give a MIME type such as text/csv") as info:
        compose(_request(attachments=(Attachment("a.csv", b"a,b\n", content_type="csv"),)))
    assert (info.value.rule, info.value.item) == ("content_type", "a.csv")


def test_bcc_is_in_envelope_not_headers():
    data, envelope = _wire(_request(cc=("Copy <copy@example.com>",), bcc=("hidden@example.com",)))
    assert envelope == Envelope(
        "airflow@example.com", ("ops@example.com", "copy@example.com", "hidden@example.com"), ("hidden@example.com",)
    )
    assert b"hidden@example.com" not in data and b"bcc" not in _head(data).lower()
    assert _parsed(data)["Cc"] == "Copy <copy@example.com>"


def test_envelope_lists_each_recipient_once_in_order():
    _, envelope = _wire(_request(to=("a@example.com", "b@example.com"), cc=("A@EXAMPLE.com",), bcc=("b@example.com",)))
    assert envelope.recipients == ("a@example.com", "b@example.com", "A@example.com")


def test_html_only_gets_a_text_alternative():
    html = "<h1>Totals</h1><p>Revenue <b>42</b></p><script>x()</script><style>p{}</style>"
    message = _parsed(_wire(_request(text=None, html=html))[0])
    assert message.get_body(("plain",)).get_content().split() == ["Totals", "Revenue", "42"]
    assert "<b>42</b>" in message.get_body(("html",)).get_content()


def test_html_to_text_keeps_rows_and_paragraphs_apart():
    assert html_to_text("<table><tr><td>a</td><td>1</td></tr><tr><td>b</td></tr></table><p>end</p>") == (
        "a 1\n\nb\n\nend\n"
    )


@pytest.mark.parametrize("body", ["line one\n.\nline two\n", "line one\r.\r\nline two\r\n", ".\r\nQUIT\r\n"])
def test_every_body_line_ends_in_crlf_and_the_text_survives(body):
    """A lone "." line stays in the body: the transport dot-stuffs it (tests/test_pipeline_screening.py)."""
    data, _ = _wire(_request(text=body))
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None
    text = _parsed(data).get_body(("plain",)).get_content()
    assert text.replace("\r\n", "\n").strip("\n") == body.replace("\r\n", "\n").replace("\r", "\n").strip("\n")


def test_non_ascii_attachment_name_survives():
    data, _ = _wire(_request(attachments=(Attachment("Bericht Ümsatz 2026 – Q4.csv", b"a;b\n"),)))
    [part] = list(_parsed(data).iter_attachments())
    assert part.get_filename() == "Bericht Ümsatz 2026 – Q4.csv"
    assert part.get_content_type() == "text/csv"


def test_valid_content_type_parameters_reach_the_wire_and_names_stay_ours():
    att = Attachment("report.csv", b"a,b\n", content_type='text/csv; charset=utf-8; header=present; name="x.exe"')
    data, _ = _wire(_request(attachments=(att,)))
    assert b'Content-Type: text/csv; charset="utf-8"; header="present"' in data
    assert b"x.exe" not in data


def test_message_id_is_deterministic_for_the_same_task_instance():
    a, _ = compose(_request(id_seed="dag|task|run|-1"))
    b, _ = compose(_request(id_seed="dag|task|run|-1"))
    c, _ = compose(_request(id_seed="dag|task|run2|-1"))
    d, _ = compose(_request(id_seed="dag|task|run|-1", subject="other"))
    assert a["Message-ID"] == b["Message-ID"]
    assert len({a["Message-ID"], c["Message-ID"], d["Message-ID"]}) == 3
    assert a["Message-ID"].endswith("@example.com>")


def test_special_use_sender_and_recipients_compose_when_allowed():
    request = _request(to=("Ops <OPS@Mail.Corp.LOCAL>", "b@relay.internal"), sender="airflow@airflow.internal")
    with pytest.raises(PolicyViolation, match="special-use domain .internal"):
        compose(request)
    _, envelope = compose(request, allow_special_use_domains=True)
    assert envelope == Envelope("airflow@airflow.internal", ("OPS@mail.corp.local", "b@relay.internal"))


# -- properties ---------------------------------------------------------------------------------

_header_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
_ALLOWED_HEADERS = {
    "from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version", "content-type",
    "content-transfer-encoding", "x-report",
}  # fmt: skip
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    head = _head(data)
    assert _BARE_CR_OR_LF.search(head) is None
    names = {line.split(b":", 1)[0].lower().decode() for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")}
    assert names <= _ALLOWED_HEADERS
    assert envelope.recipients == ("ops@example.com",)


@st.composite
def _recipients(draw: st.DrawFn) -> list[tuple[str, str, str]]:
    """(role, as written, normalized): distinct addresses, each in to, cc or bcc, at least one of them."""
    specs = draw(st.lists(addr_specs(), min_size=1, max_size=6, unique_by=lambda s: s[1].lower()))
    return [(draw(st.sampled_from(["to", "cc", "bcc"])), w, n) for w, n in specs]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_recipients(), st.text(alphabet="abcdefghij ,.", max_size=10))
def test_envelope_is_exactly_the_parsed_to_cc_bcc_and_bcc_is_never_in_a_header(recipients, name):
    by_role = {role: tuple(f'"{name}" <{w}>' for r, w, _ in recipients if r == role) for role in ("to", "cc", "bcc")}
    data, envelope = _wire(_request(**by_role))
    expected = tuple(n for role in ("to", "cc", "bcc") for r, _, n in recipients if r == role)
    assert envelope.recipients == expected
    assert envelope.bcc == tuple(n for r, _, n in recipients if r == "bcc")
    assert _BARE_CR_OR_LF.search(_head(data)) is None
    parsed = _parsed(data)
    assert "Bcc" not in parsed
    for role in ("to", "cc"):
        shown = [a.addr_spec for a in parsed[role].addresses] if parsed[role] is not None else []
        assert shown == [n for r, _, n in recipients if r == role]


@pytest.mark.parametrize(
    ("name", "wire"),
    [("report.csv.gz", "application/gzip"), ("dump.json.bz2", "application/x-bzip2"), ("x.tar.xz", "application/x-xz"),
     ("report.csv", "text/csv")],
)  # fmt: skip
def test_a_compressed_file_name_gets_the_compression_type_not_the_type_inside(name, wire):
    from airflow_secure_mail.mail.compose import wire_type

    assert wire_type(Attachment(name, b"x"))[0] == wire


def test_compose_and_screen_read_compressed_names_from_one_table():
    """A compressed name's wire type is the type screen expects of its bytes (issue 19 follow-up, finding 10)."""
    from airflow_secure_mail.mail._filetypes import COMPRESSED
    from airflow_secure_mail.mail.compose import wire_type
    from airflow_secure_mail.mail.screen import _implied_type

    for name in ("report.csv.gz", "report.csv.bz2", "backup.tar.xz", "report.csv.Z", "report.csv.br"):
        assert wire_type(Attachment(name, b""))[0] == _implied_type(name) in COMPRESSED.values()
