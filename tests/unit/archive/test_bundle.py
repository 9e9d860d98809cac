"""archive/bundle.py on a local archive with no server: selection, verification, idempotence, retention."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_secure_mail.archive.bundle import _tar, backup, bundle_name, verify_bundle
from airflow_secure_mail.archive.record import ArchiveStatus
from airflow_secure_mail.archive.store import MailArchive, ObjectStore, record_key
from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError
from airflow_secure_mail.mail.outgoing import Outgoing
from tests.helpers import window


def _archived(archive: MailArchive, n: int) -> str:
    """Stage and commit one message as the pipeline would after a delivery; returns its key."""
    recipients = [f"r{n}@example.com"]
    key = record_key(f"<{n}@example.com>", "airflow@example.com", recipients)
    data = b"Subject: report %d\r\n\r\nbody %d\r\n" % (n, n)
    record = archive.stage(Outgoing("airflow@example.com", tuple(recipients), data, f"<{n}@example.com>"))
    assert record.key == key
    archive.commit(record, ArchiveStatus.SENT, receipt={"message_id": f"<{n}@example.com>"})
    return key


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
    summary = backup(archive, target, *window(), log_fn=lines.append)
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


def _tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _touch_all(root: Path, when: datetime) -> None:
    stamp = when.timestamp()
    for path in root.rglob("*"):
        os.utime(path, (stamp, stamp))


def test_the_same_records_give_the_same_bundle_bytes_whatever_their_file_times_and_listing_order(
    archive, tmp_path, monkeypatch
):
    first = _archived(archive, 0)
    for n in range(1, 3):
        _archived(archive, n)
    copy = Path(tmp_path, "copy")
    shutil.copytree(Path(tmp_path, "archive"), copy)
    _touch_all(Path(tmp_path, "archive"), datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC))
    _touch_all(copy, datetime(2031, 12, 30, 23, 59, 58, tzinfo=UTC))
    other = MailArchive(f"file://{copy}")
    monkeypatch.setattr(other, "list_names", lambda prefix: ObjectStore.list_names(other, prefix)[::-1])
    start, end = window()
    day = archive.lookup(first).prefix.rpartition("/")[0]  # type: ignore[union-attr]
    assert other.list_names(day) == archive.list_names(day)[::-1] != archive.list_names(day)
    one = backup(archive, ObjectStore(f"file://{tmp_path}/one"), start, end)
    two = backup(other, ObjectStore(f"file://{tmp_path}/two"), start, end)
    one_bytes = Path(tmp_path, "one", one.bundle).read_bytes()
    assert Path(tmp_path, "two", two.bundle).read_bytes() == one_bytes
    manifests = [json.loads(Path(tmp_path, d, s.manifest).read_bytes()) for d, s in (("one", one), ("two", two))]
    assert [e["key"] for e in manifests[1]["records"]] == [e["key"] for e in manifests[0]["records"]][::-1]
    assert manifests[0]["bundle_sha256"] == manifests[1]["bundle_sha256"] == hashlib.sha256(one_bytes).hexdigest()
    assert one_bytes[4:8] == b"\0\0\0\0"  # gzip header MTIME pinned to 0
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(one_bytes))) as tar:
        infos = tar.getmembers()
    prefixes = sorted(e["prefix"] for e in manifests[0]["records"])
    assert [m.name for m in infos] == [f"{p}{ext}" for p in prefixes for ext in (".eml", ".json")]
    assert {(m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname) for m in infos} == {(0, 0o600, 0, 0, "", "")}


def test_a_rerun_finds_the_verified_bundle_and_writes_nothing(archive, target, tmp_path):
    _archived(archive, 1)
    start, end = window()
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
    start, end = window()
    summary = backup(archive, target, start, end)
    _archived(archive, 2)
    with pytest.raises(ArchiveError, match=r"exists with 1 records but the archive now has 2 for that interval"):
        backup(archive, target, start, end)
    assert verify_bundle(archive, target, summary.manifest)[0]["count"] == 1


def _repack(tmp_path: Path, summary, change) -> None:
    """Rewrite an unencrypted bundle with ``change(members)`` applied and re-hash it in its manifest.

    What someone who can write to the backup location could do: the bundle's own hash then agrees, so only
    the per-record hashes in the manifest stand between the altered record and a restore.
    """
    bundle_path = Path(tmp_path, "backup", summary.bundle)
    members = _members(bundle_path)
    change(members)
    data = _tar(list(members.items()))
    bundle_path.write_bytes(data)
    manifest_path = Path(tmp_path, "backup", summary.manifest)
    manifest = json.loads(manifest_path.read_bytes())
    manifest["bundle_sha256"], manifest["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    manifest_path.write_bytes(json.dumps(manifest).encode())


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (".eml", "record {prefix} in bundle {bundle} is damaged."),
        (".json", "metadata of {prefix} in bundle {bundle} is damaged."),
    ],
    ids=["message", "committed-record"],
)
def test_one_archived_record_altered_inside_the_bundle_fails_verification_naming_it(
    archive, target, tmp_path, suffix, message
):
    for n in range(3):
        _archived(archive, n)
    summary = backup(archive, target, *window())
    prefix = json.loads(Path(tmp_path, "backup", summary.manifest).read_bytes())["records"][1]["prefix"]
    _repack(tmp_path, summary, lambda m: m.update({f"{prefix}{suffix}": _flip_last_byte(m[f"{prefix}{suffix}"])}))
    with pytest.raises(ArchiveIntegrityError) as caught:
        verify_bundle(archive, target, summary.manifest)
    assert str(caught.value) == message.format(prefix=prefix, bundle=summary.bundle)
    assert caught.value.key == prefix


def test_one_archived_record_missing_from_the_bundle_fails_verification_naming_it(archive, target, tmp_path):
    for n in range(2):
        _archived(archive, n)
    summary = backup(archive, target, *window())
    prefix = json.loads(Path(tmp_path, "backup", summary.manifest).read_bytes())["records"][0]["prefix"]
    _repack(tmp_path, summary, lambda m: m.pop(f"{prefix}.eml"))
    with pytest.raises(ArchiveIntegrityError) as caught:
        verify_bundle(archive, target, summary.manifest)
    assert str(caught.value) == f"record {prefix} in bundle {summary.bundle} is damaged."


def test_a_manifest_hash_that_disagrees_with_the_bundled_record_names_the_record(archive, target, tmp_path):
    _archived(archive, 1)
    summary = backup(archive, target, *window())
    manifest_path = Path(tmp_path, "backup", summary.manifest)
    manifest = json.loads(manifest_path.read_bytes())
    prefix = manifest["records"][0]["prefix"]
    manifest["records"][0]["sha256"] = "0" * 64
    manifest_path.write_bytes(json.dumps(manifest).encode())
    with pytest.raises(ArchiveIntegrityError) as caught:
        verify_bundle(archive, target, summary.manifest)
    assert str(caught.value) == f"record {prefix} in bundle {summary.bundle} is damaged."


def test_a_damaged_archive_record_stops_the_backup_before_anything_is_written(archive, target, tmp_path):
    _archived(archive, 1)
    [eml] = Path(tmp_path, "archive", "messages").rglob("*.eml")
    eml.write_bytes(eml.read_bytes().replace(b"body", b"BODY"))
    with pytest.raises(ArchiveIntegrityError, match=f"{eml.stem}.eml does not match its SHA-256"):
        backup(archive, target, *window())
    assert not Path(tmp_path, "backup").exists()


def test_retention_removes_only_records_older_than_the_period_once_bundled(archive, target, tmp_path):
    for n in range(2):
        _archived(archive, n)
    start, end = window()
    lines: list[str] = []
    kept = backup(archive, target, start, end, retention_days=1, now=end, log_fn=lines.append)
    assert kept.removed == 0 and len(list(Path(tmp_path, "archive", "messages").rglob("*.eml"))) == 2
    gone = backup(archive, target, start, end, retention_days=1, now=end + timedelta(days=2), log_fn=lines.append)
    assert gone.removed == 2 and not list(Path(tmp_path, "archive", "messages").rglob("*.eml"))
    assert not list(Path(tmp_path, "archive", "index").rglob("*.json"))
    assert lines[-1] == "retention: removed 2 records older than 1 days (held in a verified bundle)"


def test_retention_never_removes_records_outside_the_bundled_interval_nor_uncommitted_ones(archive, target, tmp_path):
    bundled = [_archived(archive, n) for n in range(2)]
    end = _committed_at(archive, bundled[-1]) + timedelta(microseconds=1)
    later = [_archived(archive, n) for n in range(2, 4)]
    pending = archive.stage(Outgoing("airflow@example.com", ("p@example.com",), b"Subject: p\r\n\r\np\r\n", "<p@x>"))
    failed = archive.stage(Outgoing("airflow@example.com", ("f@example.com",), b"Subject: f\r\n\r\nf\r\n", "<f@x>"))
    archive.commit(failed, ArchiveStatus.FAILED, error="421 try later")
    assert min(_committed_at(archive, k) for k in later) >= end  # outside [end - 1h, end)
    root = Path(tmp_path, "archive")
    before = _tree(root)
    summary = backup(archive, target, end - timedelta(hours=1), end, retention_days=0, now=end + timedelta(days=400))
    assert (summary.count, summary.removed) == (2, 2)
    removed = {name for name in before if any(k in name for k in bundled)}
    assert len(removed) == 2 * 4  # each: .eml, .pending.json, .json and its index entry
    assert _tree(root) == {name: data for name, data in before.items() if name not in removed}
    assert [archive.lookup(k) is not None for k in (*later, pending.key, failed.key)] == [True] * 4


def _committed_at(archive: MailArchive, key: str) -> datetime:
    record = archive.lookup(key)
    assert record is not None and record.meta.committed_at is not None
    return datetime.fromisoformat(record.meta.committed_at)


def _corrupt_bundle(tmp_path: Path, summary) -> str:
    """Flip a byte of the bundle; returns the error verification must raise."""
    path = Path(tmp_path, "backup", summary.bundle)
    path.write_bytes(_flip_last_byte(path.read_bytes()))
    return f"backup bundle {summary.bundle} does not match its SHA-256: it was altered."


def _corrupt_record_in_bundle(tmp_path: Path, summary) -> str:
    """Flip a byte of one record inside the bundle; returns the error verification must raise."""
    prefix = json.loads(Path(tmp_path, "backup", summary.manifest).read_bytes())["records"][0]["prefix"]
    _repack(tmp_path, summary, lambda m: m.update({f"{prefix}.eml": _flip_last_byte(m[f"{prefix}.eml"])}))
    return f"record {prefix} in bundle {summary.bundle} is damaged."


@pytest.mark.parametrize("damage", [_corrupt_bundle, _corrupt_record_in_bundle], ids=["bundle-bytes", "record-inside"])
def test_retention_removes_nothing_when_the_existing_bundle_fails_verification(archive, target, tmp_path, damage):
    for n in range(3):
        _archived(archive, n)
    start, end = window()
    summary = backup(archive, target, start, end)
    error = damage(tmp_path, summary)
    before = _tree(Path(tmp_path, "archive"))
    with pytest.raises(ArchiveIntegrityError) as caught:
        backup(archive, target, start, end, retention_days=0, now=end + timedelta(days=400))
    assert str(caught.value) == error
    assert _tree(Path(tmp_path, "archive")) == before


def test_retention_removes_nothing_when_the_new_bundle_does_not_read_back_as_written(
    archive, target, tmp_path, monkeypatch
):
    """The backup store hands back other bytes than it was given (mocked: a disk cannot be made to rot on cue)."""
    for n in range(2):
        _archived(archive, n)
    written = ObjectStore.read

    def rotten(self: ObjectStore, name: str) -> bytes | None:
        data = written(self, name)
        return _flip_last_byte(data) if data and name.endswith(".tar.gz") else data

    monkeypatch.setattr(target, "read", rotten.__get__(target))
    before = _tree(Path(tmp_path, "archive"))
    start, end = window()
    with pytest.raises(ArchiveIntegrityError) as caught:
        backup(archive, target, start, end, retention_days=0, now=end + timedelta(days=400))
    bundle = f"{bundle_name(start, end)}.tar.gz"
    assert str(caught.value) == f"backup bundle {bundle} does not match its SHA-256: it was altered."
    assert _tree(Path(tmp_path, "archive")) == before
