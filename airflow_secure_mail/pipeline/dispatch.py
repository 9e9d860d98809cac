"""Stage → deliver → commit, overlapped: the next copy is staged while one is on the wire, and outcomes are
committed in groups as they arrive, so SMTP never waits for the disk nor the disk for SMTP.

Exactly-once as before: a copy is staged (pending) before it is sent; a retry finds a delivered record and
sends nothing, or a pending one and sends exactly the staged bytes.

Failover (extra ``fallback_conn_ids``): a copy the primary relay never took because it is down (no session
opened: connect, TLS, AUTH), keeps failing transiently, or is exhausted (a daily quota) goes through the next
relay, alert mail always, bulk mail with ``bulk_failover``: the same staged bytes, the same one record, which
then names the relay that took it. A copy lost after DATA may have been delivered: it never fails over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import (
    ArchiveError,
    ArchiveIntegrityError,
    ConfigurationError,
    DeliveryError,
    SecureMailError,
    SendFrozen,
    SmtpAuthError,
    TransportSecurityError,
    VaultSecretError,
    detached,
)
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
_MIN_LEFT = 1.0
"""Seconds of the send's deadline a fallback needs at least to be worth trying."""
PRIORITIES = ("alert", "bulk")


@dataclass
class Delivery:
    """One copy's way through the archive and the server."""

    item: Outgoing
    record: ArchiveRecord | None = None
    outcome: Outcome | None = None
    already_sent: bool = False
    commit_error: ArchiveError | None = None
    """The outcome could not be recorded (after retries): the task must fail, or a retry would send again."""
    relay: str | None = None
    """The connection id whose relay gave ``outcome`` (a fallback's after a failover); None if none did."""


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
    priority: str = "bulk",
) -> list[Delivery]:
    """Every copy delivered (or found already delivered) and, with an archive, recorded.

    ``priority`` (``alert`` or ``bulk``) decides whether a copy the relay could not take fails over to the
    connection's ``fallback_conn_ids``: alert mail does, bulk mail only with ``bulk_failover``.
    """
    if priority not in PRIORITIES:
        raise ConfigurationError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}.")
    failover = _Failover(client, priority, concurrency, time.monotonic())
    deliveries = [Delivery(item) for item in items]
    if store is None:
        outcomes = await client.adeliver(items, concurrency=concurrency, opening_failures=failover.opening)
        for d, outcome in zip(deliveries, outcomes, strict=True):
            d.outcome, d.relay = outcome, client.conn_id
        await failover.run([d for d in deliveries if failover.hold(d)])
        return deliveries
    sending: list[Delivery] = []
    held: list[Delivery] = []
    committer = _GroupCommit(store)

    async def on_outcome(index: int, item: Outgoing, outcome: Outcome) -> None:
        d = sending[index]
        d.outcome, d.relay = outcome, client.conn_id
        if failover.hold(d):  # recorded once the fallbacks had their turn: the one record names the relay
            held.append(d)
        else:
            committer.add(d)

    try:
        await client.adeliver(
            _staged(deliveries, store, info, sending),
            concurrency=concurrency,
            on_outcome=on_outcome,
            opening_failures=failover.opening,
        )
        await failover.run(held)
        for d in held:
            committer.add(d)
    finally:
        await committer.close()
    for d in deliveries:  # the deadline ran out before their turn: staged, so a retry sends them
        if d.outcome is None:
            d.outcome = DeliveryError("not sent: the send deadline ran out before its turn.", transient=True)
    return deliveries


def relay_down(outcome: Outcome | None, opening: Sequence[SecureMailError]) -> str | None:
    """Why the relay did not take a copy that another relay may send (it never reached DATA there), else None.

    ``opening``: the errors raised while sessions opened. A copy refused for itself (a recipient, its content,
    its size), lost after DATA (``maybe_delivered``) or slowed by throttling is not the relay being down.
    """
    if not isinstance(outcome, SecureMailError):
        return None
    if isinstance(outcome, DeliveryError):
        if outcome.maybe_delivered:
            return None
        if outcome.exhausted:
            return f"is exhausted ({_short(outcome)})"
    if any(outcome is error for error in opening):
        if isinstance(outcome, TransportSecurityError):
            return f"failed TLS ({_short(outcome)})"
        if isinstance(outcome, SmtpAuthError):
            return f"failed AUTH ({_short(outcome)})"
        if isinstance(outcome, VaultSecretError):
            return f"has no readable credentials ({_short(outcome)})"
        if isinstance(outcome, ConfigurationError):
            return f"is misconfigured ({_short(outcome)})"
        return f"is unreachable ({_short(outcome)})"
    if isinstance(outcome, DeliveryError) and outcome.transient and not outcome.throttled and not outcome.refused:
        return f"keeps failing ({_short(outcome)})"
    return None


def _short(error: BaseException) -> str:
    """The error's one line, without its closing full stop (it sits inside a sentence)."""
    return " ".join(str(error).split()).rstrip(".")


class _Failover:
    """The primary's fallbacks for one dispatch: which copies wait for them, and their turn."""

    def __init__(self, client: SmtpClient, priority: str, concurrency: int, started: float) -> None:
        self.client = client
        self.priority = priority
        self.concurrency = concurrency
        self.started = started
        self.fallbacks: tuple[str, ...] = tuple(client.settings.fallback_conn_ids)
        self.allowed = bool(self.fallbacks) and (priority == "alert" or client.settings.bulk_failover)
        self.opening: list[SecureMailError] = []
        """Errors raised while the primary's sessions opened: their copies never reached DATA."""

    def hold(self, d: Delivery) -> bool:
        """True when ``d`` waits for a fallback; a copy that cannot fail over gets an outcome that says why."""
        if not self.fallbacks:
            return False
        outcome = d.outcome
        if self.allowed and isinstance(outcome, DeliveryError) and outcome.maybe_delivered:
            log.warning(
                "%s: the connection to relay %s was lost after DATA, so it may have been delivered: not sent "
                "through fallback %s (a retry of the task sends the staged copy again)",
                d.item.message_id, self.client.conn_id, self.fallbacks[0],
            )  # fmt: skip
            return False
        reason = relay_down(outcome, self.opening)
        if reason is None:
            return False
        if self.allowed:
            return True
        assert isinstance(outcome, SecureMailError)
        d.outcome = _like(
            outcome,
            f"relay {self.client.conn_id} {reason}: bulk mail does not fail over to {', '.join(self.fallbacks)}; "
            f"set extra bulk_failover=true on connection {self.client.conn_id!r} to let it.",
        )
        return False

    async def run(self, held: list[Delivery]) -> None:
        """Each fallback in turn sends what the relay before it could not; all down: one error naming each."""
        if not held:
            return
        primary = self.client
        reason = relay_down(held[0].outcome, self.opening)
        tried = [f"{primary.conn_id} {reason}"]
        current, left = f"{primary.conn_id} {reason}", held
        for conn_id in self.fallbacks:
            remaining = primary.settings.deadline - (time.monotonic() - self.started)
            if remaining < _MIN_LEFT:
                tried.append(f"{conn_id} not tried (the deadline of {primary.settings.deadline:.0f}s ran out)")
                continue
            client, why = await _fallback_client(conn_id)
            if client is None:
                tried.append(f"{conn_id} {why}")
                continue
            log.warning("relay %s: %s mail goes through fallback %s", current, self.priority, conn_id)
            opening: list[SecureMailError] = []
            outcomes = await client.within(remaining).adeliver(
                [d.item for d in left], concurrency=self.concurrency, opening_failures=opening
            )
            still: list[Delivery] = []
            for d, outcome in zip(left, outcomes, strict=True):
                d.outcome, d.relay = outcome, conn_id
                if relay_down(outcome, opening) is not None:
                    still.append(d)
                elif isinstance(outcome, DeliveryError) and outcome.maybe_delivered:
                    log.warning(
                        "%s: the connection to fallback %s was lost after DATA, so it may have been delivered: "
                        "not sent through another relay", d.item.message_id, conn_id,
                    )  # fmt: skip
            if not still:
                return
            left = still
            current = f"{conn_id} {relay_down(left[0].outcome, opening)}"
            tried.append(current)
        errors = [d.outcome for d in left if isinstance(d.outcome, DeliveryError)]
        error = DeliveryError(
            f"every relay failed ({self.priority} mail): {'; '.join(tried)}.",
            transient=any(e.transient for e in errors) or not errors,
            exhausted=bool(errors) and len(errors) == len(left) and all(e.exhausted for e in errors),
        )
        for d in left:
            d.outcome, d.relay = error, None


async def _fallback_client(conn_id: str) -> tuple[SmtpClient | None, str]:
    """The fallback's client (its own TLS policy, credentials, deadline), or None and why it cannot be used."""
    from airflow_secure_mail.pipeline.channel import MailChannel

    try:
        channel = MailChannel.for_conn(conn_id)
        await channel.check_not_frozen()
    except SendFrozen as exc:
        return None, f"is frozen ({exc.reason})"
    except SecureMailError as exc:
        return None, f"is misconfigured ({_short(exc)})"
    except Exception as exc:  # e.g. Airflow has no such connection: this fallback is skipped, the next is tried
        return None, f"is misconfigured ({type(exc).__name__}: {_short(exc)})"
    return channel.client, ""


def _like(error: SecureMailError, message: str) -> DeliveryError:
    """A DeliveryError saying ``message`` with what ``error`` said about retrying (transient, exhausted)."""
    if isinstance(error, DeliveryError):
        return DeliveryError(message, code=error.code, transient=error.transient, exhausted=error.exhausted)
    return DeliveryError(message)


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
    meta = replace(d.record.meta.committed(status, datetime.now(UTC).isoformat(), receipt, error), relay=d.relay)
    return ArchiveRecord(d.record.key, d.record.prefix, meta)
