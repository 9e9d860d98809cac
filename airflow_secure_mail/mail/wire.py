"""Header surgery on serialized messages: split, pick and replace whole header fields as bytes.

Protection signs the bytes it is given and per-recipient copies differ only in ``To`` and ``Message-ID``,
so both work on the wire form instead of re-serializing a MIME tree (which costs more and re-folds).
"""

from __future__ import annotations

from email import policy as email_policy
from email.message import EmailMessage


def split_fields(data: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded continuation lines) and the body."""
    head, _, body = data.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, body


def field_name(field_bytes: bytes) -> str:
    return field_bytes.split(b":", 1)[0].strip().decode("ascii").lower()


def join(fields: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(fields) + b"\r\n\r\n" + body


def with_headers(data: bytes, **values: str) -> bytes:
    """``data`` with the named header fields (``To``, ``Message_ID`` …) replaced, each folded by ``policy.SMTP``.

    Values pass through ``EmailMessage``, which refuses CR/LF, unless they are short plain ASCII (the common
    case of a per-recipient copy), which is written as is; callers give validated addresses.
    """
    replacements = {}
    slow = {}
    for key, value in values.items():
        name = key.replace("_", "-")
        line = f"{name}: {value}"
        if len(line) <= 78 and line.isascii() and line.isprintable():
            replacements[name.lower()] = line.encode("ascii")
        else:
            slow[name] = value
    if slow:
        fresh = EmailMessage(policy=email_policy.SMTP)
        for name, value in slow.items():
            fresh[name] = value
        new_fields, _ = split_fields(fresh.as_bytes())
        replacements.update({field_name(f): f for f in new_fields if f})
    fields, body = split_fields(data)
    out = [replacements.pop(field_name(f), f) for f in fields]
    out.extend(replacements.values())
    return join(out, body)
