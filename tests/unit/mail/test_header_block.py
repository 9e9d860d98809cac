"""mail/header_block.py: the raw header block of a message built elsewhere, judged as bytes.

The send path (hook → catcher, nothing connected on a refusal) is tested in test_hook.py; here the rules alone,
and that our own compose output always meets them.
"""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from airflow_secure_mail.errors import PolicyViolation
from airflow_secure_mail.mail.compose import MailRequest, compose_each, compose_wire
from airflow_secure_mail.mail.header_block import SINGLE_FIELDS, field_value, screen_header_block
from tests.strategies import addr_specs

BODY = b"\r\n\r\nbody line\r\nBcc: in-the-body@example.com\r\n"


def test_every_bcc_field_and_its_continuation_lines_are_removed_and_the_rest_kept_byte_for_byte():
    data = b"From: a@example.com\r\nBcc: x@example.com,\r\n\ty@example.com\r\nSubject: s\r\n  folded" + BODY
    assert screen_header_block(data) == b"From: a@example.com\r\nSubject: s\r\n  folded" + BODY


@pytest.mark.parametrize("spelling", [b"Bcc", b"BCC", b"bcc", b"Bcc "])
def test_bcc_is_found_in_any_case_and_as_the_only_field(spelling):
    assert screen_header_block(spelling + b": x@example.com" + BODY) == BODY[2:]
    assert screen_header_block(b"To: o@example.com\r\n" + spelling + b": x@example.com" + BODY) == (
        b"To: o@example.com" + BODY
    )


def test_a_block_without_bcc_is_returned_as_the_same_object():
    data = b"From: a@example.com\r\nSubject: s" + BODY
    assert screen_header_block(data) is data


@pytest.mark.parametrize("name", sorted(SINGLE_FIELDS))
def test_a_second_single_use_field_is_refused_in_any_case(name):
    first, second = name.title().encode(), name.upper().encode()
    data = b"X-A: 1\r\n" + first + b": one\r\nX-B: 2\r\n" + second + b":\r\n two" + BODY
    with pytest.raises(PolicyViolation, match=f"more than one {name.title()} field") as info:
        screen_header_block(data)
    assert (info.value.rule, info.value.item) == ("duplicate_header", name)


def test_fields_that_may_repeat_are_kept():
    data = b"Received: a\r\nReceived: b\r\nResent-To: x@example.com\r\nResent-To: y@example.com\r\nX-A: 1\r\nX-A: 2"
    assert screen_header_block(data + BODY) == data + BODY


@pytest.mark.parametrize(("length", "refused"), [(998, False), (999, True)])
def test_a_header_line_may_have_998_octets_and_no_more(length, refused):
    line = b"X-Long: " + b"a" * (length - 8)
    for data in (line + BODY, b"X-A: 1\r\n " + b"b" * (length - 1) + BODY):  # a field line, a continuation
        if not refused:
            assert screen_header_block(data) is data
            continue
        with pytest.raises(PolicyViolation, match=f"is {length} octets, over the 998") as info:
            screen_header_block(data)
        assert info.value.rule == "header_line_length"


def test_a_long_line_in_the_body_is_not_a_header_line():
    data = b"Subject: s" + BODY + b"a" * 5000 + b"\r\n"
    assert screen_header_block(data) is data


@pytest.mark.parametrize(
    ("head", "what"),
    [(b"Subject: s\nBcc: x", "a bare LF"), (b"Subject: s\rBcc: x", "a bare CR"), (b"Subject: s\x00", "a NUL"),
     (b"Subject: s\n\nbody", "a bare LF")],
)  # fmt: skip
def test_bare_cr_bare_lf_and_nul_in_the_header_block_are_refused(head, what):
    with pytest.raises(PolicyViolation, match=what) as info:
        screen_header_block(head + BODY)
    assert info.value.rule == "header_injection"


def test_a_message_with_lf_line_endings_only_gets_crlf_throughout():
    assert screen_header_block(b"From: a@example.com\nSubject: s\n\nbody\n") == (
        b"From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    )


def test_a_message_mixing_lf_and_crlf_is_refused_with_what_to_do():
    with pytest.raises(PolicyViolation, match=r"end every header line with CRLF \(serialize with email.policy.SMTP\)"):
        screen_header_block(b"From: a@example.com\r\nSubject: s\nBcc: x@evil.example\n\nbody\n")


@pytest.mark.parametrize(
    "head",
    [b" Subject: s", b"From a@example.com Mon Dec  7 12:00:00 2026\r\nSubject: s", b"Subject: s\r\nnot a field",
     b"Sub ject: s", b": empty name"],
    ids=["continuation_first", "mbox_from_line", "no_colon", "space_in_name", "empty_name"],
)  # fmt: skip
def test_a_line_that_is_no_field_is_refused(head):
    with pytest.raises(PolicyViolation, match="not a 'Name: value' field|starts with a continuation") as info:
        screen_header_block(head + BODY)
    assert info.value.rule == "header_syntax"


def test_field_value_unfolds_the_first_field():
    data = b"X-A: 1\r\nMessage-ID:\r\n <id@example.com>\r\nSubject: s" + BODY
    assert field_value(data, "message-id") == "<id@example.com>"
    assert field_value(data, "References") is None


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=1200)


@settings(max_examples=60, deadline=None)
@given(
    subject=_TEXT,
    name=st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=200),
    header=_TEXT,
    specs=st.lists(addr_specs(), min_size=1, max_size=4),
    per_recipient=st.booleans(),
)
def test_our_compose_output_always_passes_the_same_header_checks(subject, name, header, specs, per_recipient):
    from airflow_secure_mail.mail.addresses import check_decoded

    try:  # values a reader would decode into control characters are refused by compose, as they should be
        check_decoded(subject, "s")
        check_decoded(name, "n")
        check_decoded(header, "h")
    except PolicyViolation:
        event("refused before compose")
        return
    to = tuple(f"{name} <{spec}>" if name.strip() and '"' not in name and "\\" not in name else spec
               for spec, _ in specs)  # fmt: skip
    request = MailRequest(sender="a@example.com", to=to, bcc=("hidden@example.com",), subject=subject,
                          text="t", headers=(("X-Note", header),))  # fmt: skip
    try:
        wires = [c.data for c in compose_each(request)[1]] if per_recipient else [compose_wire(request).wire]
    except PolicyViolation:  # e.g. a display name that is not one mailbox: refused before any bytes exist
        event("refused by compose")
        return
    event("composed")
    for wire in wires:
        assert screen_header_block(wire) is wire  # nothing refused, nothing removed (compose writes no Bcc)
