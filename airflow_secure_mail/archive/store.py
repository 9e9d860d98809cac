"""MailArchive: the system of record. Every sent message, byte for byte, write-once, optionally encrypted.

Layout under ``location``::

    messages/YYYY/MM/DD/<key>.eml           the exact bytes sent (sealed with AES-256-GCM when transit_key is set)
    messages/YYYY/MM/DD/<key>.pending.json  written before delivery (write-ahead)
    messages/YYYY/MM/DD/<key>.json          written after delivery: the committed record
    messages/YYYY/MM/DD/<key>.failed-N.json a failed attempt (a later retry may still commit)
    index/<kk>/<key>.json                   where the record of <key> lives (so a retry finds it)

``<key>`` is a SHA-256 over Message-ID, sender and recipients: never user text, so no path traversal.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.archive.objects import ObjectStore
from airflow_secure_mail.archive.reader import ArchiveReader, committed_at
from airflow_secure_mail.archive.record import (
    DELIVERED,
    ArchiveRecord,
    ArchiveStatus,
    RecordMetadata,
    json_object,
    record_key,
)
from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError, ConfigurationError

if TYPE_CHECKING:
    from airflow_secure_mail.archive.crypto import TransitSealer
    from airflow_secure_mail.mail.outgoing import Outgoing

log = logging.getLogger(__name__)


class MailArchive(ArchiveReader):
    """Write-once archive on ``ObjectStoragePath`` (``file://``, ``s3://`` with an Airflow AWS connection, ...).

    ``transit_key`` set = every message is sealed with AES-256-GCM under a Vault Transit data key.
    """

    def __init__(
        self,
        location: str,
        conn_id: str | None = None,
        transit_key: str | None = None,
        vault_conn_id: str = "vault_default",
        *,
        transit_mount: str = "transit",
        on_error: str = "fail",
    ) -> None:
        super().__init__(location, conn_id)
        if on_error not in ("fail", "send"):
            raise ConfigurationError("MailArchive.on_error must be 'fail' (default) or 'send'.")
        self.transit_key = transit_key
        self.vault_conn_id = vault_conn_id
        self.transit_mount = transit_mount
        self.on_error = on_error
        self._sealer: TransitSealer | None = None

    def __repr__(self) -> str:
        return f"MailArchive({self.location!r}, encrypted={bool(self.transit_key)})"

    @property
    def sealer(self) -> TransitSealer | None:
        """Seals and opens objects with a Vault Transit data key; None when the archive is not encrypted."""
        if self._sealer is None and self.transit_key:
            from airflow_secure_mail.archive.crypto import TransitSealer
            from airflow_secure_mail.vault import vault_for

            self._sealer = TransitSealer(vault_for(self.vault_conn_id), self.transit_key, mount=self.transit_mount)
        return self._sealer

    @property
    def envelope(self) -> Any:
        """Deprecated name of :attr:`sealer` (it never was a mail envelope)."""
        import warnings

        warnings.warn("MailArchive.envelope is deprecated: use MailArchive.sealer.", DeprecationWarning, stacklevel=2)
        return self.sealer

    # -- write-ahead -------------------------------------------------------------------------------
    def lookup(self, key: str) -> ArchiveRecord | None:
        """The record for ``key``: committed if ``<key>.json`` exists, else pending; None if never staged.

        The index entry is the pending record itself (a hard link on a local disk, a copy on an object store).
        """
        raw = self.read(_index_name(key))
        if raw is None:
            return None
        entry = json_object(raw, where=_index_name(key))
        older = "envelope" not in entry  # an index written by an older release: {"prefix": ...}
        pending = None if older else RecordMetadata.from_dict(entry, where=_index_name(key))
        prefix = str(entry.get("prefix")) if pending is None else _prefix(key, pending.staged_at)
        committed = self.read(f"{prefix}.json")
        raw = committed or (None if pending else self.read(f"{prefix}.pending.json"))
        if raw is None and pending is None:
            raise ArchiveIntegrityError(f"archive index points at {prefix} but no record is there.", key=key)
        meta = RecordMetadata.from_json(raw, where=prefix) if raw is not None else pending
        assert meta is not None
        return ArchiveRecord(key, prefix, meta, committed=committed is not None)

    def stage(self, item: Outgoing, **info: Any) -> ArchiveRecord:
        """Write the bytes about to be sent and a ``pending`` record, before anything is sent."""
        result = self.stage_many([item], **info)[0]
        if isinstance(result, ArchiveError):
            raise result
        return result

    def stage_many(
        self,
        items: Sequence[Outgoing],
        *,
        origin: Mapping[str, Any] | None = None,
        protection: str | None = None,
        malware_scan: Mapping[str, Any] | None = None,
    ) -> list[ArchiveRecord | ArchiveError]:
        """:meth:`stage` for a group of copies, written and made durable together; one outcome per copy.

        The index entry (what a retry looks up) is written only after the message and its record are durable.
        """
        records, objects, pending = [], [], {}
        for item in items:
            record, stored = _pending(self.sealer, item, origin or {}, protection, malware_scan)
            records.append(record)
            pending[record.key] = record.meta.to_json()
            objects += [(f"{record.prefix}.eml", stored), (f"{record.prefix}.pending.json", pending[record.key])]
        written = self.write_once_many(objects)
        results = [
            _staged_earlier(self, record, written[2 * i], written[2 * i + 1]) for i, record in enumerate(records)
        ]
        ready = [r for r in results if isinstance(r, ArchiveRecord)]
        pending |= {r.key: r.meta.to_json() for r in ready if r.staged_earlier}  # an object store copies these
        index = self.copy_once_many([(f"{r.prefix}.pending.json", _index_name(r.key), pending[r.key]) for r in ready])
        failed = {id(r): e for r, e in zip(ready, index, strict=True) if e is not None}
        return [failed.get(id(r), r) for r in results]

    def commit(
        self,
        record: ArchiveRecord,
        status: ArchiveStatus,
        *,
        receipt: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> ArchiveRecord:
        """Record the outcome: a delivered state writes ``<key>.json`` (once), a failure a numbered note.

        A failed record stays staged: the next try of the task finds it pending and sends the staged bytes.
        """
        meta = record.meta.committed(ArchiveStatus(status), datetime.now(UTC).isoformat(), receipt, error)
        committed = ArchiveRecord(record.key, record.prefix, meta)
        failure = self.commit_many([committed])[0]
        if failure is not None:
            raise failure
        return committed

    def commit_many(self, records: Sequence[ArchiveRecord]) -> list[ArchiveError | None]:
        """Write committed records (their ``meta`` already says the outcome) together; one outcome each."""
        names = []
        for record in records:
            if record.meta.status.delivered:
                names.append(f"{record.prefix}.json")
            else:
                directory, _, name = record.prefix.rpartition("/")
                attempt = 1 + sum(1 for n in self.list_names(directory) if n.startswith(f"{name}.failed-"))
                names.append(f"{record.prefix}.failed-{attempt}.json")
        return self.write_once_many([(n, r.meta.to_json()) for n, r in zip(names, records, strict=True)])

    def remove(self, record: ArchiveRecord) -> None:
        """Delete one record (retention, after a verified bundle holds it)."""
        directory, _, name = record.prefix.rpartition("/")
        for item in self.list_names(directory):
            if item.startswith(name + "."):
                self.delete(f"{directory}/{item}")
        self.delete(_index_name(record.key))


def _staged_earlier(
    store: ObjectStore, record: ArchiveRecord, message: ArchiveError | None, pending: ArchiveError | None
) -> ArchiveRecord | ArchiveError:
    """The staged record, or the one an earlier try wrote before it stopped short of the index entry.

    Without this a copy whose index write failed (a full disk, a crash) could never be sent that day.
    """
    if message is None or pending is None or not (message.exists and pending.exists):
        return message or pending or record
    try:
        raw = store.read(f"{record.prefix}.pending.json")
        earlier = RecordMetadata.from_json(raw, where=f"{record.prefix}.pending.json") if raw else None
        if earlier is None or earlier.key != record.key or store.read(f"{record.prefix}.json") is not None:
            return message
    except ArchiveError as exc:  # this copy's earlier record is unreadable: this copy fails, not its group
        return exc
    return ArchiveRecord(record.key, record.prefix, earlier, staged_earlier=True)


def _pending(
    sealer: TransitSealer | None,
    item: Outgoing,
    origin: Mapping[str, Any],
    protection: str | None,
    scan: Mapping[str, Any] | None,
) -> tuple[ArchiveRecord, bytes]:
    """The pending record of one copy and the bytes to store (sealed when the archive is encrypted)."""
    key = record_key(item.message_id, item.sender, item.recipients)
    now = datetime.now(UTC)
    stored, encryption = item.data, None
    if sealer is not None:
        stored, encryption = sealer.seal(item.data, aad=key.encode())
    meta = RecordMetadata(
        key=key,
        sender=item.sender,
        recipients=item.recipients,
        size=item.size,
        stored_size=len(stored),
        sha256=hashlib.sha256(stored).hexdigest(),
        content_sha256=None if encryption else hashlib.sha256(item.data).hexdigest(),
        content_fingerprint=item.content_fingerprint(),
        staged_at=now.isoformat(),
        message_id=item.message_id,
        encryption=encryption,
        protection=protection or "none",
        malware_scan=item.scan.to_metadata() if item.scan is not None else dict(scan) if scan else None,
        spam_scan=item.spam.to_metadata() if item.spam is not None else None,
        airflow=dict(origin),
        resend_of=item.resend_of,
    )
    return ArchiveRecord(key, _prefix(key, meta.staged_at), meta), stored


def _prefix(key: str, staged_at: str) -> str:
    return f"messages/{datetime.fromisoformat(staged_at):%Y/%m/%d}/{key}"


def _index_name(key: str) -> str:
    return f"index/{key[:2]}/{key}.json"


def as_archive(value: Any) -> MailArchive | None:
    """``archive=`` accepts a MailArchive, a location string, or None."""
    if value is None or isinstance(value, MailArchive):
        return value
    if isinstance(value, str):
        return MailArchive(value)
    raise ConfigurationError(f"archive={value!r}: give a MailArchive or a location like s3://bucket/prefix.")


__all__ = [
    "DELIVERED",
    "ArchiveRecord",
    "ArchiveStatus",
    "MailArchive",
    "ObjectStore",
    "RecordMetadata",
    "as_archive",
    "committed_at",
    "record_key",
]
