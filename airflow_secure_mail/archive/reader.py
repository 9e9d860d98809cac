"""Reading the archive back: every object checked against its record (hash, AES-GCM tag, size) before use."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_secure_mail.archive.objects import ObjectStore
from airflow_secure_mail.archive.record import SCHEMA_VERSION, ArchiveRecord, RecordMetadata, record_key
from airflow_secure_mail.errors import ArchiveIntegrityError, ConfigurationError

if TYPE_CHECKING:
    from airflow_secure_mail.archive.crypto import TransitSealer


class ArchiveReader(ObjectStore):
    """The read side of :class:`~airflow_secure_mail.archive.store.MailArchive`."""

    @property
    def sealer(self) -> TransitSealer | None:
        return None

    def read_message(self, record: ArchiveRecord) -> bytes:
        """The exact bytes that were sent, verified (SHA-256 of the object, AES-GCM tag, size)."""
        name = f"{record.prefix}.eml"
        stored = self.read(name)
        if stored is None:
            raise ArchiveIntegrityError(f"archive object {name} is missing.", key=name)
        return self.open_stored(record, stored)

    def open_stored(self, record: ArchiveRecord, stored: bytes) -> bytes:
        """Check stored bytes (from the archive or a bundle) against the record and decrypt them."""
        meta, name = record.meta, f"{record.prefix}.eml"
        if hashlib.sha256(stored).hexdigest() != meta.sha256:
            raise ArchiveIntegrityError(f"archive object {name} does not match its SHA-256: it was altered.", key=name)
        data = stored
        if meta.encryption:
            if self.sealer is None:
                raise ConfigurationError(f"{name} is encrypted at rest: give MailArchive(transit_key=...) to read it.")
            data = self.sealer.open(stored, dict(meta.encryption), aad=record.key.encode(), name=name)
        elif meta.content_sha256 and hashlib.sha256(data).hexdigest() != meta.content_sha256:
            raise ArchiveIntegrityError(f"archive object {name} content hash mismatch.", key=name)
        if len(data) != meta.size:
            raise ArchiveIntegrityError(
                f"archive object {name} has {len(data)} bytes, metadata says {meta.size}.", key=name
            )
        return data

    def iter_records(self, start: datetime, end: datetime) -> Iterator[ArchiveRecord]:
        """Committed records whose commit time falls in ``[start, end)``, scanning the day folders."""
        for key, prefix in self.record_refs(start, end):
            record = self.record_at(key, prefix)
            if start <= committed_at(record) < end:
                yield record

    def record_refs(self, start: datetime, end: datetime) -> Iterator[tuple[str, str]]:
        """(key, prefix) of every committed record in the day folders that can hold commits in ``[start, end)``.

        The scan begins at the archive's oldest day folder at the earliest, so an open start (``--since``
        left out) costs a few listings, not one per day since 1970.
        """
        first = self.first_day()
        if first is None:
            return
        day = max((start - timedelta(days=1)).date(), first)
        while day <= end.date():
            folder = f"messages/{day:%Y/%m/%d}"
            for name in self.list_names(folder):
                key, _, suffix = name.partition(".")
                if suffix == "json":
                    yield key, f"{folder}/{key}"
            day += timedelta(days=1)

    def record_at(self, key: str, prefix: str) -> ArchiveRecord:
        """The committed record at ``prefix`` (its metadata read and parsed; damaged = ArchiveIntegrityError)."""
        return ArchiveRecord(key, prefix, self._read_meta(f"{prefix}.json"))

    def first_day(self) -> date | None:
        """The archive's oldest day folder (``messages/YYYY/MM/DD``), None when it holds none."""
        path = "messages"
        for _ in range(3):
            names = [n for n in self.list_names(path) if n.isdigit()]
            if not names:
                return None
            path = f"{path}/{names[0]}"
        _, year, month, day = path.split("/")
        return date(int(year), int(month), int(day))

    def _read_meta(self, name: str) -> RecordMetadata:
        raw = self.read(name)
        if raw is None:
            raise ArchiveIntegrityError(f"archive metadata {name} is missing.", key=name)
        return RecordMetadata.from_json(raw, where=name)

    def verify(self, record: ArchiveRecord, stored: bytes | None = None) -> bytes:
        """Integrity plus metadata consistency; returns the plaintext bytes (``stored``: already read)."""
        data = self.read_message(record) if stored is None else self.open_stored(record, stored)
        meta = record.meta
        if meta.schema_version != SCHEMA_VERSION or meta.key != record.key:
            raise ArchiveIntegrityError(f"archive record {record.prefix}.json is inconsistent.", key=record.prefix)
        if record_key(meta.message_id, meta.sender, meta.recipients) != record.key:
            raise ArchiveIntegrityError(
                f"archive record {record.prefix}.json does not match its key.", key=record.prefix
            )
        return data


def committed_at(record: ArchiveRecord) -> datetime:
    """When the record was committed (staged, for a record never committed)."""
    return datetime.fromisoformat(record.meta.committed_at or record.meta.staged_at)
