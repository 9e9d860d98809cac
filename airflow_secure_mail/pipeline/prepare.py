"""Before anything is sent: compose → screen → scan → score → protect, for a request or for messages built elsewhere.

Every copy is screened before the first connection opens; the pure steps live in ``mail/``, this module
adds the ones that need the network (the malware scanner, the spam score, keys from Vault) and runs them off
the event loop.
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
    from airflow_secure_mail.scanning.spamd import SpamAssassinScanner, SpamReport


@dataclass(frozen=True)
class Prepared:
    """The copies ready to archive and deliver, with what the record should say about them.

    Each copy carries its own malware scan (``Outgoing.scan``) and spam score (``Outgoing.spam``) into its
    record; ``scan`` and ``spam`` are the verdicts the task's result reports for all of them.
    """

    items: tuple[Outgoing, ...]
    protection: str | None = None
    scan: ScanReport | None = None
    spam: SpamReport | None = None


async def prepare_request(
    request: MailRequest,
    policy: MailPolicy,
    protection: Protection | None,
    vault: Any,
    *,
    one_message_per_recipient: bool = False,
) -> Prepared:
    """Compose and screen every copy, scan the parts, score the message, then protect: no SMTP connection here.

    The spam score is taken once, on the first copy's bytes: the copies differ only in the envelope, ``To``
    and Message-ID, and protection comes after (an encrypted message cannot be scored).
    """
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
    spam = await _score(first.data, policy.spam_scan)
    items = await protect_all([replace(item, scan=scan, spam=spam) for item in plain], protection, vault, policy)
    return Prepared(tuple(items), protection.describe() if protection is not None else None, scan, spam)


async def prepare_outgoing(items: Sequence[Outgoing], policy: MailPolicy) -> Prepared:
    """Messages built elsewhere (``SecureSmtpHook.send``, a resend): screened as the bytes that will be sent.

    Each copy keeps its own scan verdict (none when it has no attachment) and spam score (unscored when it is
    already signed or encrypted: those bytes are what recipients get, but not what they read) for its record.
    """
    from airflow_secure_mail.mail.external import checked as checked_outside

    special = policy.allow_special_use_domains
    items = [checked_outside(item, allow_special_use_domains=special) for item in items]  # all before any scan
    checked = []
    for item in items:
        scan, protected = await _screen_outside(item, policy)
        spam = await _score(item.data, policy.spam_scan, protected=protected)
        checked.append(replace(item, scan=scan, spam=spam))
    reports = [item.scan for item in checked if item.scan is not None]
    scores = [item.spam for item in checked if item.spam is not None]
    return Prepared(tuple(checked), None, _overall(reports), _overall_spam(scores))


async def _screen_outside(item: Outgoing, policy: MailPolicy) -> tuple[ScanReport | None, bool]:
    """Screen one message built elsewhere and scan its attachments; raises on a violation or a finding.

    Returns the scan verdict and whether the message is already protected (PGP/S-MIME: not scanned inside).
    """
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
        return None, protected
    request = MailRequest(sender=item.sender, to=item.recipients, attachments=attachments)
    return await _scan_request(request, policy.malware_scan), protected


def _overall(reports: Sequence[ScanReport]) -> ScanReport | None:
    """The result's verdict over several copies: the first unscanned, else the first clean (a finding raised)."""
    from airflow_secure_mail.scanning.clamd import Verdict

    return next((r for r in reports if r.verdict is Verdict.UNSCANNED), reports[0] if reports else None)


def _overall_spam(reports: Sequence[SpamReport]) -> SpamReport | None:
    """The result's spam verdict over several copies: the first unscored, else the highest score."""
    from airflow_secure_mail.scanning.spamd import SpamVerdict

    unscored = next((r for r in reports if r.verdict is SpamVerdict.UNSCORED), None)
    return unscored or max(reports, key=lambda r: r.score or 0.0, default=None)


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


async def _score(data: bytes, scanner: SpamAssassinScanner | None, *, protected: bool = False) -> SpamReport | None:
    """The spam score of one message (None without a scanner); raises SpamRefused or SpamScanError."""
    if scanner is None:
        return None
    if protected:
        from airflow_secure_mail.scanning.spamd import unscored

        return unscored("already signed or encrypted (PGP/S-MIME) when given: scored only before protection")
    return await scanner.ascore(data)
