"""The comparison behind ``verify``: relay fields before the archived bytes are accepted, the message's own
fields there are a forgery, anything else is a difference named by its header or the body."""

from __future__ import annotations

import pytest

from airflow_secure_mail.ops.verify import compare, crlf, date_of, message_ids

SENT = (
    b"From: airflow@example.com\r\nTo: ana@example.com\r\nSubject: [Airflow] FAILED\r\n"
    b"Date: Tue, 08 Dec 2026 03:00:00 +0000\r\nMessage-ID: <a.1@example.com>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n\r\nThe task failed.\r\n"
)


def test_identical_and_relay_prefixed_copies_are_ours():
    assert compare(SENT, SENT) == (True, "byte-identical to the archived copy", ())
    saved = crlf(b"Received: from a\n\tby b; Tue, 8 Dec 2026\nX-Spam: no\n" + SENT.replace(b"\r\n", b"\n"))
    assert compare(saved, SENT) == (
        True,
        "the archived copy, byte-identical, after header fields the relays added",
        ("Received", "X-Spam"),
    )


@pytest.mark.parametrize("field", [b"Subject: win", b"from: x@evil.example", b"Content-Type: text/html", b"Date: x"])
def test_an_own_field_before_the_copy_is_forged(field):
    same, reason, _ = compare(field + b"\r\n" + SENT, SENT)
    assert not same and reason.endswith("field is prepended to the archived copy: forged")


def test_text_that_is_not_a_field_before_the_copy_is_refused():
    assert compare(b"hello there\r\n" + SENT, SENT)[:2] == (
        False,
        "text that is not a header field precedes the archived copy",
    )
    assert compare(b"Bad Name: x\r\n" + SENT, SENT)[0] is False  # a space is not allowed in a field name


def test_differences_are_named():
    assert compare(SENT.replace(b"failed.", b"passed."), SENT)[1] == (
        "content differs from the archived copy: body differs (from byte 9 of the body)"
    )
    changed = SENT.replace(b"To: ana@", b"To: bo@").replace(b"MIME-Version: 1.0\r\n", b"X-New: 1\r\n")
    assert compare(changed, SENT)[1] == (
        "content differs from the archived copy: header To changed; header X-New added; header MIME-Version removed"
    )


def test_message_id_and_date_are_read_without_the_email_parser():
    saved = b"Received: x\nMessage-ID:\n <a.1@example.com>\n" + SENT.replace(b"\r\n", b"\n")
    assert message_ids(saved) == ["<a.1@example.com>"]
    assert date_of(SENT).isoformat() == "2026-12-08T03:00:00+00:00"
    assert message_ids(b"Subject: x\r\n\r\nbody") == []
