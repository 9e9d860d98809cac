"""Compose: a MailRequest becomes an ``EmailMessage`` (policy.SMTP) and its exact envelope."""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from html.parser import HTMLParser
from typing import Any

from airflow_secure_mail.errors import PolicyViolation
from airflow_secure_mail.mail._filetypes import COMPRESSED as _COMPRESSED
from airflow_secure_mail.mail.addresses import (
    Mailbox,
    check_no_control,
    parse_mailbox,
    parse_mailboxes,
)
from airflow_secure_mail.mail.header_block import SINGLE_FIELDS
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.mail.wire import with_headers


class _SmtpPolicy(email_policy.EmailPolicy):
    """``policy.SMTP``, except that a header whose value fits on one continuation line starts on the name's line.

    The standard library folds a 70-78 character value straight after ``Subject:``; RFC 5322 readers drop that
    fold's space, but Python's parser (and some clients) then show a leading space (issue 21, item 8).
    """

    def fold_binary(self, name: str, value: str) -> bytes:
        folded = super().fold_binary(name, value)
        bare = f"{name}:{self.linesep} ".encode("ascii")
        return f"{name}: ".encode("ascii") + folded[len(bare) :] if folded.startswith(bare) else folded

    def fold(self, name: str, value: str) -> str:
        folded: str = super().fold(name, value)
        bare = f"{name}:{self.linesep} "
        return f"{name}: " + folded[len(bare) :] if folded.startswith(bare) else folded


_SMTP = _SmtpPolicy(linesep="\r\n")

_RESERVED_HEADERS = {
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version",
    "content-type", "content-transfer-encoding", "sender", "return-path",
}  # fmt: skip


@dataclass(frozen=True)
class Attachment:
    """One file to attach; ``content_type`` is what the caller claims, the screen judges by content."""

    filename: str
    content: bytes = field(repr=False)
    content_type: str | None = None

    @property
    def declared_type(self) -> str:
        """The bare ``type/subtype`` that goes on the wire (parameters stripped, lower case)."""
        return wire_type(self)[0]


_TOKEN = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def wire_type(att: Attachment) -> tuple[str, dict[str, str]]:
    """``type/subtype`` and parameters of the attachment's Content-Type, each checked as a reader decodes it."""
    guessed, encoding = mimetypes.guess_type(att.filename)
    guessed = _COMPRESSED.get(encoding or "", guessed)  # report.csv.gz is gzip on the wire, not text/csv
    declared = att.content_type or guessed or "application/octet-stream"
    check_no_control(declared, "attachment content_type")
    kind, _, rest = declared.partition(";")
    maintype, slash, subtype = kind.strip().lower().partition("/")
    if not (slash and _TOKEN.match(maintype) and _TOKEN.match(subtype)):
        raise PolicyViolation(
            f"attachment {att.filename!r} has content_type {kind.strip()!r}: give a MIME type such as text/csv.",
            rule="content_type",
            item=att.filename,
        )
    params: dict[str, str] = {}
    if rest.strip():
        from email.headerregistry import HeaderRegistry

        header: Any = HeaderRegistry()("Content-Type", f"{maintype}/{subtype}; {rest.strip()}")
        for key, value in header.params.items():
            check_no_control(key, "attachment content_type parameter")
            check_no_control(str(value), f"attachment content_type parameter {key}")
            if key.lower() not in ("name", "filename"):
                params[key.lower()] = str(value)
    return f"{maintype}/{subtype}", params


@dataclass(frozen=True)
class MailRequest:
    """Everything a caller asks for; validated by :func:`compose`."""

    sender: str
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    reply_to: str | None = None
    id_seed: str | None = None
    """Task-instance identity (dag, task, run, map index); with the content it fixes the Message-ID."""

    def __post_init__(self) -> None:
        for name in ("to", "cc", "bcc"):
            object.__setattr__(self, name, address_list(getattr(self, name)))


def address_list(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``to``/``cc``/``bcc`` as given by a caller (one string, a list, None) as a tuple; compose parses each item."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope: exactly who gets the message, as validated addr-specs."""

    sender: str
    recipients: tuple[str, ...]
    bcc: tuple[str, ...] = ()


class _TextExtractor(HTMLParser):
    _BREAKS = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "table", "section"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")
        elif tag == "td":
            self.parts.append("  ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """A readable plain-text alternative for an HTML body."""
    parser = _TextExtractor()
    parser.feed(html)
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"


def _addresses(values: Any, what: str, special: bool) -> list[Mailbox]:
    if values is None:
        return []
    if isinstance(values, str):
        return parse_mailboxes(values, what, allow_special_use_domains=special)
    return [m for v in values for m in parse_mailboxes(v, what, allow_special_use_domains=special)]


def _message_id(id_seed: str | None, domain: str, digest: str) -> str:
    if id_seed is None:
        from email.utils import make_msgid

        return make_msgid(domain=domain)
    seed = hashlib.sha256(f"{id_seed}\x00{digest}".encode()).hexdigest()[:40]
    return f"<{seed}@{domain}>"


def _content_digest(request: MailRequest) -> str:
    h = hashlib.sha256()
    for part in (request.subject, request.text or "", request.html or "", *request.to, *request.cc, *request.bcc):
        h.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    for att in request.attachments:
        h.update(att.filename.encode() + b"\x00" + hashlib.sha256(att.content).digest())
    return h.hexdigest()


def compose(request: MailRequest, *, allow_special_use_domains: bool = False) -> tuple[EmailMessage, Envelope]:
    """Build the message with ``policy.SMTP`` (refuses CR/LF in headers) and its envelope; Bcc stays out.

    ``allow_special_use_domains`` is ``MailPolicy.allow_special_use_domains`` (``.local``, ``.internal`` …).
    """
    return _compose(request, allow_special_use_domains, None)


@dataclass(frozen=True)
class Composed:
    """A composed message as sent (``wire``), and the MIME tree that screening judges (``message``).

    In ``message`` a large attachment carries a short placeholder: its bytes are judged from the request,
    and its base64 goes straight into ``wire``, so the attachment is never held three times over.
    """

    message: EmailMessage
    envelope: Envelope
    wire: bytes = field(repr=False)


def compose_wire(request: MailRequest, *, allow_special_use_domains: bool = False) -> Composed:
    """:func:`compose`, serialized with ``policy.SMTP``; large attachments are base64-encoded into the bytes once."""
    large: dict[bytes, bytes] = {}
    message, envelope = _compose(request, allow_special_use_domains, large)
    return Composed(message, envelope, _splice(message.as_bytes(policy=_SMTP), large))


_SPLICE_MIN = 256 * 1024
_B64_CHUNK = 57 * 16384  # whole 76-character lines per chunk


def _splice(wire: bytes, large: dict[bytes, bytes]) -> bytes:
    """Replace each placeholder's base64 line by the attachment's base64 lines (CRLF, 76 characters)."""
    if not large:
        return wire
    import base64

    found = sorted((wire.index(b"\r\n" + token + b"\r\n"), token) for token in large)
    parts, pos = [], 0
    for index, token in found:
        parts.append(wire[pos : index + 2])
        content = large[token]
        for start in range(0, len(content), _B64_CHUNK):
            parts.append(base64.encodebytes(content[start : start + _B64_CHUNK]).replace(b"\n", b"\r\n"))
        parts[-1] = parts[-1][:-2]  # the placeholder's own CRLF follows
        pos = index + 2 + len(token)
    parts.append(wire[pos:])
    return b"".join(parts)


def _compose(
    request: MailRequest, allow_special_use_domains: bool, large: dict[bytes, bytes] | None
) -> tuple[EmailMessage, Envelope]:
    special = allow_special_use_domains
    sender = parse_mailbox(request.sender, "sender", allow_special_use_domains=special)
    to, cc, bcc = (
        _addresses(v, what, special) for v, what in ((request.to, "to"), (request.cc, "cc"), (request.bcc, "bcc"))
    )
    if not (to or cc or bcc):
        raise PolicyViolation("no recipients: give at least one of to, cc or bcc.", rule="recipients")
    msg = _headers(request, sender, to, cc, special)
    msg["Message-ID"] = _message_id(request.id_seed, sender.domain, _content_digest(request))
    _add_custom_headers(msg, request.headers)
    _add_body(msg, request, large)
    envelope = Envelope(
        sender=sender.addr,
        recipients=tuple(dict.fromkeys(m.addr for m in (*to, *cc, *bcc))),
        bcc=tuple(m.addr for m in bcc),
    )
    return msg, envelope


def _headers(
    request: MailRequest, sender: Mailbox, to: list[Mailbox], cc: list[Mailbox], special: bool
) -> EmailMessage:
    from datetime import UTC, datetime

    check_no_control(request.subject, "subject")
    msg = EmailMessage(policy=_SMTP)
    msg["From"] = _fmt(sender)
    if to:
        msg["To"] = ", ".join(_fmt(m) for m in to)
    if cc:
        msg["Cc"] = ", ".join(_fmt(m) for m in cc)
    if request.reply_to:
        msg["Reply-To"] = _fmt(parse_mailbox(request.reply_to, "reply_to", allow_special_use_domains=special))
    msg["Subject"] = request.subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    return msg


def _add_custom_headers(msg: EmailMessage, headers: tuple[tuple[str, str], ...]) -> None:
    for name, value in headers:
        check_no_control(name, "header name")
        check_no_control(str(value), f"header {name}")
        reserved = name.lower() in _RESERVED_HEADERS or name.lower().startswith("resent-")  # restore writes those
        if reserved or not name.isascii() or ":" in name or " " in name:
            raise PolicyViolation(
                f"custom header {name!r} is not allowed: use the dedicated parameter or an X- header.",
                rule="header_injection",
                item=name,
            )
        if name.lower() in SINGLE_FIELDS and name in msg:  # RFC 5322 allows one; EmailMessage checks only some
            raise PolicyViolation(
                f"custom header {name!r} is given twice (or also by its parameter): RFC 5322 allows one.",
                rule="duplicate_header",
                item=name,
            )
        msg[name] = str(value)


def _add_body(msg: EmailMessage, request: MailRequest, large: dict[bytes, bytes] | None) -> None:
    text = request.text
    if text is None and request.html is not None:
        text = html_to_text(request.html)
    # quoted-printable always: 7-bit safe for signing (RFC 3156), protects "From " lines and trailing spaces
    msg.set_content(text or "", cte="quoted-printable")
    if request.html is not None:
        msg.add_alternative(request.html, subtype="html", cte="quoted-printable")
    for att in request.attachments:
        check_no_control(att.filename, "attachment file name")
        kind, params = wire_type(att)
        maintype, _, subtype = kind.partition("/")
        content = att.content
        if large is not None and len(content) >= _SPLICE_MIN:
            import base64
            import secrets

            placeholder = secrets.token_bytes(48)  # one 64-character base64 line, replaced in the wire bytes
            large[base64.b64encode(placeholder)] = content
            content = placeholder
        msg.add_attachment(
            content, maintype=maintype, subtype=subtype, filename=att.filename, params=params, cte="base64"
        )


def compose_each(
    request: MailRequest, *, allow_special_use_domains: bool = False
) -> tuple[EmailMessage, list[Outgoing]]:
    """One copy per recipient (each alone in ``To``), composed once: copies differ only in ``To`` and Message-ID.

    Returns the first copy's message (what screening judges: every copy has the same content) and all copies.
    """
    special = allow_special_use_domains
    everyone = list(
        {m.addr: m for v, what in ((request.to, "to"), (request.cc, "cc"), (request.bcc, "bcc"))
         for m in _addresses(v, what, special)}.values()
    )  # fmt: skip
    if not everyone:
        raise PolicyViolation("no recipients: give at least one of to, cc or bcc.", rule="recipients")
    first = replace(request, to=(_fmt(everyone[0]),), cc=(), bcc=(), id_seed=_seed_for(request, everyone[0]))
    composed = compose_wire(first, allow_special_use_domains=special)
    message, envelope, wire = composed.message, composed.envelope, composed.wire
    copies = [Outgoing(envelope.sender, envelope.recipients, wire, message["Message-ID"])]
    digest = _content_digest(replace(request, to=(), cc=(), bcc=()))
    domain = envelope.sender.rpartition("@")[2]
    for rcpt in everyone[1:]:
        message_id = _message_id(_seed_for(request, rcpt), domain, f"{digest}|{rcpt.addr}")
        data = with_headers(wire, To=_fmt(rcpt), Message_ID=message_id)
        copies.append(Outgoing(envelope.sender, (rcpt.addr,), data, message_id))
    return message, copies


def _seed_for(request: MailRequest, rcpt: Mailbox) -> str | None:
    return f"{request.id_seed}|{rcpt.addr}" if request.id_seed else None


def _fmt(m: Mailbox) -> str:
    return formataddr((m.name, m.addr)) if m.name else m.addr


def parts_of(request: MailRequest) -> list[tuple[str, bytes]]:
    """What a malware scan judges: the plaintext bodies and every attachment, by name, before protection."""
    bodies = (("text body", request.text), ("html body", request.html))
    return [(n, b.encode("utf-8")) for n, b in bodies if b] + [(a.filename, a.content) for a in request.attachments]
