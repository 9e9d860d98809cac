"""Stage → deliver → commit, overlapped: the next copy is staged while one is on the wire, and outcomes are
committed in groups as they arrive, so SMTP never waits for the disk nor the disk for SMTP.

Exactly-once as before: a copy is staged (pending) before it is sent; a retry finds a delivered record and
sends nothing, or a pending one and sends exactly the staged bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError, DeliveryError, SecureMailError, detached
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.transport.batch import Outcome
from airflow_secure_mail.transport.session import SendReceipt

if TYPE_CHECKING:
    from airflow_secure_mail.archive.record import ArchiveRecord
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.connection.client import SmtpClient

log = logging.getLogger(__name__)
_PARALLEL = 16
"""Copies staged (and outcomes committed) at once: one durability barrier serves the whole group."""
_COMMIT_WAIT = 0.025
"""How long a delivered copy's outcome may wait for others to fill its commit group (seconds)."""


@dataclass
class Delivery:
    """One copy's way through the archive and the server."""

    item: Outgoing
    record: ArchiveRecord | None = None
    outcome: Outcome | None = None
    already_sent: bool = False
    commit_error: ArchiveError | None = None
    """The outcome could not be recorded (after retries): the task must fail, or a retry would send again."""


@dataclass(frozen=True)
class RecordInfo:
    """What the archive record says besides the bytes: where it came from, the protection (each copy carries
    its own malware verdict, ``Outgoing.scan``)."""

    origin: Mapping[str, Any] = field(default_factory=dict)
    protection: str | None = None


async def dispatch(
    items: Sequence[Outgoing],
    client: SmtpClient,
    store: MailArchive | None,
    info: RecordInfo,
    *,
    concurrency: int = 1,
) -> list[Delivery]:
    """Every copy delivered (or found already delivered) and, with an archive, recorded."""
    deliveries = [Delivery(item) for item in items]
    if store is None:
        outcomes = await client.adeliver(items, concurrency=concurrency)
        for d, outcome in zip(deliveries, outcomes, strict=True):
            d.outcome = outcome
        return deliveries
    sending: list[Delivery] = []
    committer = _GroupCommit(store)

    async def on_outcome(index: int, item: Outgoing, outcome: Outcome) -> None:
        sending[index].outcome = outcome
        committer.add(sending[index])

    try:
        await client.adeliver(_staged(deliveries, store, info, sending), concurrency=concurrency, on_outcome=on_outcome)
    finally:
        await committer.close()
    for d in deliveries:  # the deadline ran out before their turn: staged, so a retry sends them
        if d.outcome is None:
            d.outcome = DeliveryError("not sent: the send deadline ran out before its turn.", transient=True)
    return deliveries


async def _staged(
    deliveries: list[Delivery], store: MailArchive, info: RecordInfo, sending: list[Delivery]
) -> AsyncIterator[Outgoing]:
    """The copies to send, staged a group at a time off the event loop (appended to ``sending`` as they go)."""
    for start in range(0, len(deliveries), _PARALLEL):
        chunk = deliveries[start : start + _PARALLEL]
        error = await asyncio.to_thread(_stage_group, store, chunk, info)
        if error is not None:  # stop: what is out commits, the rest reports the error (and stays pending)
            for rest in deliveries[start:]:
                rest.outcome = rest.outcome or error
            return
        for d in chunk:
            if not d.already_sent:
                sending.append(d)
                yield d.item


def _stage_group(store: MailArchive, group: list[Delivery], info: RecordInfo) -> SecureMailError | None:
    """Find or write each copy's record before it is sent; an error is returned, not raised.

    ``on_error='send'`` lets a copy go without a record when the store fails, never when sealing does.
    """
    for d in group:  # once per copy, off the event loop: the lookup compares it, staging records it
        d.item = replace(d.item, fingerprint=d.item.content_fingerprint())
    try:
        new = [d for d in group if not _found(store, d)]
        staged: list[ArchiveRecord | ArchiveError] = store.stage_many(
            [d.item for d in new], origin=info.origin, protection=info.protection
        )
    except _Refused as stop:  # another message under this key: never sent, whatever on_error says
        return stop.error
    except ArchiveError as exc:
        staged, new = [exc] * len(group), group
    except SecureMailError as exc:  # Vault (Transit) failed: nothing may go out unsealed
        return detached(exc)
    for d, result in zip(new, staged, strict=True):
        if not isinstance(result, ArchiveError) and result.staged_earlier:
            try:
                result = _staged_bytes(store, d, result)
            except _Refused as stop:
                return stop.error
        if not isinstance(result, ArchiveError):
            d.record = result
        elif store.on_error != "send" or result.exists:  # "exists": another try owns it; sending could duplicate
            return result
        else:
            log.warning("archive unavailable; sending %s without a record (on_error='send')", d.item.message_id)
    return None


def _staged_bytes(store: MailArchive, d: Delivery, record: ArchiveRecord) -> ArchiveRecord | ArchiveError:
    """Complete an earlier try's send with the bytes it archived (checked against their record)."""
    try:
        archived = store.read_message(record)
    except ArchiveError as exc:
        return exc
    _refuse_other_content(store, record, d.item, archived)
    d.item = d.item.with_data(archived)
    return record


def _found(store: MailArchive, d: Delivery) -> bool:
    """True when an earlier try staged this copy: delivered (nothing to send) or pending (send the staged bytes)."""
    from airflow_secure_mail.archive.record import record_key

    record = store.lookup(record_key(d.item.message_id, d.item.sender, d.item.recipients))
    if record is None:
        return False
    d.record = record
    if record.delivered:
        _refuse_other_content(store, record, d.item)
        d.already_sent = True
        d.outcome = _stored_receipt(record, d.item)
    else:
        archived = store.read_message(record)
        _refuse_other_content(store, record, d.item, archived)
        d.item = d.item.with_data(archived)  # complete the staged send with the staged bytes
    return True


class _Refused(Exception):
    """Carries an error that stops staging whatever ``on_error`` says (sending could drop or duplicate mail)."""

    def __init__(self, error: SecureMailError) -> None:
        super().__init__(str(error))
        self.error = error


def _same_as_recorded(store: MailArchive, record: ArchiveRecord, item: Outgoing, archived: bytes | None) -> bool:
    """True when ``item`` is another try of the recorded message.

    A record keeps the content fingerprint: compared, nothing is read (nor opened with Transit). A record
    written before fingerprints existed is judged as then: its hash of the bytes, else the bytes themselves.
    """
    import hashlib

    from airflow_secure_mail.archive.record import same_message
    from airflow_secure_mail.mail.fingerprint import VERSION

    stored = record.meta.content_fingerprint
    if stored is not None and stored.startswith(f"{VERSION}:"):  # another way of fingerprinting: the bytes judge
        return stored == item.content_fingerprint()
    if record.meta.content_sha256 == hashlib.sha256(item.data).hexdigest():
        return True
    archived = _archived(store, record) if archived is None else archived
    return same_message(archived, item.data, protected_here=record.meta.protection != "none")


def _archived(store: MailArchive, record: ArchiveRecord) -> bytes:
    """A delivered record's bytes, to compare; unreadable, the copy fails: sending could duplicate it."""
    try:
        return store.read_message(record)
    except ArchiveError as exc:
        raise _Refused(exc) from None


def _refuse_other_content(
    store: MailArchive, record: ArchiveRecord, item: Outgoing, archived: bytes | None = None
) -> None:
    """Raise when ``item`` is not another try of the archived message: its Message-ID was reused for other
    content, and reporting "already sent" (or sending the staged bytes instead) would drop it silently."""
    if _same_as_recorded(store, record, item, archived):
        return
    state = "sent" if record.delivered else "archived (not yet delivered)"
    when = (record.meta.committed_at or record.meta.staged_at)[:10]
    error = ArchiveIntegrityError(
        f"Message-ID {item.message_id} was already {state} with different content on {when}; "
        "give this message a new Message-ID.",
        key=record.prefix,
    )
    raise _Refused(error)


def _stored_receipt(record: ArchiveRecord, item: Outgoing) -> SendReceipt:
    """The receipt a committed record keeps; a stub for a legacy committed "unknown" (the reply was lost)."""
    if record.meta.receipt:
        return SendReceipt.from_dict(dict(record.meta.receipt))
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return SendReceipt(item.message_id, item.sender, item.recipients, {}, "", None, None, now, now)


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
        """Every group is tried, also after one failed: its error stays on its deliveries (``commit_error``)."""
        while True:
            await self._gather()
            group, self.waiting = self.waiting, []
            if group:
                try:
                    await asyncio.to_thread(_commit_group, self.store, group)
                except Exception as exc:  # any failure stays with its group; later groups are still committed
                    error = exc if isinstance(exc, ArchiveError) else ArchiveError(f"archive commit failed: {exc!r}")
                    for d in group:
                        d.commit_error = d.commit_error or detached(error)
            if self.closed and not self.waiting:
                return

    async def _gather(self) -> None:
        """Wait for an outcome, then up to ``_COMMIT_WAIT`` for a whole group: one barrier commits them all."""
        await self.ready.wait()
        self.ready.clear()
        deadline = asyncio.get_running_loop().time() + _COMMIT_WAIT
        while len(self.waiting) < _PARALLEL and not self.closed:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self.ready.wait(), left)
            except TimeoutError:
                return
            self.ready.clear()


def _commit_group(store: MailArchive, group: list[Delivery]) -> None:
    """Write the outcome of every delivery in the group at once; a flaky store is retried a few times."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    records = [_committed(d) for d in group]
    for attempt in Retrying(
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.2, max=2),
        retry=retry_if_exception_type(ArchiveError),
        reraise=True,
    ):
        with attempt:
            pending = [(d, r) for d, r in zip(group, records, strict=True) if d.record is not r]
            for (d, record), error in zip(pending, store.commit_many([r for _, r in pending]), strict=True):
                if error is None:
                    d.record = record
            if any(d.record is not r for d, r in zip(group, records, strict=True)):
                raise ArchiveError("could not commit every archive record; see the task log.")


def _committed(d: Delivery) -> ArchiveRecord:
    """The delivery's record as committed: its outcome, the receipt or the error."""
    from datetime import UTC, datetime

    from airflow_secure_mail.archive.record import ArchiveRecord, ArchiveStatus

    assert d.record is not None and d.outcome is not None
    if isinstance(d.outcome, SendReceipt):
        status = ArchiveStatus.PARTIALLY_REFUSED if d.outcome.refused else ArchiveStatus.SENT
        receipt, error = d.outcome.to_dict(), None
    else:
        lost = isinstance(d.outcome, DeliveryError) and d.outcome.maybe_delivered
        status = ArchiveStatus.UNKNOWN if lost else ArchiveStatus.FAILED
        receipt, error = None, str(d.outcome)
    meta = d.record.meta.committed(status, datetime.now(UTC).isoformat(), receipt, error)
    return ArchiveRecord(d.record.key, d.record.prefix, meta)
