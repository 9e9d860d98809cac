"""Backup bundles: one deterministic, compressed (optionally encrypted) tar per interval, plus a manifest.

Records go into the bundle exactly as stored (an encrypted record stays encrypted); the manifest lists
every record's key, hash and size, and the bundle's own hash. Re-running an interval finds the manifest
and writes nothing new.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_secure_mail.archive.objects import _dumps
from airflow_secure_mail.archive.record import RecordMetadata
from airflow_secure_mail.archive.store import ArchiveRecord, MailArchive, ObjectStore
from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError

log = logging.getLogger(__name__)
MANIFEST_VERSION = 1


@dataclass
class BackupSummary:
    bundle: str
    manifest: str
    count: int
    bytes: int
    created: bool
    removed: int = 0
    start: str = ""  # the interval backed up, ISO 8601 (a restore of "what the backup took" reads these)
    end: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


_STAMP = "%Y%m%dT%H%M%SZ"
_MANIFEST_SUFFIX = ".manifest.json"


def bundle_name(start: datetime, end: datetime) -> str:
    return f"bundles/{start:{_STAMP}}_{end:{_STAMP}}"


def _manifest_interval(name: str) -> tuple[datetime, datetime] | None:
    """The ``[start, end)`` a manifest covers, read from its name (``<start>_<end>.manifest.json``)."""
    stem = name.removesuffix(_MANIFEST_SUFFIX)
    if stem == name:
        return None
    try:
        first, last = (datetime.strptime(p, _STAMP).replace(tzinfo=UTC) for p in stem.split("_"))
    except ValueError:
        return None
    return first, last


def manifests_overlapping(target: ObjectStore, start: datetime, end: datetime) -> list[str]:
    """Manifest names whose interval (read from the name) overlaps ``[start, end)``: other bundles stay unread."""
    out = []
    for name in target.list_names("bundles"):
        interval = _manifest_interval(name)
        if interval is not None and interval[0] < end and start < interval[1]:
            out.append(f"bundles/{name}")
    return out


def resume_interval(archive: MailArchive, target: ObjectStore, end: datetime) -> tuple[datetime, datetime]:
    """The interval a backup up to ``end`` covers when none was given: from the end of the last backup.

    Only the newest manifest is read (names carry the interval, so they sort by time) and its bundle must
    verify: a damaged newest bundle raises rather than resuming from an older one. Its exact interval gives
    the start, so consecutive backups meet without gap or overlap. A bundle already reaching ``end`` means a
    re-run: its own interval is returned, and backing it up again finds it. A manifest listed but gone (a
    retention run in between) is passed over for the next newest. Without any bundle: from the archive's
    first day.
    """
    named = ((i[1], i[0], n) for n in target.list_names("bundles") if (i := _manifest_interval(n)) and i[0] < end)
    for _, _, name in sorted(named, reverse=True):
        manifest = target.read_json(f"bundles/{name}")
        if manifest is not None:
            verify_manifest(archive, target, manifest)
            first, last = (datetime.fromisoformat(t) for t in manifest["interval"])
            return (first, last) if last >= end else (last, end)
    day = archive.first_day()
    start = None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)
    return (start if start is not None and start < end else end - timedelta(days=1)), end


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    """A byte-for-byte reproducible tar.gz: sorted names, fixed mtime/owner, gzip mtime 0."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o600, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def _untar(data: bytes, name: str) -> dict[str, bytes]:
    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r") as tar:
            out = {}
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                if handle is not None:
                    out[member.name] = handle.read()
            return out
    except (OSError, EOFError, tarfile.TarError):
        raise ArchiveIntegrityError(f"backup bundle {name} cannot be read: it is damaged.", key=name) from None


def _progress(log_fn: Callable[[str], None], done: int, total: int, what: str) -> None:
    step = max(1, total // 10)
    if done == total or done % step == 0:
        log_fn(f"{what}: {done}/{total} ({100 * done // max(total, 1)}%)")


def backup(
    archive: MailArchive,
    target: ObjectStore,
    start: datetime,
    end: datetime,
    *,
    encrypt: bool = True,
    retention_days: int | None = None,
    now: datetime | None = None,
    log_fn: Callable[[str], None] = log.info,
) -> BackupSummary:
    """Verify every committed record in ``[start, end)`` and write one bundle + manifest to ``target``.

    Idempotent (a re-run finds its verified bundle and writes nothing) and write-once; retention removes
    records from the archive only after a verified bundle holds them.
    """
    records = list(archive.iter_records(start, end))
    collected = _collect_verified(archive, records, log_fn)
    name = bundle_name(start, end)
    summary = _existing_bundle(archive, target, name, collected, log_fn) or _write_bundle(
        archive, target, name, (start, end), collected, encrypt=encrypt, log_fn=log_fn
    )
    summary.start, summary.end = start.isoformat(), end.isoformat()
    if retention_days is not None:
        summary.removed = _apply_retention(archive, records, retention_days, now, log_fn)
    return summary


def _record_facts(record: ArchiveRecord) -> dict[str, Any]:
    """What a manifest entry and retention need from a record: the one place this module reads its metadata."""
    meta = record.meta
    return {
        "sha256": meta.sha256,
        "size": meta.size,
        "status": meta.status.value,
        "message_id": meta.message_id,
        "committed_at": meta.committed_at,
    }


def _record_from_entry(entry: Mapping[str, Any], metadata: bytes) -> ArchiveRecord:
    """The record a manifest entry stands for, from the metadata object the bundle holds for it."""
    return ArchiveRecord(entry["key"], entry["prefix"], RecordMetadata.from_json(metadata, where=entry["prefix"]))


@dataclass
class _Collected:
    """An interval's verified records: tar members (the objects exactly as stored) and manifest entries."""

    members: list[tuple[str, bytes]]
    entries: list[dict[str, Any]]


def _collect_verified(archive: MailArchive, records: list[ArchiveRecord], log_fn: Callable[[str], None]) -> _Collected:
    """Read each record's objects as stored (an encrypted record stays encrypted), verify and describe them."""
    collected = _Collected([], [])
    for done, record in enumerate(records, start=1):
        stored = archive.read(f"{record.prefix}.eml")
        if stored is None:
            raise ArchiveIntegrityError(f"archive object {record.prefix}.eml is missing.", key=record.prefix)
        archive.verify(record, stored)
        metadata = archive.read(f"{record.prefix}.json") or b""
        collected.members += [(f"{record.prefix}.eml", stored), (f"{record.prefix}.json", metadata)]
        collected.entries.append(_manifest_entry(record, metadata))
        _progress(log_fn, done, len(records), "verified")
    return collected


def _manifest_entry(record: ArchiveRecord, metadata: bytes) -> dict[str, Any]:
    facts = _record_facts(record)
    return {
        "key": record.key,
        "prefix": record.prefix,
        "sha256": facts["sha256"],
        "metadata_sha256": hashlib.sha256(metadata).hexdigest(),
        "size": facts["size"],
        "status": facts["status"],
        "message_id": facts["message_id"],
        "committed_at": facts["committed_at"],
    }


def _existing_bundle(
    archive: MailArchive, target: ObjectStore, name: str, collected: _Collected, log_fn: Callable[[str], None]
) -> BackupSummary | None:
    """A re-run: the verified bundle already written for these very records; None when there is none yet."""
    manifest_name = f"{name}{_MANIFEST_SUFFIX}"
    existing = target.read_json(manifest_name)
    if existing is None:
        return None
    count = len(collected.entries)
    if [e["key"] for e in existing["records"]] != [e["key"] for e in collected.entries]:
        raise ArchiveError(
            f"backup {manifest_name} exists with {existing['count']} records but the archive now has "
            f"{count} for that interval; back up the new ones in a later interval.",
            key=manifest_name,
        )
    verify_bundle(archive, target, manifest_name)
    log_fn(f"bundle {name} already holds these {count} records; nothing written")
    return BackupSummary(existing["bundle"], manifest_name, count, existing["bytes"], created=False)


def _write_bundle(
    archive: MailArchive,
    target: ObjectStore,
    name: str,
    interval: tuple[datetime, datetime],
    collected: _Collected,
    *,
    encrypt: bool,
    log_fn: Callable[[str], None],
) -> BackupSummary:
    """Tar and seal the records, write the bundle and then its manifest (each once), and read both back."""
    bundle, data, encryption = _seal(archive, name, _tar(collected.members), encrypt)
    manifest_name = f"{name}{_MANIFEST_SUFFIX}"
    manifest = {
        "schema_version": MANIFEST_VERSION,
        "interval": [interval[0].isoformat(), interval[1].isoformat()],
        "bundle": bundle,
        "bundle_sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "count": len(collected.entries),
        "records": collected.entries,
        "encryption": encryption,
    }
    target.write_once(bundle, data)
    target.write_once(manifest_name, _dumps(manifest))
    verify_bundle(archive, target, manifest_name)
    log_fn(f"wrote {bundle}: {len(collected.entries)} records, {len(data)} bytes")
    return BackupSummary(bundle, manifest_name, len(collected.entries), len(data), created=True)


def _seal(archive: MailArchive, name: str, data: bytes, encrypt: bool) -> tuple[str, bytes, dict[str, Any] | None]:
    """(object name, bytes, encryption info) of a bundle: sealed with the archive's Transit key when it has one."""
    transit = archive.sealer if encrypt else None
    if transit is None:
        return f"{name}.tar.gz", data, None
    bundle = f"{name}.tar.gz.enc"
    sealed, encryption = transit.seal(data, aad=bundle.encode())
    return bundle, sealed, encryption


def _unseal(archive: MailArchive, bundle: str, data: bytes, encryption: dict[str, Any] | None) -> bytes:
    """The tar.gz inside a bundle, decrypted (and authenticated) when the manifest says it was sealed."""
    if not encryption:
        return data
    if archive.sealer is None:
        raise ArchiveError(f"backup bundle {bundle} is encrypted: the archive needs its transit_key.", key=bundle)
    return bytes(archive.sealer.open(data, encryption, aad=bundle.encode(), name=bundle))


def verify_bundle(
    archive: MailArchive, target: ObjectStore, manifest_name: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read a bundle back and check its hash, its decryption and every record's hash: (manifest, members)."""
    manifest = target.read_json(manifest_name)
    if manifest is None:
        raise ArchiveError(f"backup manifest {manifest_name} is missing.", key=manifest_name)
    return manifest, verify_manifest(archive, target, manifest)


def verify_manifest(archive: MailArchive, target: ObjectStore, manifest: Mapping[str, Any]) -> dict[str, bytes]:
    """:func:`verify_bundle` for a manifest already read: the bundle's members, every hash checked."""
    name = str(manifest["bundle"])
    data = target.read(name)
    if data is None:
        raise ArchiveIntegrityError(f"backup bundle {name} is missing.", key=name)
    if hashlib.sha256(data).hexdigest() != manifest["bundle_sha256"]:
        raise ArchiveIntegrityError(f"backup bundle {name} does not match its SHA-256: it was altered.", key=name)
    members = _untar(_unseal(archive, name, data, manifest.get("encryption")), name)
    for entry in manifest["records"]:
        stored = members.get(f"{entry['prefix']}.eml")
        if stored is None or hashlib.sha256(stored).hexdigest() != entry["sha256"]:
            raise ArchiveIntegrityError(f"record {entry['prefix']} in bundle {name} is damaged.", key=entry["prefix"])
        metadata = members.get(f"{entry['prefix']}.json", b"")
        if hashlib.sha256(metadata).hexdigest() != entry["metadata_sha256"]:
            raise ArchiveIntegrityError(
                f"metadata of {entry['prefix']} in bundle {name} is damaged.", key=entry["prefix"]
            )
    return members


def records_in_bundle(
    archive: MailArchive, target: ObjectStore, manifest_name: str
) -> Iterator[tuple[ArchiveRecord, bytes]]:
    """Each record of a verified bundle with its plaintext bytes (decrypted and checked)."""
    manifest, members = verify_bundle(archive, target, manifest_name)
    for entry in manifest["records"]:
        record = _record_from_entry(entry, members[f"{entry['prefix']}.json"])
        yield record, archive.verify(record, members[f"{entry['prefix']}.eml"])


def _apply_retention(
    archive: MailArchive,
    records: list[ArchiveRecord],
    retention_days: int,
    now: datetime | None,
    log_fn: Callable[[str], None],
) -> int:
    """Remove records older than the retention period; only called once their bundle verified."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    removed = 0
    for record in records:
        if datetime.fromisoformat(str(_record_facts(record)["committed_at"])) < cutoff:
            archive.remove(record)
            removed += 1
    if removed:
        log_fn(f"retention: removed {removed} records older than {retention_days} days (held in a verified bundle)")
    return removed
