"""Before anything is sent: compose → screen → scan → protect, for a request or for messages built elsewhere.

Every copy is screened before the first connection opens; the pure steps live in ``mail/``, this module
adds the two that need the network (the malware scanner, keys from Vault) and runs them off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.mail.compose import Envelope, MailRequest, compose_each, compose_wire, parts_of
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.mail.screen import MailPolicy, check_size, screen, screen_recipients

if TYPE_CHECKING:
    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.scanning.clamd import ClamdScanner, ScanReport


@dataclass(frozen=True)
class Prepared:
    """The copies ready to archive and deliver, with what the record should say about them.

    Each copy carries its own malware scan (``Outgoing.scan``) into its record; ``scan`` is the verdict the
    task's result reports for all of them.
    """

    items: tuple[Outgoing, ...]
    protection: str | None = None
    scan: ScanReport | None = None


async def prepare_request(
    request: MailRequest,
    policy: MailPolicy,
    protection: Protection | None,
    vault: Any,
    *,
    one_message_per_recipient: bool = False,
) -> Prepared:
    """Compose and screen every copy, scan the parts, then protect: nothing here opens an SMTP connection."""
    from airflow_secure_mail.mail.html_screen import screen_html

    if request.html is not None:
        request = replace(request, html=screen_html(request.html, policy.html))
    special = policy.allow_special_use_domains
    if one_message_per_recipient:
        message, plain = compose_each(request, allow_special_use_domains=special)
    else:
        composed = compose_wire(request, allow_special_use_domains=special)
        message, envelope = composed.message, composed.envelope
        plain = [
            Outgoing(envelope.sender, envelope.recipients, composed.wire, message["Message-ID"], hidden=envelope.bcc)
        ]
    first = plain[0]
    screen(message, Envelope(first.sender, first.recipients, first.hidden), policy, request.attachments,
           encoded_size=first.size)  # fmt: skip
    for other in plain[1:]:  # the same content: only the envelope differs
        screen_recipients(other.recipients, policy)
        check_size(other.size, policy)
    scan = await _scan_request(request, policy.malware_scan)
    items = await protect_all([replace(item, scan=scan) for item in plain], protection, vault, policy)
    return Prepared(tuple(items), protection.describe() if protection is not None else None, scan)


async def prepare_outgoing(items: Sequence[Outgoing], policy: MailPolicy) -> Prepared:
    """Messages built elsewhere (``SecureSmtpHook.send``, a resend): screened as the bytes that will be sent.

    Each copy keeps its own scan verdict (none when it has no attachment) for its archive record.
    """
    from airflow_secure_mail.mail.external import checked as checked_outside

    special = policy.allow_special_use_domains
    items = [checked_outside(item, allow_special_use_domains=special) for item in items]  # all before any scan
    checked = [replace(item, scan=await _screen_outside(item, policy)) for item in items]
    reports = [item.scan for item in checked if item.scan is not None]
    return Prepared(tuple(checked), None, _overall(reports))


async def _screen_outside(item: Outgoing, policy: MailPolicy) -> ScanReport | None:
    """Screen one message built elsewhere and scan its attachments; raises on a violation or a finding."""
    from airflow_secure_mail.mail.external import PROTECTED_TYPES, attachments_of, parsed, refuse_repeated_part_fields
    from airflow_secure_mail.mail.html_screen import screen_html

    message = parsed(item.data)
    refuse_repeated_part_fields(message)
    protected = message.get_content_type() in PROTECTED_TYPES
    attachments = () if protected else attachments_of(message)
    screen(message, Envelope(item.sender, item.recipients, item.hidden), policy, attachments,
           encoded_size=item.size)  # fmt: skip
    for part in () if protected else message.walk():
        if part.get_content_type() == "text/html" and part.get_content_disposition() != "attachment":
            screen_html(str(part.get_content()), "refuse_active")  # bytes from outside are never rewritten
    if not attachments or policy.malware_scan is None:
        return None
    request = MailRequest(sender=item.sender, to=item.recipients, attachments=attachments)
    return await _scan_request(request, policy.malware_scan)


def _overall(reports: Sequence[ScanReport]) -> ScanReport | None:
    """The result's verdict over several copies: the first unscanned, else the first clean (a finding raised)."""
    from airflow_secure_mail.scanning.clamd import Verdict

    return next((r for r in reports if r.verdict is Verdict.UNSCANNED), reports[0] if reports else None)


async def protect_all(
    plain: Sequence[Outgoing], protection: Protection | None, vault: Any, policy: MailPolicy
) -> list[Outgoing]:
    """Keys from Vault (I/O) then the pure protect step, both off the event loop; every result size-checked.

    Every recipient's key is resolved in one call; each copy is then encrypted to its own recipients only.
    """
    if protection is None or not protection.active:
        return list(plain)
    from airflow_secure_mail.mail.protect import protect
    from airflow_secure_mail.pipeline.keys import resolve_keys

    def protected(item: Outgoing) -> list[Outgoing]:
        # each copy carries the plain message's fingerprint: a retry (fresh session key, signing time) is
        # recognised as the same message, and the archive never needs the plaintext to tell
        mark = item.content_fingerprint()
        return [replace(copy, fingerprint=mark) for copy in protect(item, protection, keys)]

    everyone = list(dict.fromkeys(address for item in plain for address in item.recipients))
    keys = await asyncio.to_thread(resolve_keys, protection, everyone, vault)  # once per request, not per copy
    out: list[Outgoing] = []
    for item in plain:
        for copy in await asyncio.to_thread(protected, item):
            check_size(copy.size, policy)
            out.append(copy)
    return out


async def _scan_request(request: MailRequest, scanner: ClamdScanner | None) -> ScanReport | None:
    """Scan a request's parts (None without a scanner); raises on a finding or an unscannable part."""
    return None if scanner is None else await scanner.ascan(parts_of(request))
