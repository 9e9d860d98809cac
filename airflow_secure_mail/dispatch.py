"""Stage → deliver → commit, overlapped: the next copy is staged while one is on the wire, and outcomes are
committed in groups as they arrive, so SMTP never waits for the disk nor the disk for SMTP.

Exactly-once as before: a copy is staged (pending) before it is sent; a retry finds a delivered record and
sends nothing, or a pending one and sends exactly the staged bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import ArchiveError, SecureMailError
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.transport.smtp import SendReceipt

if TYPE_CHECKING:
    from airflow_secure_mail.archive.record import ArchiveRecord
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook

log = logging.getLogger(__name__)
Outcome = SendReceipt | SecureMailError


@dataclass
class Delivery:
    """One copy's way through the archive and the server."""

    item: Outgoing
    record: ArchiveRecord | None = None
    outcome: Outcome | None = None
    already_sent: bool = False


@dataclass(frozen=True)
class RecordInfo:
    """What the archive record says besides the bytes: where it came from, protection, the malware verdict."""

    origin: Mapping[str, Any] = field(default_factory=dict)
    protection: str | None = None
    malware_scan: Mapping[str, Any] | None = None


async def dispatch(
    items: Sequence[Outgoing],
    hook: SecureSmtpHook,
    store: MailArchive | None,
    info: RecordInfo,
    *,
    concurrency: int = 1,
) -> list[Delivery]:
    """Every copy delivered (or found already delivered) and, with an archive, recorded."""
    deliveries = [Delivery(item) for item in items]
    if store is None:
        outcomes = await hook.adeliver(items, concurrency=concurrency)
        for d, outcome in zip(deliveries, outcomes, strict=True):
            d.outcome = outcome
        return deliveries
    sending: list[Delivery] = []
    committer = _GroupCommit(store)

    async def staged() -> AsyncIterator[Outgoing]:
        for d in deliveries:
            error = await asyncio.to_thread(_stage, store, d, info)
            if error is not None:  # stop staging; what is out commits, the rest reports the error
                for rest in deliveries[deliveries.index(d) :]:
                    rest.outcome = rest.outcome or error
                return
            if not d.already_sent:
                sending.append(d)
                yield d.item

    async def on_outcome(index: int, item: Outgoing, outcome: Outcome) -> None:
        sending[index].outcome = outcome
        committer.add(sending[index])

    try:
        await hook.adeliver(staged(), concurrency=concurrency, on_outcome=on_outcome)
    finally:
        await committer.close()
    return deliveries


def _stage(store: MailArchive, d: Delivery, info: RecordInfo) -> ArchiveError | None:
    """Find or write the copy's record before it is sent; an archive error is returned, not raised."""
    from airflow_secure_mail.archive.record import record_key

    key = record_key(d.item.message_id, d.item.sender, d.item.recipients)
    try:
        record = store.lookup(key)
        if record is not None and record.delivered:
            d.record, d.already_sent = record, True
            stored = record.meta.receipt  # none for status "unknown"
            d.outcome = SendReceipt.from_dict(dict(stored)) if stored else _unknown_receipt(d.item)
            return None
        if record is not None:
            d.item = d.item.with_data(store.read_message(record))  # complete the staged send with the staged bytes
        else:
            record = store.stage(d.item, origin=info.origin, protection=info.protection, malware_scan=info.malware_scan)
        d.record = record
    except ArchiveError as exc:
        if store.on_error != "send":
            return exc
        log.warning("archive unavailable; sending %s without a record (on_error='send')", key)
    return None


class _GroupCommit:
    """Commits outcomes in groups as they arrive, off the event loop, retrying a flaky store a few times."""

    def __init__(self, store: MailArchive) -> None:
        self.store = store
        self.waiting: list[Delivery] = []
        self.ready = asyncio.Event()
        self.closed = False
        self.task = asyncio.create_task(self._run())

    def add(self, d: Delivery) -> None:
        if d.record is not None:
            self.waiting.append(d)
            self.ready.set()

    async def close(self) -> None:
        self.closed = True
        self.ready.set()
        await self.task

    async def _run(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            group, self.waiting = self.waiting, []
            if group:
                await asyncio.to_thread(_commit_group, self.store, group)
            if self.closed and not self.waiting:
                return


def _commit_group(store: MailArchive, group: list[Delivery]) -> None:
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    from airflow_secure_mail.archive.record import ArchiveStatus
    from airflow_secure_mail.errors import DeliveryError

    for d in group:
        assert d.record is not None and d.outcome is not None
        if isinstance(d.outcome, SendReceipt):
            status = ArchiveStatus.PARTIALLY_REFUSED if d.outcome.refused else ArchiveStatus.SENT
            receipt, error = d.outcome.to_dict(), None
        else:
            lost = isinstance(d.outcome, DeliveryError) and d.outcome.maybe_delivered
            status = ArchiveStatus.UNKNOWN if lost else ArchiveStatus.FAILED
            receipt, error = None, str(d.outcome)
        for attempt in Retrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception_type(ArchiveError),
            reraise=True,
        ):
            with attempt:
                d.record = store.commit(d.record, status, receipt=receipt, error=error)


def _unknown_receipt(item: Outgoing) -> SendReceipt:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return SendReceipt(item.message_id, item.sender, tuple(item.recipients), {}, "", None, None, now, now)
