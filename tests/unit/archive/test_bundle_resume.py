"""archive/bundle.py ``resume_interval``: where the next backup starts, read from the newest manifest only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airflow_secure_mail.archive.bundle import backup, resume_interval
from airflow_secure_mail.archive.record import ArchiveStatus
from airflow_secure_mail.archive.store import MailArchive, ObjectStore
from airflow_secure_mail.errors import ArchiveIntegrityError
from airflow_secure_mail.mail.outgoing import Outgoing

NOW = datetime.now(UTC).replace(microsecond=123456)
HOUR = timedelta(hours=1)


@pytest.fixture
def archive(tmp_path) -> MailArchive:
    archive = MailArchive(f"file://{tmp_path}/archive")
    record = archive.stage(Outgoing("airflow@example.com", ("ops@example.com",), b"Subject: r\r\n\r\nb\r\n", "<1@x>"))
    archive.commit(record, ArchiveStatus.SENT, receipt={"message_id": "<1@x>"})
    return archive


@pytest.fixture
def target(archive, tmp_path) -> ObjectStore:
    """Three consecutive bundles (the last holds the record); each manifest's exact interval has microseconds."""
    target = ObjectStore(f"file://{tmp_path}/backup")
    for start, end in ((NOW - 3 * HOUR, NOW - 2 * HOUR), (NOW - 2 * HOUR, NOW - HOUR), (NOW - HOUR, NOW + HOUR)):
        backup(archive, target, start, end, encrypt=False)
    return target


@pytest.fixture
def manifest_reads(target, monkeypatch) -> list[str]:
    """The manifests read (the real read still runs)."""
    reads: list[str] = []
    real = target.read

    def counting(name: str) -> bytes | None:
        if name.endswith(".manifest.json"):
            reads.append(name)
        return real(name)

    monkeypatch.setattr(target, "read", counting)
    return reads


def test_the_next_backup_starts_where_the_newest_ended_reading_only_its_manifest(archive, target, manifest_reads):
    assert resume_interval(archive, target, NOW + 2 * HOUR) == (NOW + HOUR, NOW + 2 * HOUR)
    newest = f"bundles/{NOW - HOUR:%Y%m%dT%H%M%SZ}_{NOW + HOUR:%Y%m%dT%H%M%SZ}.manifest.json"
    assert manifest_reads == [newest]


def test_a_rerun_inside_the_newest_bundle_returns_its_own_interval(archive, target, manifest_reads):
    assert resume_interval(archive, target, NOW + HOUR) == (NOW - HOUR, NOW + HOUR)
    assert len(manifest_reads) == 1


def test_bundles_starting_at_or_after_the_end_are_not_read(archive, target, manifest_reads):
    end = NOW - 2 * HOUR - timedelta(minutes=1)  # inside the oldest bundle, before the others start
    assert resume_interval(archive, target, end) == (NOW - 3 * HOUR, NOW - 2 * HOUR)
    assert manifest_reads == [f"bundles/{NOW - 3 * HOUR:%Y%m%dT%H%M%SZ}_{NOW - 2 * HOUR:%Y%m%dT%H%M%SZ}.manifest.json"]


def test_a_damaged_newest_bundle_raises_instead_of_resuming_from_an_older_one(archive, target, tmp_path):
    [bundle] = (tmp_path / "backup" / "bundles").glob(f"{NOW - HOUR:%Y%m%dT%H%M%SZ}_*.tar.gz")
    bundle.write_bytes(bundle.read_bytes() + b"\0")
    with pytest.raises(ArchiveIntegrityError) as info:
        resume_interval(archive, target, NOW + 2 * HOUR)
    assert str(info.value) == f"backup bundle bundles/{bundle.name} does not match its SHA-256: it was altered."
