"""archive/bundle.py on a local archive with no server: selection, verification, idempotence, retention."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_secure_mail.archive.bundle import backup, verify_bundle
from airflow_secure_mail.archive.record import ArchiveStatus
from airflow_secure_mail.archive.store import MailArchive, ObjectStore, record_key
from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError
from airflow_secure_mail.mail.outgoing import Outgoing


def _archived(archive: MailArchive, n: int) -> str:
    """Stage and commit one message as the pipeline would after a delivery; returns its key."""
    recipients = [f"r{n}@example.com"]
    key = record_key(f"<{n}@example.com>", "airflow@example.com", recipients)
    data = b"Subject: report %d\r\n\r\nbody %d\r\n" % (n, n)
    record = archive.stage(Outgoing("airflow@example.com", tuple(recipients), data, f"<{n}@example.com>"))
    assert record.key == key
    archive.commit(record, ArchiveStatus.SENT, receipt={"message_id": f"<{n}@example.com>"})
    return key


def _window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(hours=1)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(path.read_bytes()))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


@pytest.fixture
def archive(tmp_path) -> MailArchive:
    return MailArchive(f"file://{tmp_path}/archive")


@pytest.fixture
def target(tmp_path) -> ObjectStore:
    return ObjectStore(f"file://{tmp_path}/backup")


def test_bundle_holds_every_record_exactly_as_stored_and_the_manifest_lists_them(archive, target, tmp_path):
    keys = sorted(_archived(archive, n) for n in range(3))
    lines: list[str] = []
    summary = backup(archive, target, *_window(), log_fn=lines.append)
    manifest = json.loads(Path(tmp_path, "backup", summary.manifest).read_bytes())
    assert (summary.created, summary.count, summary.removed) == (True, 3, 0)
    assert summary.bundle.endswith(".tar.gz") and manifest["encryption"] is None
    assert sorted(e["key"] for e in manifest["records"]) == keys
    members = _members(Path(tmp_path, "backup", summary.bundle))
    for entry in manifest["records"]:
        eml = Path(tmp_path, "archive", f"{entry['prefix']}.eml").read_bytes()
        assert members[f"{entry['prefix']}.eml"] == eml
        assert members[f"{entry['prefix']}.json"] == Path(tmp_path, "archive", f"{entry['prefix']}.json").read_bytes()
        assert (entry["status"], entry["size"]) == ("sent", len(eml))
    assert lines[-1] == f"wrote {summary.bundle}: 3 records, {summary.bytes} bytes"
    assert "verified: 3/3 (100%)" in lines


def test_the_same_interval_gives_the_same_bundle_bytes(archive, tmp_path):
    for n in range(2):
        _archived(archive, n)
    start, end = _window()
    one = backup(archive, ObjectStore(f"file://{tmp_path}/one"), start, end)
    two = backup(archive, ObjectStore(f"file://{tmp_path}/two"), start, end)
    assert Path(tmp_path, "one", one.bundle).read_bytes() == Path(tmp_path, "two", two.bundle).read_bytes()


def test_a_rerun_finds_the_verified_bundle_and_writes_nothing(archive, target, tmp_path):
    _archived(archive, 1)
    start, end = _window()
    first = backup(archive, target, start, end)
    before = {p: p.stat().st_mtime_ns for p in Path(tmp_path, "backup").rglob("*")}
    lines: list[str] = []
    again = backup(archive, target, start, end, log_fn=lines.append)
    assert (again.created, again.bundle, again.manifest, again.bytes) == (
        False,
        first.bundle,
        first.manifest,
        first.bytes,
    )
    assert (again.start, again.end) == (start.isoformat(), end.isoformat())
    assert {p: p.stat().st_mtime_ns for p in Path(tmp_path, "backup").rglob("*")} == before
    assert (
        lines[-1]
        == f"bundle {first.manifest.removesuffix('.manifest.json')} already holds these 1 records; nothing written"
    )


def test_a_rerun_after_new_mail_in_the_interval_is_refused(archive, target):
    _archived(archive, 1)
    start, end = _window()
    summary = backup(archive, target, start, end)
    _archived(archive, 2)
    with pytest.raises(ArchiveError, match=r"exists with 1 records but the archive now has 2 for that interval"):
        backup(archive, target, start, end)
    assert verify_bundle(archive, target, summary.manifest)[0]["count"] == 1


def test_a_record_altered_in_the_bundle_is_named(archive, target, tmp_path):
    _archived(archive, 1)
    summary = backup(archive, target, *_window())
    manifest_path = Path(tmp_path, "backup", summary.manifest)
    manifest = json.loads(manifest_path.read_bytes())
    prefix = manifest["records"][0]["prefix"]
    manifest["records"][0]["sha256"] = "0" * 64
    manifest_path.write_bytes(json.dumps(manifest).encode())
    with pytest.raises(ArchiveIntegrityError, match=f"record {prefix} in bundle {summary.bundle} is damaged"):
        verify_bundle(archive, target, summary.manifest)


def test_a_damaged_archive_record_stops_the_backup_before_anything_is_written(archive, target, tmp_path):
    _archived(archive, 1)
    [eml] = Path(tmp_path, "archive", "messages").rglob("*.eml")
    eml.write_bytes(eml.read_bytes().replace(b"body", b"BODY"))
    with pytest.raises(ArchiveIntegrityError, match=f"{eml.stem}.eml does not match its SHA-256"):
        backup(archive, target, *_window())
    assert not Path(tmp_path, "backup").exists()


def test_retention_removes_only_records_older_than_the_period_once_bundled(archive, target, tmp_path):
    for n in range(2):
        _archived(archive, n)
    start, end = _window()
    lines: list[str] = []
    kept = backup(archive, target, start, end, retention_days=1, now=end, log_fn=lines.append)
    assert kept.removed == 0 and len(list(Path(tmp_path, "archive", "messages").rglob("*.eml"))) == 2
    gone = backup(archive, target, start, end, retention_days=1, now=end + timedelta(days=2), log_fn=lines.append)
    assert gone.removed == 2 and not list(Path(tmp_path, "archive", "messages").rglob("*.eml"))
    assert not list(Path(tmp_path, "archive", "index").rglob("*.json"))
    assert lines[-1] == "retention: removed 2 records older than 1 days (held in a verified bundle)"
