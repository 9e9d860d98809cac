"""Messages built outside :func:`~airflow_secure_mail.mail.compose.compose` (``SecureSmtpHook.send``, restore's
resend): their envelope, their wire bytes, and the parsed view that screening judges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from email import policy as email_policy
from email.message import EmailMessage, Message

from airflow_secure_mail.errors import ConfigurationError, PolicyViolation
from airflow_secure_mail.mail.addresses import normalize_domain, parse_mailbox
from airflow_secure_mail.mail.compose import Attachment
from airflow_secure_mail.mail.header_block import (
    HIDDEN_FIELDS,
    field_value,
    field_values,
    screen_header_block,
    with_crlf,
)
from airflow_secure_mail.mail.outgoing import Outgoing


def envelope_of(message: EmailMessage) -> tuple[str | None, list[str], list[str]]:
    """Envelope sender, recipients (To, Cc, Bcc) and the Bcc ones, as addr-specs from the headers."""
    found: dict[str, list[str]] = {}
    for name in ("To", "Cc", "Bcc"):
        found[name] = [
            a.addr_spec for h in message.get_all(name) or () for a in getattr(h, "addresses", ()) if a.addr_spec
        ]
    sender_header = message.get("From")
    addrs = getattr(sender_header, "addresses", ()) if sender_header is not None else ()
    everyone = list(dict.fromkeys([*found["To"], *found["Cc"], *found["Bcc"]]))
    return (addrs[0].addr_spec if addrs else None), everyone, found["Bcc"]


def outgoing_from(
    message: Message | bytes,
    *,
    sender: str | None,
    recipients: Sequence[str] | None,
    default_sender: str | None,
    resend_of: str | None = None,
    allow_special_use_domains: bool = False,
) -> Outgoing:
    """The copy to send: envelope from the arguments, else the headers; Bcc never reaches the wire bytes.

    ``allow_special_use_domains`` is the send's ``MailPolicy.allow_special_use_domains``: the caller resolves
    the policy (argument, else the connection's) before the envelope is parsed.
    """
    data, header_sender, header_rcpts, hidden = _wire_and_envelope(message)
    sender = sender or header_sender
    recipients = list(recipients) if recipients is not None else header_rcpts
    hidden_text = _hidden_fields_text(data)
    data = screen_header_block(data)
    sender = sender or default_sender
    if not sender:
        raise ConfigurationError("no sender: pass sender= (or From) or set extra from_email on the connection.")
    if not recipients:
        raise ConfigurationError("no recipients: pass recipients= or set To/Cc/Bcc.")
    special = allow_special_use_domains
    envelope_sender = parse_mailbox(sender, "sender", allow_special_use_domains=special)
    hidden = [r for r in recipients if r in hidden or r.lower() in hidden_text]
    rcpts = tuple(dict.fromkeys(_recipient(r, r in hidden, special) for r in recipients))
    message_id, data = _with_message_id(data, normalize_domain(envelope_sender.domain))
    return Outgoing(
        envelope_sender.addr,
        rcpts,
        data,
        message_id,
        hidden=tuple(r for r in rcpts if r in hidden or r.lower() in hidden_text),
        resend_of=resend_of,
    )


def _wire_and_envelope(message: Message | bytes) -> tuple[bytes, str | None, list[str] | None, list[str]]:
    """The wire bytes, and from a message object its header sender, recipients and Bcc ones (bytes have none:
    their envelope is the caller's)."""
    if isinstance(message, Message):
        message = _modern(message)
        header_sender, header_rcpts, hidden = envelope_of(message)
        return message.as_bytes(policy=email_policy.SMTP), header_sender, header_rcpts, hidden  # Bcc goes later
    if isinstance(message, bytes | bytearray):
        return bytes(message), None, None, []
    raise ConfigurationError(
        f"cannot send a {type(message).__name__}: pass an EmailMessage, wire bytes (with recipients=) or an Outgoing."
    )


def _recipient(rcpt: str, hidden: bool, special: bool) -> str:
    """The recipient's addr-spec under the send's policy; a refused hidden one is never named."""
    try:
        return parse_mailbox(rcpt, "recipient", allow_special_use_domains=special).addr
    except PolicyViolation as exc:
        if not hidden:
            raise
        raise PolicyViolation(  # errors never name a hidden recipient
            f"a hidden recipient of the message is refused ({exc.rule}): fix the envelope.", rule=exc.rule
        ) from None


def _modern(message: Message) -> EmailMessage:
    """An ``email.mime`` (compat32) message, as the stock SMTP provider's users build them, read as an
    EmailMessage from its own SMTP serialization, the bytes that will go out."""
    if isinstance(message, EmailMessage):
        return message
    from email.parser import BytesParser

    modern = BytesParser(policy=email_policy.default).parsebytes(message.as_bytes(policy=email_policy.SMTP))
    assert isinstance(modern, EmailMessage)
    return modern


def _hidden_fields_text(data: bytes) -> str:
    """The text of the ``Bcc``/``Resent-Bcc`` fields about to be removed, lower case: a recipient named there
    stays hidden (never named in errors, logs or the archive's metadata), however the field was written."""
    return " ".join(field_values(with_crlf(data), HIDDEN_FIELDS)).lower()


def checked(item: Outgoing, *, allow_special_use_domains: bool = False) -> Outgoing:
    """An Outgoing built elsewhere (given as is, or a resend) held to the rules :func:`outgoing_from` applies:
    its header block screened (Bcc removed), its envelope addresses valid under the send's policy."""
    special = allow_special_use_domains
    hidden_text = _hidden_fields_text(item.data)
    data = screen_header_block(item.data)
    hidden = tuple(r for r in item.recipients if r in item.hidden or r.lower() in hidden_text)
    if hidden != item.hidden:
        item = replace(item, hidden=hidden)
    parse_mailbox(item.sender, "sender", allow_special_use_domains=special)
    for rcpt in item.recipients:
        _recipient(rcpt, rcpt in item.hidden, special)
    return item if data is item.data else item.with_data(data)


def _with_message_id(data: bytes, domain: str) -> tuple[str, bytes]:
    """The message's Message-ID, or one derived from its bytes, prepended as a header line.

    The archive keys a copy by Message-ID: derived from the content, the same message sent again by a retried
    task keeps its key (sent once), and two different messages never share one.
    """
    import hashlib

    found = field_value(data, "Message-ID")
    if found:
        return found, data
    message_id = f"<{hashlib.sha256(data).hexdigest()[:40]}@{domain}>"
    return message_id, f"Message-ID: {message_id}\r\n".encode("ascii") + data


def parsed(data: bytes) -> EmailMessage:
    """A read-only parse of wire bytes for screening; never re-serialized (CVE-2024-6923)."""
    from email.parser import BytesParser

    message = BytesParser(policy=email_policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


_PART_FIELDS = ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition")


def refuse_repeated_part_fields(message: EmailMessage) -> None:
    """Each MIME part names its type, encoding and disposition once (RFC 2045): with two ``Content-Type``
    fields Python reads the first and another reader the last, so the HTML screen could judge a text part
    that a mail client renders as HTML."""
    for number, part in enumerate(message.walk()):
        for name in _PART_FIELDS:
            if len(part.get_all(name) or ()) > 1:
                raise PolicyViolation(
                    f"MIME part {number} has more than one {name} field: RFC 2045 allows one; remove the others.",
                    rule="duplicate_header",
                    item=name.lower(),
                )


def attachments_of(message: EmailMessage) -> tuple[Attachment, ...]:
    """The attachments of a parsed message, as screening takes them (content judged, declared type kept)."""
    out = []
    for part in message.iter_attachments():
        assert isinstance(part, EmailMessage)
        payload = part.get_payload(decode=True)
        out.append(
            Attachment(
                filename=part.get_filename() or "attachment",
                content=payload if isinstance(payload, bytes) else b"",
                content_type=part.get_content_type(),
            )
        )
    return tuple(out)


PROTECTED_TYPES = frozenset({"multipart/encrypted", "multipart/signed", "application/pkcs7-mime"})
"""Top-level types of a protected message: its parts are protection structures, not attachments to judge."""
