"""Messages built outside :func:`~airflow_secure_mail.mail.compose.compose` (``SecureSmtpHook.send``, restore's
resend): their envelope, their wire bytes, and the parsed view that screening judges."""

from __future__ import annotations

from collections.abc import Sequence
from email import policy as email_policy
from email.message import EmailMessage

from airflow_secure_mail.errors import ConfigurationError, PolicyViolation
from airflow_secure_mail.mail.addresses import normalize_domain, parse_mailbox
from airflow_secure_mail.mail.compose import Attachment
from airflow_secure_mail.mail.header_block import field_value, screen_header_block
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
    message: EmailMessage | bytes,
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
    hidden: list[str] = []
    if isinstance(message, EmailMessage):
        header_sender, header_rcpts, hidden = envelope_of(message)
        sender = sender or header_sender
        recipients = list(recipients) if recipients is not None else header_rcpts
        data = message.as_bytes(policy=email_policy.SMTP)  # its Bcc goes below, with the raw bytes' one
    else:
        data = message
    data = screen_header_block(data)
    sender = sender or default_sender
    if not sender:
        raise ConfigurationError("no sender: pass sender= (or From) or set extra from_email on the connection.")
    if not recipients:
        raise ConfigurationError("no recipients: pass recipients= or set To/Cc/Bcc.")
    special = allow_special_use_domains
    envelope_sender = parse_mailbox(sender, "sender", allow_special_use_domains=special)
    rcpts = tuple(
        dict.fromkeys(parse_mailbox(r, "recipient", allow_special_use_domains=special).addr for r in recipients)
    )
    message_id, data = _with_message_id(data, normalize_domain(envelope_sender.domain))
    return Outgoing(
        envelope_sender.addr,
        rcpts,
        data,
        message_id,
        hidden=tuple(r for r in rcpts if r in hidden),
        resend_of=resend_of,
    )


def checked(item: Outgoing, *, allow_special_use_domains: bool = False) -> Outgoing:
    """An Outgoing built elsewhere (given as is, or a resend) held to the rules :func:`outgoing_from` applies:
    its header block screened (Bcc removed), its envelope addresses valid under the send's policy."""
    special = allow_special_use_domains
    data = screen_header_block(item.data)
    parse_mailbox(item.sender, "sender", allow_special_use_domains=special)
    for rcpt in item.recipients:
        try:
            parse_mailbox(rcpt, "recipient", allow_special_use_domains=special)
        except PolicyViolation as exc:
            if rcpt not in item.hidden:
                raise
            raise PolicyViolation(  # errors never name a hidden recipient
                f"a hidden recipient of the message is refused ({exc.rule}): fix the envelope.", rule=exc.rule
            ) from None
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
