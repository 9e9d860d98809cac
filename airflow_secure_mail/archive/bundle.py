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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
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


def bundle_name(start: datetime, end: datetime) -> str:
    return f"bundles/{start:{_STAMP}}_{end:{_STAMP}}"


def _manifest_interval(name: str) -> tuple[datetime, datetime] | None:
    """The ``[start, end)`` a manifest covers, read from its name (``<start>_<end>.manifest.json``)."""
    from datetime import UTC

    stem = name.removesuffix(".manifest.json")
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

    The newest bundle (by its manifest's exact interval, verified) gives the start, so consecutive backups
    meet without gap or overlap. A bundle already reaching ``end`` means a re-run: its own interval is
    returned, and backing it up again finds it. Without any bundle: from the archive's first day.
    """
    names = [n for n in target.list_names("bundles") if (i := _manifest_interval(n)) and i[0] < end]
    intervals = []
    for name in names:
        manifest = target.read_json(f"bundles/{name}")
        if manifest is not None:
            first, last = (datetime.fromisoformat(t) for t in manifest["interval"])
            intervals.append((last, first, name))
    if intervals:
        last, first, name = max(intervals)
        verify_bundle(archive, target, f"bundles/{name}")
        return (first, last) if last >= end else (last, end)
    start = _first_day(archive)
    return (start if start is not None and start < end else end - timedelta(days=1)), end


def _first_day(archive: MailArchive) -> datetime | None:
    """Midnight UTC of the archive's oldest day folder (``messages/YYYY/MM/DD``), None when it is empty."""
    from datetime import UTC

    path = "messages"
    for _ in range(3):
        names = [n for n in archive.list_names(path) if n.isdigit()]
        if not names:
            return None
        path = f"{path}/{names[0]}"
    _, year, month, day = path.split("/")
    return datetime(int(year), int(month), int(day), tzinfo=UTC)


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
    """Verify every committed record in ``[start, end)`` and write one bundle + manifest to ``target``."""
    records = list(archive.iter_records(start, end))
    members: list[tuple[str, bytes]] = []
    entries = []
    for done, record in enumerate(records, start=1):
        stored = archive.read(f"{record.prefix}.eml")
        if stored is None:
            raise ArchiveIntegrityError(f"archive object {record.prefix}.eml is missing.", key=record.prefix)
        archive.verify(record, stored)
        metadata = archive.read(f"{record.prefix}.json") or b""
        members += [(f"{record.prefix}.eml", stored), (f"{record.prefix}.json", metadata)]
        meta = record.metadata
        entries.append(
            {
                "key": record.key,
                "prefix": record.prefix,
                "sha256": meta["sha256"],
                "metadata_sha256": hashlib.sha256(metadata).hexdigest(),
                "size": meta["size"],
                "status": meta["status"],
                "message_id": meta.get("message_id"),
                "committed_at": meta.get("committed_at"),
            }
        )
        _progress(log_fn, done, len(records), "verified")
    name = bundle_name(start, end)
    manifest_name = f"{name}.manifest.json"
    existing = target.read_json(manifest_name)
    if existing is not None:
        if [e["key"] for e in existing["records"]] != [e["key"] for e in entries]:
            raise ArchiveError(
                f"backup {manifest_name} exists with {existing['count']} records but the archive now has "
                f"{len(entries)} for that interval; back up the new ones in a later interval.",
                key=manifest_name,
            )
        verify_bundle(archive, target, manifest_name)
        log_fn(f"bundle {name} already holds these {len(entries)} records; nothing written")
        summary = BackupSummary(existing["bundle"], manifest_name, len(entries), existing["bytes"], created=False)
    else:
        data = _tar(members)
        encryption = None
        sealed = encrypt and archive.envelope is not None
        bundle = f"{name}.tar.gz" + (".enc" if sealed else "")
        if sealed:
            data, encryption = archive.envelope.seal(data, aad=bundle.encode())
        manifest = {
            "schema_version": MANIFEST_VERSION,
            "interval": [start.isoformat(), end.isoformat()],
            "bundle": bundle,
            "bundle_sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "count": len(entries),
            "records": entries,
            "encryption": encryption,
        }
        target.write_once(bundle, data)
        target.write_once(manifest_name, _dumps(manifest))
        verify_bundle(archive, target, manifest_name)
        log_fn(f"wrote {bundle}: {len(entries)} records, {len(data)} bytes")
        summary = BackupSummary(bundle, manifest_name, len(entries), len(data), created=True)
    summary.start, summary.end = start.isoformat(), end.isoformat()
    if retention_days is not None:
        summary.removed = _apply_retention(archive, records, retention_days, now, log_fn)
    return summary


def verify_bundle(
    archive: MailArchive, target: ObjectStore, manifest_name: str
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read a bundle back and check its hash, its decryption and every record's hash: (manifest, members)."""
    manifest = target.read_json(manifest_name)
    if manifest is None:
        raise ArchiveError(f"backup manifest {manifest_name} is missing.", key=manifest_name)
    name = str(manifest["bundle"])
    data = target.read(name)
    if data is None:
        raise ArchiveIntegrityError(f"backup bundle {name} is missing.", key=name)
    if hashlib.sha256(data).hexdigest() != manifest["bundle_sha256"]:
        raise ArchiveIntegrityError(f"backup bundle {name} does not match its SHA-256: it was altered.", key=name)
    if manifest.get("encryption"):
        if archive.envelope is None:
            raise ArchiveError(f"backup bundle {name} is encrypted: the archive needs its transit_key.", key=name)
        data = archive.envelope.open(data, manifest["encryption"], aad=name.encode(), name=name)
    members = _untar(data, name)
    for entry in manifest["records"]:
        stored = members.get(f"{entry['prefix']}.eml")
        if stored is None or hashlib.sha256(stored).hexdigest() != entry["sha256"]:
            raise ArchiveIntegrityError(f"record {entry['prefix']} in bundle {name} is damaged.", key=entry["prefix"])
        metadata = members.get(f"{entry['prefix']}.json", b"")
        if hashlib.sha256(metadata).hexdigest() != entry["metadata_sha256"]:
            raise ArchiveIntegrityError(
                f"metadata of {entry['prefix']} in bundle {name} is damaged.", key=entry["prefix"]
            )
    return manifest, members


def records_in_bundle(
    archive: MailArchive, target: ObjectStore, manifest_name: str
) -> Iterator[tuple[ArchiveRecord, bytes]]:
    """Each record of a verified bundle with its plaintext bytes (decrypted and checked)."""
    manifest, members = verify_bundle(archive, target, manifest_name)
    for entry in manifest["records"]:
        meta = RecordMetadata.from_json(members[f"{entry['prefix']}.json"], where=entry["prefix"])
        record = ArchiveRecord(entry["key"], entry["prefix"], meta)
        yield record, archive.verify(record, members[f"{entry['prefix']}.eml"])


def _apply_retention(
    archive: MailArchive,
    records: list[ArchiveRecord],
    retention_days: int,
    now: datetime | None,
    log_fn: Callable[[str], None],
) -> int:
    """Remove records older than the retention period; only called once their bundle verified."""
    from datetime import UTC

    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    removed = 0
    for record in records:
        if datetime.fromisoformat(str(record.metadata["committed_at"])) < cutoff:
            archive.remove(record)
            removed += 1
    if removed:
        log_fn(f"retention: removed {removed} records older than {retention_days} days (held in a verified bundle)")
    return removed
