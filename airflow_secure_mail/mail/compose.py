"""Compose: a MailRequest becomes an ``EmailMessage`` (policy.SMTP) and its exact envelope."""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from html.parser import HTMLParser
from typing import Any

from airflow_secure_mail.errors import PolicyViolation
from airflow_secure_mail.mail.addresses import (
    Mailbox,
    check_decoded,
    check_no_control,
    parse_mailbox,
    parse_mailboxes,
)

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
    declared = att.content_type or mimetypes.guess_type(att.filename)[0] or "application/octet-stream"
    check_decoded(declared, "attachment content_type")
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
            check_decoded(key, "attachment content_type parameter")
            check_decoded(str(value), f"attachment content_type parameter {key}")
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


def _message_id(request: MailRequest, domain: str, digest: str) -> str:
    if request.id_seed is None:
        from email.utils import make_msgid

        return make_msgid(domain=domain)
    seed = hashlib.sha256(f"{request.id_seed}\x00{digest}".encode()).hexdigest()[:40]
    return f"<{seed}@{domain}>"


def _content_digest(request: MailRequest) -> str:
    h = hashlib.sha256()
    for part in (
        request.subject,
        request.text or "",
        request.html or "",
        *request.to,
        *request.cc,
        *request.bcc,
    ):
        h.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    for att in request.attachments:
        h.update(att.filename.encode() + b"\x00" + hashlib.sha256(att.content).digest())
    return h.hexdigest()


def compose(
    request: MailRequest, *, date: Any = None, allow_special_use_domains: bool = False
) -> tuple[EmailMessage, Envelope]:
    """Build the message with ``policy.SMTP`` (refuses CR/LF in headers) and its envelope; Bcc stays out.

    ``allow_special_use_domains`` is ``MailPolicy.allow_special_use_domains`` (``.local``, ``.internal`` …).
    """
    from datetime import UTC, datetime

    special = allow_special_use_domains
    sender = parse_mailbox(request.sender, "sender", allow_special_use_domains=special)
    to, cc, bcc = (
        _addresses(v, what, special) for v, what in ((request.to, "to"), (request.cc, "cc"), (request.bcc, "bcc"))
    )
    if not (to or cc or bcc):
        raise PolicyViolation("no recipients: give at least one of to, cc or bcc.", rule="recipients")
    check_no_control(request.subject, "subject")
    msg = EmailMessage(policy=email_policy.SMTP)
    msg["From"] = formataddr((sender.name, sender.addr)) if sender.name else sender.addr
    if to:
        msg["To"] = ", ".join(_fmt(m) for m in to)
    if cc:
        msg["Cc"] = ", ".join(_fmt(m) for m in cc)
    if request.reply_to:
        msg["Reply-To"] = _fmt(parse_mailbox(request.reply_to, "reply_to", allow_special_use_domains=special))
    msg["Subject"] = request.subject
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = _message_id(request, sender.domain, _content_digest(request))
    for name, value in request.headers:
        check_no_control(name, "header name")
        check_no_control(str(value), f"header {name}")
        if name.lower() in _RESERVED_HEADERS or not name.isascii() or ":" in name or " " in name:
            raise PolicyViolation(
                f"custom header {name!r} is not allowed: use the dedicated parameter or an X- header.",
                rule="header_injection",
                item=name,
            )
        msg[name] = str(value)
    text = request.text
    if text is None and request.html is not None:
        text = html_to_text(request.html)
    # quoted-printable always: 7-bit safe for signing (RFC 3156), protects "From " lines and trailing spaces
    msg.set_content(text or "", cte="quoted-printable")
    if request.html is not None:
        msg.add_alternative(request.html, subtype="html", cte="quoted-printable")
    for att in request.attachments:
        check_decoded(att.filename, "attachment file name")
        kind, params = wire_type(att)
        maintype, _, subtype = kind.partition("/")
        msg.add_attachment(att.content, maintype=maintype, subtype=subtype, filename=att.filename, params=params)
    envelope = Envelope(
        sender=sender.addr,
        recipients=tuple(dict.fromkeys(m.addr for m in (*to, *cc, *bcc))),
        bcc=tuple(m.addr for m in bcc),
    )
    return msg, envelope


def _fmt(m: Mailbox) -> str:
    return formataddr((m.name, m.addr)) if m.name else m.addr
