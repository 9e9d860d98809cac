"""The whole flow of a message in one place: compose → screen → protect → stage → deliver → commit.

The operator, the notifier and the email backend all call :func:`asend_mail`; none re-implements a step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email import policy as email_policy
from typing import TYPE_CHECKING, Any

from airflow_secure_mail._sync import run_sync
from airflow_secure_mail.errors import ArchiveError
from airflow_secure_mail.mail.compose import MailRequest, compose
from airflow_secure_mail.mail.screen import MailPolicy, check_size, screen
from airflow_secure_mail.transport.smtp import SendReceipt

if TYPE_CHECKING:
    from airflow_secure_mail.archive.store import ArchiveRecord, MailArchive
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook
    from airflow_secure_mail.mail.protect import Protection

log = logging.getLogger(__name__)


@dataclass
class MailResult:
    """What happened to every message of one request; ``to_xcom`` is small and never holds a body."""

    receipts: list[SendReceipt] = field(default_factory=list)
    archive_keys: list[str] = field(default_factory=list)
    protection: str | None = None
    dropped: list[str] = field(default_factory=list)
    already_sent: int = 0

    def to_xcom(self) -> dict[str, Any]:
        return {
            "message_ids": [r.message_id for r in self.receipts],
            "accepted": sorted({a for r in self.receipts for a in r.accepted}),
            "refused": {k: v[0] for r in self.receipts for k, v in r.refused.items()},
            "tls_version": self.receipts[0].tls_version if self.receipts else None,
            "archive_keys": list(self.archive_keys),
            "protection": self.protection,
            "dropped_for_missing_key": list(self.dropped),
            "already_sent": self.already_sent,
        }


@dataclass
class _Outgoing:
    sender: str
    recipients: list[str]
    data: bytes
    message_id: str | None
    record: ArchiveRecord | None = None
    receipt: SendReceipt | None = None


def identity_seed(context: Mapping[str, Any] | None) -> str | None:
    """dag/task/run/map-index of the running task: a retry gets the same Message-ID."""
    origin = origin_of(context)
    if not origin:
        return None
    return "|".join(str(origin.get(k, "")) for k in ("dag_id", "task_id", "run_id", "map_index"))


def origin_of(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """The task instance behind a send, for the archive record."""
    ti = (context or {}).get("ti") or (context or {}).get("task_instance")
    if ti is None:
        return {}
    return {k: getattr(ti, k, None) for k in ("dag_id", "task_id", "run_id", "map_index", "try_number")}


def effective_policy(hook: SecureSmtpHook, policy: MailPolicy | None) -> MailPolicy:
    if policy is not None:
        return policy
    defaults = hook.settings.policy_defaults
    return MailPolicy.from_dict(defaults) if defaults else MailPolicy()


def _split(request: MailRequest, one_per_recipient: bool) -> list[MailRequest]:
    if not one_per_recipient:
        return [request]
    everyone = list(dict.fromkeys([*request.to, *request.cc, *request.bcc]))
    return [
        replace(request, to=(rcpt,), cc=(), bcc=(), id_seed=f"{request.id_seed}|{rcpt}" if request.id_seed else None)
        for rcpt in everyone
    ]


async def asend_mail(
    request: MailRequest,
    *,
    hook: SecureSmtpHook,
    policy: MailPolicy | None = None,
    protection: Protection | None = None,
    archive: MailArchive | str | None = None,
    one_message_per_recipient: bool = False,
    allow_partial: bool = False,
    concurrency: int = 1,
    dry_run: bool = False,
    origin: Mapping[str, Any] | None = None,
) -> MailResult:
    """Run the flow for one request. Every message is screened before the first connection opens.

    With an archive, each copy is staged (pending) before delivery and committed after; a retry of the
    same task instance finds a delivered record and sends nothing, or finds a pending one and sends
    exactly the staged bytes. ``concurrency=1`` sends every message over one reused session.
    """
    from airflow_secure_mail.archive.store import as_archive

    mail_policy = effective_policy(hook, policy)
    store = as_archive(archive)
    result = MailResult(protection=protection.describe() if protection is not None else None)
    outgoing: list[_Outgoing] = []
    for item in _split(request, one_message_per_recipient):
        message, envelope = compose(item)
        data = message.as_bytes(policy=email_policy.SMTP)
        screen(message, envelope, mail_policy, item.attachments, encoded_size=len(data))
        for copy in await _protect(message, envelope, data, protection, hook):
            check_size(len(copy.data), mail_policy)
            outgoing.append(
                _Outgoing(copy.envelope.sender, list(copy.envelope.recipients), copy.data, message["Message-ID"])
            )
            result.dropped.extend(r for r in copy.dropped if r not in result.dropped)
    if dry_run:
        log.info("dry run: %d message(s) composed and screened; nothing sent", len(outgoing))
        return result
    if store is not None:
        await asyncio.to_thread(_stage_all, store, outgoing, origin or {}, result.protection)
    pending = [o for o in outgoing if o.receipt is None]
    outcomes = await hook.adeliver_each(
        [(o.sender, o.recipients, o.data, o.message_id) for o in pending], concurrency=concurrency
    )
    for sent, outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, SendReceipt):
            sent.receipt = outcome
    if store is not None:
        await asyncio.to_thread(_commit_all, store, pending, outcomes)
    _log_outcomes(f"{hook.settings.host}:{hook.settings.port}", outgoing, pending, outcomes)
    from airflow_secure_mail.hooks.smtp import check_outcomes

    check_outcomes([p.receipt or o for p, o in zip(pending, outcomes, strict=True)], allow_partial, set(request.bcc))
    result.receipts = [o.receipt for o in outgoing if o.receipt is not None]
    result.archive_keys = [o.record.prefix for o in outgoing if o.record is not None]
    result.already_sent = len(outgoing) - len(pending)
    return result


def _stage_all(
    store: MailArchive, outgoing: list[_Outgoing], origin: Mapping[str, Any], protection: str | None
) -> None:
    """Find or write each copy's record before anything is sent."""
    from airflow_secure_mail.archive.store import record_key

    for item in outgoing:
        key = record_key(item.message_id, item.sender, item.recipients)
        try:
            record = store.lookup(key)
            if record is not None and record.delivered:
                item.record = record
                stored = record.metadata.get("receipt")  # none for status "unknown"
                item.receipt = SendReceipt.from_dict(stored) if stored else _unknown_receipt(item)
                continue
            if record is not None:
                item.data = store.read_message(record)  # complete the staged send with the staged bytes
            else:
                record = store.stage(
                    key,
                    item.data,
                    message_id=item.message_id,
                    sender=item.sender,
                    recipients=item.recipients,
                    origin=origin,
                    protection=protection,
                )
            item.record = record
        except ArchiveError:
            if store.on_error != "send":
                raise
            log.warning("archive unavailable; sending %s without a record (on_error='send')", key)


def _commit_all(store: MailArchive, pending: list[_Outgoing], outcomes: list[Any]) -> None:
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    for item, outcome in zip(pending, outcomes, strict=True):
        if item.record is None:
            continue
        if isinstance(outcome, SendReceipt):
            status = "partially_refused" if outcome.refused else "sent"
            receipt, error = outcome.to_dict(), None
        else:
            status = "unknown" if getattr(outcome, "maybe_delivered", False) else "failed"
            receipt, error = None, str(outcome)
        for attempt in Retrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception_type(ArchiveError),
            reraise=True,
        ):
            with attempt:
                item.record = store.commit(item.record, status, receipt=receipt, error=error)


_ALREADY = {"partially_refused": " (some recipients refused)", "unknown": " (probably: the server's reply was lost)"}


def _log_outcomes(server: str, outgoing: list[_Outgoing], pending: list[_Outgoing], outcomes: list[Any]) -> None:
    """One task-log line per copy and one summary: server, TLS, recipient counts, Message-IDs; never an address."""
    sent, failed = [], []
    for item in outgoing:
        if not any(item is p for p in pending):
            status = item.record.status if item.record is not None else "sent"
            note = _ALREADY.get(status, "")
            log.info("already sent by an earlier try%s, not sent again: %s", note, item.message_id)
    for item, outcome in zip(pending, outcomes, strict=True):
        if isinstance(outcome, SendReceipt):
            sent.append(item.message_id)
            refused = f", {len(outcome.refused)} refused" if outcome.refused else ""
            log.info(
                "sent %s to %d recipient(s)%s via %s over %s",
                outcome.message_id or item.message_id,
                len(outcome.accepted),
                refused,
                server,
                outcome.tls_version or "no TLS",
            )
        else:
            failed.append(item.message_id)
            kind = "transient" if getattr(outcome, "transient", False) else "permanent"
            log.warning("not sent: %s to %d recipient(s) (%s, %s)", item.message_id, len(item.recipients),
                        type(outcome).__name__, kind)  # fmt: skip
    already = len(outgoing) - len(pending)
    if not pending:
        log.info("nothing sent: all %d message(s) were already sent by an earlier try", already)
    elif failed:
        log.warning(
            "%d of %d message(s) failed (%s); went out in this try: %s; already sent earlier: %d",
            len(failed), len(outgoing), ", ".join(map(str, failed)), ", ".join(map(str, sent)) or "none", already,
        )  # fmt: skip
    else:
        log.info("%d message(s) sent, %d already sent earlier, via %s", len(sent), already, server)


def _unknown_receipt(item: _Outgoing) -> SendReceipt:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return SendReceipt(item.message_id, item.sender, tuple(item.recipients), {}, "", None, None, now, now)


async def _protect(
    message: Any, envelope: Any, data: bytes, protection: Protection | None, hook: SecureSmtpHook
) -> list[Any]:
    """Keys from Vault (I/O) then the pure protect step, both off the event loop; ``data`` is the plain copy."""
    from airflow_secure_mail.mail.protect import Protected, protect

    if protection is None or not protection.active:
        return [Protected(data, envelope)]
    from airflow_secure_mail.keys import resolve_keys

    keys = await asyncio.to_thread(resolve_keys, protection, envelope.recipients, hook.vault)
    return await asyncio.to_thread(protect, message, envelope, protection, keys)


def send_mail(request: MailRequest, **kwargs: Any) -> MailResult:
    """Sync facade over :func:`asend_mail`."""
    return run_sync(asend_mail(request, **kwargs))


__all__ = ["MailResult", "asend_mail", "identity_seed", "origin_of", "send_mail"]
