"""MailArchive: the system of record. Every sent message, byte for byte, write-once, optionally encrypted.

Layout under ``location``::

    messages/YYYY/MM/DD/<key>.eml           the exact bytes sent (sealed with AES-256-GCM when transit_key is set)
    messages/YYYY/MM/DD/<key>.pending.json  written before delivery (write-ahead)
    messages/YYYY/MM/DD/<key>.json          written after delivery: the committed record
    messages/YYYY/MM/DD/<key>.failed-N.json a failed attempt (a later retry may still commit)
    index/<kk>/<key>.json                   where the record of <key> lives (so a retry finds it)

``<key>`` is a SHA-256 over Message-ID, sender and recipients: never user text, so no path traversal.
Nothing is ever overwritten: local files are written to a temp file, fsynced and hard-linked into place
(mode 0600); object stores get a conditional put (``If-None-Match: *``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError, ConfigurationError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DELIVERED = frozenset({"sent", "partially_refused", "unknown"})
"""Committed states after which a retry must not send again."""


@dataclass
class ArchiveRecord:
    """One message's place in the archive and its metadata (the JSON record)."""

    key: str
    prefix: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.metadata.get("status", "pending"))

    @property
    def delivered(self) -> bool:
        return self.status in DELIVERED


def record_key(message_id: str | None, sender: str, recipients: list[str] | tuple[str, ...]) -> str:
    """The archive key of one outgoing copy: stable across retries of the same task instance."""
    ident = "\x00".join([message_id or "", sender.lower(), *sorted(r.lower() for r in recipients)])
    return hashlib.sha256(ident.encode()).hexdigest()[:40]


class ObjectStore:
    """Write-once objects under one ``ObjectStoragePath`` location (the archive, a backup location)."""

    def __init__(self, location: str, conn_id: str | None = None) -> None:
        if "://" not in location:
            raise ConfigurationError(f"location {location!r} needs a scheme: file:///path or s3://bucket/prefix.")
        self.location = location.rstrip("/")
        self.conn_id = conn_id

    @property
    def base(self) -> Any:
        from airflow.sdk import ObjectStoragePath

        return (
            ObjectStoragePath(self.location, conn_id=self.conn_id) if self.conn_id else ObjectStoragePath(self.location)
        )

    def _path(self, name: str) -> Any:
        return self.base / name

    @property
    def _local(self) -> bool:
        return str(self.base.protocol) in ("file", "local")

    def write_once(self, name: str, data: bytes) -> None:
        """Create ``name`` with ``data``; an existing object is an ArchiveError, never overwritten."""
        path = self._path(name)
        try:
            if self._local:
                _write_local_once(Path(path.path), data)
            else:
                with path.open("xb") as fh:
                    fh.write(data)
        except FileExistsError:
            raise ArchiveError(
                f"archive object {name} already exists; records are never overwritten.", key=name
            ) from None
        except ArchiveError:
            raise
        except Exception as exc:
            if _precondition_failed(exc):  # the conditional put (If-None-Match: *) found an object there
                raise ArchiveError(
                    f"archive object {name} already exists; records are never overwritten.", key=name
                ) from None
            raise ArchiveError(f"cannot write archive object {name} ({type(exc).__name__}): {exc}", key=name) from None

    def write_once_or_same(self, name: str, data: bytes) -> bool:
        """Like :meth:`write_once`, but an existing object with exactly ``data`` is fine (a re-run): False then."""
        try:
            self.write_once(name, data)
            return True
        except ArchiveError:
            if self.read(name) == data:
                return False
            raise

    def read(self, name: str) -> bytes | None:
        path = self._path(name)
        try:
            return bytes(path.read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise ArchiveError(f"cannot read archive object {name} ({type(exc).__name__}).", key=name) from None

    def read_json(self, name: str) -> dict[str, Any] | None:
        raw = self.read(name)
        if raw is None:
            return None
        try:
            return dict(json.loads(raw))
        except ValueError:
            raise ArchiveIntegrityError(f"archive metadata {name} is not valid JSON.", key=name) from None

    def delete(self, name: str) -> None:
        path = self._path(name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def list_names(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            return sorted(p.name for p in path.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []


class MailArchive(ObjectStore):
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
        self._envelope: Any = None

    def __repr__(self) -> str:
        return f"MailArchive({self.location!r}, encrypted={bool(self.transit_key)})"

    # -- encryption --------------------------------------------------------------------------------
    @property
    def envelope(self) -> Any:
        if self._envelope is None and self.transit_key:
            from airflow_secure_mail.archive.crypto import TransitEnvelope
            from airflow_secure_mail.vault import VaultSecrets

            self._envelope = TransitEnvelope(
                VaultSecrets(self.vault_conn_id), self.transit_key, mount=self.transit_mount
            )
        return self._envelope

    # -- records -----------------------------------------------------------------------------------
    def lookup(self, key: str) -> ArchiveRecord | None:
        """The record for ``key``: committed if ``<key>.json`` exists, else pending; None if never staged."""
        index = self.read_json(f"index/{key[:2]}/{key}.json")
        if index is None:
            return None
        prefix = str(index["prefix"])
        meta = self.read_json(f"{prefix}.json") or self.read_json(f"{prefix}.pending.json")
        if meta is None:
            raise ArchiveIntegrityError(f"archive index points at {prefix} but no record is there.", key=key)
        return ArchiveRecord(key, prefix, meta)

    def stage(
        self,
        key: str,
        data: bytes,
        *,
        message_id: str | None,
        sender: str,
        recipients: list[str],
        origin: Mapping[str, Any] | None = None,
        protection: str | None = None,
        malware_scan: Mapping[str, Any] | None = None,
    ) -> ArchiveRecord:
        """Write the bytes about to be sent and a ``pending`` record, before anything is sent."""
        now = datetime.now(UTC)
        prefix = f"messages/{now:%Y/%m/%d}/{key}"
        stored, encryption = data, None
        if self.envelope is not None:
            stored, encryption = self.envelope.seal(data, aad=key.encode())
        meta: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "key": key,
            "status": "pending",
            "message_id": message_id,
            "envelope": {"sender": sender, "recipients": list(recipients)},
            "size": len(data),
            "stored_size": len(stored),
            "sha256": hashlib.sha256(stored).hexdigest(),
            "content_sha256": None if encryption else hashlib.sha256(data).hexdigest(),
            "encryption": encryption,
            "protection": protection or "none",
            "malware_scan": dict(malware_scan) if malware_scan else None,
            "airflow": dict(origin or {}),
            "staged_at": now.isoformat(),
        }
        self.write_once(f"{prefix}.eml", stored)
        self.write_once(f"{prefix}.pending.json", _dumps(meta))
        self.write_once(f"index/{key[:2]}/{key}.json", _dumps({"prefix": prefix}))
        return ArchiveRecord(key, prefix, meta)

    def commit(
        self,
        record: ArchiveRecord,
        status: str,
        *,
        receipt: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> ArchiveRecord:
        """Record the outcome; delivered states write ``<key>.json`` (once), failures a numbered note."""
        meta = dict(record.metadata)
        meta.update(status=status, receipt=dict(receipt or {}) or None, error=error, committed_at=_now())
        if receipt:
            meta["tls"] = {"version": receipt.get("tls_version"), "cipher": receipt.get("cipher")}
        if status in DELIVERED:
            self.write_once(f"{record.prefix}.json", _dumps(meta))
        else:
            directory, _, name = record.prefix.rpartition("/")
            attempt = 1 + sum(1 for n in self.list_names(directory) if n.startswith(f"{name}.failed-"))
            self.write_once(f"{record.prefix}.failed-{attempt}.json", _dumps(meta))
            meta["status"] = "pending"
        return ArchiveRecord(record.key, record.prefix, meta)

    def read_message(self, record: ArchiveRecord) -> bytes:
        """The exact bytes that were sent, verified (SHA-256 of the object, AES-GCM tag, size)."""
        name = f"{record.prefix}.eml"
        stored = self.read(name)
        if stored is None:
            raise ArchiveIntegrityError(f"archive object {name} is missing.", key=name)
        return self.open_stored(record, stored)

    def open_stored(self, record: ArchiveRecord, stored: bytes) -> bytes:
        """Check stored bytes (from the archive or a bundle) against the record and decrypt them."""
        meta = record.metadata
        name = f"{record.prefix}.eml"
        if hashlib.sha256(stored).hexdigest() != meta.get("sha256"):
            raise ArchiveIntegrityError(f"archive object {name} does not match its SHA-256: it was altered.", key=name)
        data = stored
        if meta.get("encryption"):
            if self.envelope is None:
                raise ConfigurationError(f"{name} is encrypted at rest: give MailArchive(transit_key=...) to read it.")
            data = self.envelope.open(stored, meta["encryption"], aad=record.key.encode(), name=name)
        elif meta.get("content_sha256") and hashlib.sha256(data).hexdigest() != meta["content_sha256"]:
            raise ArchiveIntegrityError(f"archive object {name} content hash mismatch.", key=name)
        if len(data) != meta.get("size"):
            raise ArchiveIntegrityError(
                f"archive object {name} has {len(data)} bytes, metadata says {meta.get('size')}.", key=name
            )
        return data

    def iter_records(self, start: datetime, end: datetime) -> Iterator[ArchiveRecord]:
        """Committed records whose commit time falls in ``[start, end)``, scanning the day folders."""
        day: date = (start - timedelta(days=1)).date()
        while day <= end.date():
            folder = f"messages/{day:%Y/%m/%d}"
            for name in self.list_names(folder):
                key, _, suffix = name.partition(".")
                if suffix == "json":
                    meta = self.read_json(f"{folder}/{name}")
                    assert meta is not None
                    stamp = datetime.fromisoformat(str(meta.get("committed_at") or meta["staged_at"]))
                    if start <= stamp < end:
                        yield ArchiveRecord(key, f"{folder}/{key}", meta)
            day += timedelta(days=1)

    def verify(self, record: ArchiveRecord, stored: bytes | None = None) -> bytes:
        """Integrity plus metadata consistency; returns the plaintext bytes (``stored``: already read)."""
        data = self.read_message(record) if stored is None else self.open_stored(record, stored)
        meta = record.metadata
        if meta.get("schema_version") != SCHEMA_VERSION or meta.get("key") != record.key:
            raise ArchiveIntegrityError(f"archive record {record.prefix}.json is inconsistent.", key=record.prefix)
        if record_key(meta.get("message_id"), meta["envelope"]["sender"], meta["envelope"]["recipients"]) != record.key:
            raise ArchiveIntegrityError(
                f"archive record {record.prefix}.json does not match its key.", key=record.prefix
            )
        return data

    def remove(self, record: ArchiveRecord) -> None:
        """Delete one record (retention, after a verified bundle holds it)."""
        directory, _, name = record.prefix.rpartition("/")
        for item in self.list_names(directory):
            if item.startswith(name + "."):
                self.delete(f"{directory}/{item}")
        self.delete(f"index/{record.key[:2]}/{record.key}.json")


def _precondition_failed(exc: BaseException) -> bool:
    text = f"{exc} {getattr(exc, '__cause__', '')}"
    return "pre-condition" in text or "PreconditionFailed" in text or " 412" in text


def _write_local_once(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, target)  # atomic and exclusive: fails if target exists
    finally:
        os.unlink(tmp)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _dumps(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, indent=1, default=str).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def as_archive(value: Any) -> MailArchive | None:
    """``archive=`` accepts a MailArchive, a location string, or None."""
    if value is None or isinstance(value, MailArchive):
        return value
    if isinstance(value, str):
        return MailArchive(value)
    raise ConfigurationError(f"archive={value!r}: give a MailArchive or a location like s3://bucket/prefix.")
