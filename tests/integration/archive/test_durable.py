"""The local archive's write path: whole files under their names, durable a group at a time, errors per item,
and a copy staged by a try that stopped short of its index entry completed by the next try."""

from __future__ import annotations

import errno
import os
import secrets
import stat
import subprocess
import time
from pathlib import Path

import pytest

from airflow_secure_mail.archive import _durable
from airflow_secure_mail.archive.record import ArchiveStatus
from airflow_secure_mail.archive.store import MailArchive, ObjectStore
from airflow_secure_mail.errors import ArchiveError
from airflow_secure_mail.mail.compose import compose
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from tests.helpers import numbered_request


@pytest.fixture(params=["syncfs", "fsync", "not local"])
def barrier(request, monkeypatch, tmp_path):
    """Each way a group reaches the disk, counted: one syncfs per step (a local file system on Linux 5.8+), or
    an fsync per file and directory (no syncfs, or a file system such as NFS that is not on the local list)."""
    calls = {"syncfs": 0, "fsync": 0}
    real_syncfs, real_fsync = _durable._syncfs, os.fsync

    def counted(name, call):
        def run(fd):
            calls[name] += 1
            call(fd)

        return run

    monkeypatch.setattr(_durable, "_local_devices", {})
    monkeypatch.setattr(_durable, "_durable_dirs", set())
    monkeypatch.setattr(_durable.os, "fsync", counted("fsync", real_fsync))
    if request.param == "syncfs":
        if real_syncfs is None or _durable.fs_type(str(tmp_path)) not in _durable._LOCAL_FILE_SYSTEMS:
            pytest.skip("no syncfs on this kernel, or the test folder is not on a local file system")
        monkeypatch.setattr(_durable, "_syncfs", counted("syncfs", real_syncfs))
    elif request.param == "fsync":
        monkeypatch.setattr(_durable, "_syncfs", None)
    else:
        monkeypatch.setattr(_durable, "_LOCAL_FILE_SYSTEMS", {})
    return request.param, calls


def _names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_group_is_written_whole_private_and_without_temp_files(tmp_path, barrier):
    store = ObjectStore(f"file://{tmp_path}/s")
    items = [(f"messages/2026/11/29/k{i}.eml", os.urandom(3000 + i)) for i in range(10)]
    assert store.write_once_many(items) == [None] * 10
    root = tmp_path / "s"
    assert _names(root) == sorted(name for name, _ in items)  # no .tmp- file left behind
    for name, data in items:
        assert (root / name).read_bytes() == data
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600
    kind, calls = barrier
    if kind == "syncfs":  # the temp files' bytes, then the new names: one syncfs each
        assert calls == {"syncfs": 2, "fsync": 0}
    else:  # ten files, then 29/ (the new names), then once each folder's entry in its parent, up to /
        folder = root / "messages/2026/11/29"
        assert calls == {"syncfs": 0, "fsync": 10 + 1 + len(folder.parents)}


def test_the_file_system_type_is_read_as_statfs_reports_it(tmp_path):
    judge = subprocess.run(["stat", "-f", "-c", "%t", str(tmp_path)], capture_output=True, text=True, check=True)
    assert _durable.fs_type(str(tmp_path)) == int(judge.stdout, 16)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert _durable.fs_type(fd) == int(judge.stdout, 16)
    finally:
        os.close(fd)


def test_an_existing_name_fails_alone_and_keeps_its_bytes(tmp_path, barrier):
    store = ObjectStore(f"file://{tmp_path}/s")
    store.write_once("d/a.json", b"first")
    results = store.write_once_many([("d/b.json", b"b"), ("d/a.json", b"second"), ("d/c.json", b"c")])
    assert results[0] is None and results[2] is None
    error = results[1]
    assert isinstance(error, ArchiveError) and error.exists
    assert str(error) == "archive object d/a.json already exists; records are never overwritten."
    assert (tmp_path / "s/d/a.json").read_bytes() == b"first"
    assert _names(tmp_path / "s") == ["d/a.json", "d/b.json", "d/c.json"]


def test_a_second_name_links_the_same_file(tmp_path, barrier):
    store = ObjectStore(f"file://{tmp_path}/s")
    store.write_once("m/x.pending.json", b"{}")
    assert store.copy_once_many([("m/x.pending.json", "index/ab/x.json", b"{}")]) == [None]
    assert os.path.samefile(tmp_path / "s/m/x.pending.json", tmp_path / "s/index/ab/x.json")
    [again] = store.copy_once_many([("m/x.pending.json", "index/ab/x.json", b"{}")])
    assert again is not None and again.exists


def test_a_write_error_reaching_the_disk_fails_every_item_and_leaves_no_file(tmp_path, barrier, monkeypatch):
    # An I/O error cannot be caused on this machine's disk: the sync primitive itself (syncfs, or fsync of the
    # second file) reports EIO; everything around it (the pool, the per-item errors, the clean-up) runs for real.
    kind, _ = barrier
    if kind == "syncfs":
        monkeypatch.setattr(_durable, "_syncfs", lambda fd: _raise(errno.EIO))
    else:
        real_fsync, fds = os.fsync, []

        def fsync(fd):
            fds.append(fd)
            if len(fds) == 2:
                _raise(errno.EIO)
            real_fsync(fd)

        monkeypatch.setattr(_durable.os, "fsync", fsync)
    store = ObjectStore(f"file://{tmp_path}/s")
    results = store.write_once_many([("d/a.eml", b"a"), ("d/b.eml", b"b"), ("d/c.eml", b"c")])
    assert [str(e) for e in results] == [
        f"cannot write archive object d/{n}.eml (OSError): [Errno 5] Input/output error" for n in "abc"
    ]
    assert all(isinstance(e, ArchiveError) and not e.exists for e in results)
    assert _names(tmp_path / "s") == []  # neither the names nor their temp files


def _raise(code: int) -> None:
    raise OSError(code, os.strerror(code))


def test_syncfs_reports_the_kernel_error():
    if _durable._syncfs is None:
        pytest.skip("no syncfs on this kernel")
    with pytest.raises(OSError, match=r"\[Errno 9\] Bad file descriptor"):
        _durable._syncfs(-1)


def test_a_directory_entry_error_fails_the_names_made_in_that_step(tmp_path, monkeypatch):
    # As above, EIO on the directory sync is simulated: the files are in place but not known durable.
    def broken(paths):
        list(paths)
        _raise(errno.EIO)

    with monkeypatch.context() as patched:
        patched.setattr(_durable, "_barrier_dirs", broken)
        store = ObjectStore(f"file://{tmp_path}/s")
        results = store.write_once_many([("d/a.eml", b"a")])
    assert [str(e) for e in results] == ["cannot write archive object d/a.eml (OSError): [Errno 5] Input/output error"]
    assert _names(tmp_path / "s") == ["d/a.eml"]  # no temp file
    [again] = store.write_once_many([("d/a.eml", b"a")])  # the next try is told, and the bytes stay
    assert again is not None and again.exists and (tmp_path / "s/d/a.eml").read_bytes() == b"a"


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def archive_at(request, tmp_path):
    """A new archive on the local disk, or on SeaweedFS's S3 gateway (where the index entry is a copy)."""
    if request.param == "file":
        return MailArchive(f"file://{tmp_path}/a")
    conn = request.getfixturevalue("s3_conn")
    return MailArchive(f"s3://mail-test/adopt-{secrets.token_hex(4)}", conn)


def _copy(data: bytes) -> Outgoing:
    return Outgoing("airflow@example.com", ("r1@example.com",), data, "<fixed.1@example.com>")


def test_a_staged_copy_without_index_entry_is_adopted_with_its_own_bytes(archive_at):
    [first] = archive_at.stage_many([_copy(b"Subject: first\r\n\r\nthe bytes of the first try\r\n")])
    archive_at.delete(f"index/{first.key[:2]}/{first.key}.json")  # the index write never happened

    [adopted] = archive_at.stage_many([_copy(b"Subject: second\r\n\r\nwhat this try composed\r\n")])

    assert adopted.staged_earlier and adopted.key == first.key and adopted.meta == first.meta
    found = archive_at.lookup(first.key)  # the index now says what the archive holds, on either store
    assert found is not None and found.meta == first.meta and not found.delivered
    assert archive_at.read_message(found) == b"Subject: first\r\n\r\nthe bytes of the first try\r\n"


def test_a_committed_copy_is_never_adopted(tmp_path):
    archive = MailArchive(f"file://{tmp_path}/a")
    first = archive.stage(_copy(b"Subject: first\r\n\r\nsent\r\n"))
    archive.commit(first, ArchiveStatus.SENT)
    archive.delete(f"index/{first.key[:2]}/{first.key}.json")

    [result] = archive.stage_many([_copy(b"Subject: second\r\n\r\nagain\r\n")])

    assert isinstance(result, ArchiveError) and result.exists
    assert str(result) == f"archive object {first.prefix}.eml already exists; records are never overwritten."


def test_a_record_whose_airflow_ids_read_prefix_is_found(tmp_path):
    archive = MailArchive(f"file://{tmp_path}/a")
    staged = archive.stage(_copy(b"Subject: x\r\n\r\ny\r\n"), origin={"dag_id": "prefix", "run_id": '"prefix"'})
    found = archive.lookup(staged.key)
    assert found is not None and found.meta == staged.meta


def test_a_copy_staged_without_its_index_entry_is_sent_by_the_next_try(mail_env, tmp_path, monkeypatch):
    archive = MailArchive(f"file://{tmp_path}/a")
    channel = MailChannel.for_conn()

    def index_write_fails(self, items):  # a full disk when the index entry is written (simulated)
        return [ArchiveError("cannot write archive object index (OSError): [Errno 28] No space left on device")]

    with monkeypatch.context() as patched:
        patched.setattr(MailArchive, "copy_once_many", index_write_fails)
        with pytest.raises(ArchiveError, match=r"\[Errno 28\] No space left on device"):
            send_mail(numbered_request(1), channel=channel, archive=archive)
    assert mail_env.smtp.messages == []  # nothing goes out without its record
    [staged] = list((tmp_path / "a").rglob("*.eml"))
    assert list((tmp_path / "a").rglob("index/*/*")) == []
    start = int(time.time())
    while int(time.time()) == start:  # a new Date: what this try composes differs from what the first staged
        time.sleep(0.05)
    fresh, _ = compose(numbered_request(1))
    assert fresh["Date"].encode() not in staged.read_bytes()

    result = send_mail(numbered_request(1), channel=channel, archive=archive)

    [received] = mail_env.smtp.messages
    assert received.data == staged.read_bytes()  # the bytes the first try archived, sent once
    key = staged.name.removesuffix(".eml")
    record = archive.lookup(key)
    assert record is not None and record.committed and record.status == "sent"
    assert result.to_xcom()["message_ids"] == [record.meta.message_id]
    send_mail(numbered_request(1), channel=channel, archive=archive)
    assert len(mail_env.smtp.messages) == 1  # and never again
