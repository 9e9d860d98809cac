"""The header block of a message built elsewhere, judged as the bytes that go on the wire.

Python's ``email`` parser has known CVEs on the versions we support and reads malformed headers
differently from servers and mail readers, so these checks scan the bytes themselves: the header block is
everything up to the first empty line; a field is a line with its continuation lines, named by the bytes
before its first colon (case-insensitive).
"""

from __future__ import annotations

import re
from collections.abc import Collection

from airflow_secure_mail.errors import PolicyViolation

SINGLE_FIELDS = frozenset(
    {"from", "sender", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to", "in-reply-to", "references",
     "mime-version", "content-type", "content-transfer-encoding", "content-disposition"}
)  # fmt: skip
"""Fields RFC 5322 §3.6 and RFC 2045 allow at most once: a second ``From`` is a display-spoofing trick, a
second ``Content-Type`` makes readers disagree on what the body is (one renders the HTML our screen skipped)."""
HIDDEN_FIELDS = frozenset({"bcc", "resent-bcc"})
"""Fields that name hidden recipients: removed before anything is archived or sent."""
MAX_LINE_OCTETS = 998
"""RFC 5322 §2.1.1: a line is at most 998 octets, CRLF excluded; servers refuse longer ones at DATA."""

_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext: printable ASCII except ':'
_CRLF = b"\r\n"


def screen_header_block(data: bytes) -> bytes:
    """``data`` without its ``Bcc`` fields, after refusing what the server or a reader would see otherwise.

    Refused with a PolicyViolation: a bare CR, bare LF or NUL in the header block (``header_injection``), a
    line over 998 octets (``header_line_length``), a line that is no field (``header_syntax``), a second
    single-use field such as ``From`` (``duplicate_header``). The rest of the bytes is left as it was, but for
    a message written with LF line endings only, which gets CRLF throughout.
    """
    data = with_crlf(data)
    head, rest = _split(data)
    fields = _fields(head)
    _refuse_duplicates(fields)
    kept = [lines for name, lines in fields if name not in HIDDEN_FIELDS]
    if len(kept) == len(fields):
        return data
    if not kept:  # Bcc was the only field: the block is now empty, the body follows the empty line
        return rest[len(_CRLF) :]
    return _CRLF.join(line for lines in kept for line in lines) + rest


def with_crlf(data: bytes) -> bytes:
    """LF line endings throughout (no CR anywhere, as ``as_bytes()`` with the default policy writes) become
    CRLF, as the SMTP client would send them, so the archive holds the wire bytes; a mix stays refused."""
    return data.replace(b"\n", _CRLF) if b"\r" not in data and b"\n" in data else data


def field_value(data: bytes, name: str) -> str | None:
    """The unfolded value of the first ``name`` field in the header block, or None (for a checked block)."""
    return next(iter(field_values(data, {name})), None)


def field_values(data: bytes, names: Collection[str]) -> list[str]:
    """The unfolded values of every field named in ``names`` (any case), in order (for a checked block)."""
    wanted = {n.lower() for n in names}
    head, _ = _split(data)
    return [
        b"".join(lines).split(b":", 1)[1].decode("utf-8", "replace").strip()
        for found, lines in _fields(head)
        if found in wanted
    ]


def _split(data: bytes) -> tuple[bytes, bytes]:
    """The header block (without its last CRLF) and the rest (from that CRLF: the empty line and the body)."""
    if data.startswith(_CRLF):
        return b"", data
    end = data.find(_CRLF + _CRLF)
    if end < 0:  # headers only
        return (data[:-2], data[-2:]) if data.endswith(_CRLF) else (data, b"")
    return data[:end], data[end:]


def _fields(head: bytes) -> list[tuple[str, list[bytes]]]:
    """Each field's lower-case name and its lines (the first and its continuations), every line checked."""
    fields: list[tuple[str, list[bytes]]] = []
    for number, line in enumerate(head.split(_CRLF) if head else [], start=1):
        _check_line(line, number)
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise PolicyViolation(
                    "the header block starts with a continuation line: the first line must be a field.",
                    rule="header_syntax",
                    item="line 1",
                )
            fields[-1][1].append(line)
        else:
            fields.append((_name_of(line, number), [line]))
    return fields


def _check_line(line: bytes, number: int) -> None:
    """No bare CR, bare LF or NUL (each splits or ends a line differently per reader); at most 998 octets."""
    for char, label in ((b"\r", "a bare CR"), (b"\n", "a bare LF"), (b"\x00", "a NUL")):
        if char in line:
            raise PolicyViolation(
                f"header line {number} holds {label}: end every header line with CRLF (serialize with "
                "email.policy.SMTP) and remove control characters.",
                rule="header_injection",
                item=f"line {number}",
            )
    if len(line) > MAX_LINE_OCTETS:
        raise PolicyViolation(
            f"header line {number} is {len(line)} octets, over the {MAX_LINE_OCTETS} RFC 5322 allows: fold it "
            "(email.policy.SMTP does) or shorten it.",
            rule="header_line_length",
            item=f"line {number}",
        )


def _name_of(line: bytes, number: int) -> str:
    """The field name before the first colon (obsolete space before the colon allowed), lower case."""
    name, colon, _ = line.partition(b":")
    name = name.rstrip(b" \t")
    if not colon or not _FIELD_NAME.fullmatch(name):
        raise PolicyViolation(
            f"header line {number} is not a 'Name: value' field: fix the header block or end it with an "
            "empty line before the body.",
            rule="header_syntax",
            item=f"line {number}",
        )
    return name.decode("ascii").lower()


def _refuse_duplicates(fields: list[tuple[str, list[bytes]]]) -> None:
    """A second From, To, Subject … (RFC 5322 §3.6 allows one): readers disagree on which one they show."""
    seen: set[str] = set()
    for name, _ in fields:
        if name in SINGLE_FIELDS:
            if name in seen:
                raise PolicyViolation(
                    f"the message has more than one {name.title()} field: RFC 5322 allows one; remove the others.",
                    rule="duplicate_header",
                    item=name,
                )
            seen.add(name)
