"""The archive (store, records), backup and restore against the local file system, SeaweedFS and OpenBao Transit."""

from __future__ import annotations

import json
import mailbox
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airflow_secure_mail.archive.bundle import backup, verify_bundle
from airflow_secure_mail.archive.crypto import TransitSealer
from airflow_secure_mail.archive.restore import RestoreSelection, export, select
from airflow_secure_mail.archive.store import MailArchive, ObjectStore
from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError, DeliveryError
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import aresend, send_mail
from tests.helpers import audit_paths, numbered_request, window

BODY = "Confidential payroll summary: total 1,234,567 EUR\n"


def _request(n: int = 0, **kw) -> MailRequest:
    return numbered_request(n, text=BODY, **kw)


def resend(found, *, resent_from, resend_to=None, archive=None, seed=None, policy=None):
    """What MailRestoreOperator(mode='resend') runs (``pipeline.aresend``), with the test's choices."""
    from airflow_secure_mail._sync import run_sync

    return run_sync(aresend(found, channel=MailChannel.for_conn(), archive=archive, resent_from=resent_from,
                            resend_to=resend_to, seed=seed, policy=policy))  # fmt: skip


def _send(archive, n=0, **kw):
    return send_mail(
        _request(n),
        channel=MailChannel.for_conn(),
        archive=archive,
        origin={"dag_id": "dag", "task_id": "task", "run_id": "run", "map_index": -1, "try_number": 1},
        **kw,
    )


def test_restore_is_byte_identical_to_what_the_server_received(mail_env, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/archive")
    for n in range(3):
        _send(archive, n)
    restored = select(archive, RestoreSelection(*window()))
    received = {tuple(m.rcpt_tos): m.data for m in mail_env.smtp.messages}
    assert len(restored) == 3
    for item in restored:
        assert item.data == received[item.record.meta.recipients]
    meta = restored[0].record.meta
    assert meta.status == "sent" and meta.tls is not None and meta.tls["version"] in ("TLSv1.2", "TLSv1.3")
    assert meta.airflow["dag_id"] == "dag" and meta.receipt is not None and meta.receipt["accepted"]
    files = list(Path(tmp_path, "archive", "messages").rglob("*.eml"))
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)


def test_s3_archive_encrypted_at_rest_restores_identically(mail_env, s3_conn, seaweed, transit_key):
    archive = MailArchive("s3://mail-test/archive-enc", conn_id=s3_conn, transit_key=transit_key)
    result = _send(archive, 7)
    [received] = mail_env.smtp.messages
    [item] = select(archive, RestoreSelection(*window(), recipient="r7@example.com"))
    assert item.data == received.data
    key = result.to_xcom()["archive_keys"][0]
    stored = seaweed.client().get_object(Bucket="mail-test", Key=f"archive-enc/{key}.eml")["Body"].read()
    metadata = seaweed.client().get_object(Bucket="mail-test", Key=f"archive-enc/{key}.json")["Body"].read()
    assert b"payroll" not in stored and b"payroll" not in metadata
    assert mail_env.password.encode() not in metadata and mail_env.bao.root_token.encode() not in metadata
    meta = json.loads(metadata)
    assert meta["encryption"]["algorithm"] == "AES-256-GCM" and meta["encryption"]["wrapped_key"].startswith("vault:v")
    assert meta["content_sha256"] is None


def test_records_stay_readable_after_transit_key_rotation(mail_env, tmp_path, transit_key):
    archive = MailArchive(f"file://{tmp_path}/a", transit_key=transit_key)
    _send(archive, 1)
    mail_env.bao.client().secrets.transit.rotate_key(name=transit_key)
    TransitSealer.forget_keys()
    _send(archive, 2)
    versions = {r.record.meta.encryption["key_version"] for r in select(archive, RestoreSelection(*window()))}  # type: ignore[index]
    assert versions == {"v1", "v2"}


def test_flipped_byte_in_stored_message_is_detected(mail_env, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/a")
    _send(archive, 1)
    [eml] = list(Path(tmp_path, "a", "messages").rglob("*.eml"))
    data = bytearray(eml.read_bytes())
    data[len(data) // 2] ^= 0x01
    eml.chmod(0o600)
    eml.write_bytes(bytes(data))
    with pytest.raises(ArchiveIntegrityError, match=eml.stem) as info:
        select(archive, RestoreSelection(*window()))
    assert eml.stem in info.value.key


def test_flipped_byte_in_encrypted_message_fails_aead(mail_env, tmp_path, transit_key):
    archive = MailArchive(f"file://{tmp_path}/a", transit_key=transit_key)
    _send(archive, 1)
    [eml] = list(Path(tmp_path, "a", "messages").rglob("*.eml"))
    [meta_file] = [p for p in eml.parent.glob(f"{eml.stem}.json")]
    data = bytearray(eml.read_bytes())
    data[-5] ^= 0x01
    eml.write_bytes(bytes(data))
    meta = json.loads(meta_file.read_bytes())
    import hashlib

    meta["sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # an attacker who also fixes the hash
    meta_file.write_bytes(json.dumps(meta).encode())
    with pytest.raises(ArchiveIntegrityError, match="AES-GCM authentication"):
        select(archive, RestoreSelection(*window()))


def test_write_once_refuses_a_second_write(tmp_path):
    store = ObjectStore(f"file://{tmp_path}/s")
    store.write_once("x/a.eml", b"first")
    with pytest.raises(ArchiveError, match="never overwritten"):
        store.write_once("x/a.eml", b"second")
    assert Path(tmp_path, "s", "x", "a.eml").read_bytes() == b"first"


def test_write_once_on_s3_uses_conditional_put(s3_conn, seaweed):
    store = ObjectStore("s3://mail-test/once", s3_conn)
    name = f"{secrets.token_hex(4)}.eml"
    store.write_once(name, b"first")
    with pytest.raises(ArchiveError, match="never overwritten"):
        store.write_once(name, b"second")
    assert seaweed.client().get_object(Bucket="mail-test", Key=f"once/{name}")["Body"].read() == b"first"


def test_retry_after_committed_send_sends_nothing_more(mail_env, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/a")
    first = _send(archive, 3)
    second = _send(archive, 3)
    assert len(mail_env.smtp.messages) == 1
    assert second.already_sent == 1
    assert second.to_xcom()["message_ids"] == first.to_xcom()["message_ids"]


def test_failure_after_staging_leaves_pending_that_a_later_run_completes(mail_env, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/a")
    mail_env.smtp.script.data_replies = ["554 5.7.1 rejected for now"]
    with pytest.raises(DeliveryError, match=r"answered 554 '5.7.1 rejected for now' at DATA"):
        _send(archive, 4)
    [rejected] = [p for p in Path(tmp_path, "a").rglob("*.failed-1.json")]
    key = rejected.name.split(".")[0]
    record = archive.lookup(key)
    assert record.status == "pending"
    staged = archive.read_message(record)
    _send(archive, 4)
    [received] = mail_env.smtp.messages
    assert received.data == staged  # the staged bytes, not a re-composed message
    assert archive.lookup(key).status == "sent"


def _unreachable_s3(monkeypatch, conn_id: str) -> str:
    """An aws connection to a loopback port nothing listens on (discard, 9): the object store is down."""
    down = {
        "conn_type": "aws",
        "login": "x",
        "password": "y",
        "extra": {
            "endpoint_url": "http://127.0.0.1:9",
            "region_name": "us-east-1",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
        },
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(down))
    return conn_id


def test_staging_failure_sends_nothing_by_default(mail_env, monkeypatch):
    _unreachable_s3(monkeypatch, "aws_down")
    archive = MailArchive("s3://mail-test/archive", conn_id="aws_down")
    with pytest.raises(ArchiveError, match=r"cannot (read|write) archive object"):
        _send(archive, 5)
    assert mail_env.smtp.connections == 0


def test_object_store_outage_loses_nothing_and_duplicates_nothing(mail_env, monkeypatch, tmp_path):
    """Our own SeaweedFS, stopped mid-way and started again on the same data: every message once."""
    from airflow_secure_mail.testing.seaweedfs import SeaweedFsS3

    store = SeaweedFsS3(data_dir=str(tmp_path / "weed")).start()
    try:
        store.create_bucket("outage")
        monkeypatch.setenv("AIRFLOW_CONN_AWS_OUTAGE", json.dumps(store.aws_connection()))
        _send(MailArchive("s3://outage/a", conn_id="aws_outage"), 1)
    finally:
        store.stop()
    with pytest.raises(
        ArchiveError, match=r"cannot (read|write) archive object"
    ):  # the store is down: message 2 is not sent without its record
        _send(MailArchive("s3://outage/a", conn_id="aws_outage"), 2)
    assert [m.rcpt_tos for m in mail_env.smtp.messages] == [["r1@example.com"]]
    store.start()  # same data, new port
    try:
        # a new conn id: Airflow caches the filesystem (and its old port) per connection id
        monkeypatch.setenv("AIRFLOW_CONN_AWS_OUTAGE_BACK", json.dumps(store.aws_connection()))
        for n in (1, 2, 2):  # the task retries of 1 and 2, then 2 again
            _send(MailArchive("s3://outage/a", conn_id="aws_outage_back"), n)
    finally:
        store.stop()
    assert sorted(m.rcpt_tos[0] for m in mail_env.smtp.messages) == ["r1@example.com", "r2@example.com"]


def test_thousand_encrypted_records_cost_a_handful_of_vault_calls(bao, tmp_path, transit_key, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", json.dumps(bao.connection_uri()))
    before = len(bao.audit_requests())
    archive = MailArchive(f"file://{tmp_path}/bulk", transit_key=transit_key)
    for n in range(1000):
        item = Outgoing(
            "airflow@example.com", ("x@example.com",), b"Subject: bulk\r\n\r\nbody %d\r\n" % n, f"<{n}@example.com>"
        )
        archive.stage(item)
    calls = audit_paths(bao, before)
    assert 1 <= len([p for p in calls if p.startswith("transit/")]) <= 5, calls
    assert len(calls) <= 10


# -- backup and restore -------------------------------------------------------------------------


def test_backup_bundle_is_verified_idempotent_and_applies_retention(mail_env, tmp_path, transit_key):
    archive = MailArchive(f"file://{tmp_path}/a", transit_key=transit_key)
    for n in range(3):
        _send(archive, n)
    target = ObjectStore(f"file://{tmp_path}/backup")
    start, end = window()
    lines: list[str] = []
    first = backup(archive, target, start, end, log_fn=lines.append)
    second = backup(archive, target, start, end)
    assert first.created and not second.created and first.bundle == second.bundle
    assert len(list(Path(tmp_path, "backup", "bundles").iterdir())) == 2  # one bundle, one manifest
    assert any("verified: 3/3 (100%)" in line for line in lines)
    manifest = json.loads(Path(tmp_path, "backup", first.manifest).read_bytes())
    assert manifest["count"] == 3 and b"payroll" not in Path(tmp_path, "backup", first.bundle).read_bytes()
    kept = backup(archive, target, start, end, retention_days=30)
    assert kept.removed == 0
    gone = backup(archive, target, start, end, retention_days=0, now=end + timedelta(days=1))
    assert gone.removed == 3 and not list(Path(tmp_path, "a", "messages").rglob("*.eml"))
    restored = select(archive, RestoreSelection(start, end), bundle_location=f"file://{tmp_path}/backup")
    received = {tuple(m.rcpt_tos): m.data for m in mail_env.smtp.messages}
    assert sorted(r.data for r in restored) == sorted(received.values())


def test_flipped_byte_in_bundle_is_detected(mail_env, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/a")
    _send(archive, 1)
    target = ObjectStore(f"file://{tmp_path}/backup")
    summary = backup(archive, target, *window())
    bundle = Path(tmp_path, "backup", summary.bundle)
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle.write_bytes(bytes(data))
    with pytest.raises(ArchiveIntegrityError, match=summary.bundle):
        verify_bundle(archive, target, summary.manifest)
    with pytest.raises(ArchiveIntegrityError, match="does not match its SHA-256: it was altered"):
        select(archive, RestoreSelection(*window()), bundle_location=f"file://{tmp_path}/backup")
    later = datetime.now(UTC) + timedelta(days=2)  # a restore of another interval never opens this bundle
    assert (
        select(archive, RestoreSelection(later, later + timedelta(days=1)), bundle_location=f"file://{tmp_path}/backup")
        == []
    )


def test_export_eml_and_mbox(mail_env, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/a")
    _send(archive, 1)
    _send(archive, 2)
    found = select(archive, RestoreSelection(*window(), message_id=None, recipient="r2@example.com"))
    assert len(found) == 1
    export(found, f"file://{tmp_path}/out")
    assert Path(tmp_path, "out", f"{found[0].record.key}.eml").read_bytes() == found[0].data
    everything = select(archive, RestoreSelection(*window()))
    export(everything, f"file://{tmp_path}/mbox", fmt="mbox")
    box = mailbox.mbox(str(Path(tmp_path, "mbox", "restored.mbox")))
    assert sorted(m["To"] for m in box) == ["r1@example.com", "r2@example.com"]


def test_resend_prepends_resent_headers_and_keeps_bytes_verbatim(mail_env, tmp_path):
    archive = MailArchive(f"file://{tmp_path}/a")
    _send(archive, 1)
    [original] = mail_env.smtp.messages
    found = select(archive, RestoreSelection(*window()))
    resend(found, resent_from="archive@example.com", resend_to=["auditor@example.com"])
    resent = mail_env.smtp.messages[1]
    assert resent.rcpt_tos == ["auditor@example.com"]
    head, _, rest = resent.data.partition(b"Resent-Message-ID: ")
    assert head.startswith(b"Resent-Date: ") and b"Resent-From: archive@example.com\r\n" in head
    assert b"Resent-To: auditor@example.com\r\n" in head
    assert rest.split(b"\r\n", 1)[1] == original.data


def test_resend_to_an_internal_relay_honours_allow_special_use_domains(mail_env, tmp_path):
    from airflow_secure_mail.errors import PolicyViolation
    from airflow_secure_mail.mail.screen import MailPolicy

    archive = MailArchive(f"file://{tmp_path}/a")
    _send(archive, 1)
    found = select(archive, RestoreSelection(*window()))
    with pytest.raises(PolicyViolation, match="special-use"):
        resend(found, resent_from="archive@airflow.internal", resend_to=["audit@mail.internal"])
    assert len(mail_env.smtp.messages) == 1
    resend(found, resent_from="archive@airflow.internal", resend_to=["audit@mail.internal"],
           policy=MailPolicy(allow_special_use_domains=True))  # fmt: skip
    resent = mail_env.smtp.messages[1]
    assert resent.mail_from == "archive@airflow.internal" and resent.rcpt_tos == ["audit@mail.internal"]


def test_resend_of_a_copy_archived_with_lf_line_endings_sends_it_with_crlf(mail_env, tmp_path):
    """Earlier releases archived LF-only bytes as given (the SMTP client added the CRs on the wire)."""
    import dataclasses

    archive = MailArchive(f"file://{tmp_path}/a")
    _send(archive, 1)
    [found] = select(archive, RestoreSelection(*window()))
    crlf = found.data
    resend([dataclasses.replace(found, data=crlf.replace(b"\r\n", b"\n"))], resent_from="archive@example.com",
           resend_to=["auditor@example.com"])  # fmt: skip
    resent = mail_env.smtp.messages[1]
    assert resent.data.startswith(b"Resent-Date: ") and resent.data.endswith(crlf)


def test_resend_refuses_injected_addresses(mail_env, tmp_path):
    from airflow_secure_mail.errors import PolicyViolation

    archive = MailArchive(f"file://{tmp_path}/a")
    _send(archive, 1)
    with pytest.raises(PolicyViolation, match="resend_to"):
        resend(
            select(archive, RestoreSelection(*window())),
            resent_from="a@example.com",
            resend_to=["x@example.com\r\nBcc: evil@example.com"],
        )
    assert len(mail_env.smtp.messages) == 1


def test_resend_is_archived_as_a_resend_and_a_retry_sends_nothing_twice(mail_env, tmp_path):
    from airflow_secure_mail.archive.record import ArchiveStatus

    archive = MailArchive(f"file://{tmp_path}/a")
    _send(archive, 1)
    [original] = select(archive, RestoreSelection(*window()))
    for _ in range(2):  # the restore task and its retry: same seed
        [resent_id] = resend([original], resent_from="archive@example.com", resend_to=["auditor@example.com"],
                             archive=archive, seed="restore_dag|resend|run1|-1")  # fmt: skip
    assert [m.rcpt_tos for m in mail_env.smtp.messages] == [["r1@example.com"], ["auditor@example.com"]]
    records = {r.record.meta.message_id: r.record for r in select(archive, RestoreSelection(*window()))}
    record = records[resent_id]
    assert record.status is ArchiveStatus.SENT
    assert record.meta.resend_of == original.record.meta.message_id
    assert archive.read_message(record) == mail_env.smtp.messages[1].data


def test_resend_is_screened_like_any_send(mail_env, tmp_path):
    from airflow_secure_mail.errors import PolicyViolation
    from airflow_secure_mail.mail.screen import MailPolicy

    archive = MailArchive(f"file://{tmp_path}/a")
    _send(archive, 1)
    found = select(archive, RestoreSelection(*window()))
    policy = MailPolicy(allowed_recipient_domains=("example.com",))
    with pytest.raises(PolicyViolation, match="outside allowed_recipient_domains") as info:
        resend(found, resent_from="archive@example.com", resend_to=["someone@elsewhere.org"], policy=policy)
    assert info.value.rule == "allowed_recipient_domains"
    assert len(mail_env.smtp.messages) == 1  # only the original


def test_backup_and_restore_dag(mail_env, airflow_db, tmp_path, monkeypatch):
    from tests.conftest import load_dag

    monkeypatch.setenv("SECURE_MAIL_ARCHIVE", f"file://{tmp_path}/archive")
    monkeypatch.setenv("SECURE_MAIL_BACKUP", f"file://{tmp_path}/backup")
    monkeypatch.setenv("SECURE_MAIL_RESTORE_TO", f"file://{tmp_path}/restored")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE_KEY", "")  # this archive is not sealed (the example's default is)
    archive = MailArchive(f"file://{tmp_path}/archive")
    _send(archive, 1)
    dag = load_dag("secure_mail_backup_restore.py", "secure_mail_backup_restore")
    start, end = window()
    run = dag.test(run_conf={"start": start.isoformat(), "end": end.isoformat()})
    assert run.state == "success"
    [restored] = list(Path(tmp_path, "restored").glob("*.eml"))
    assert restored.read_bytes() == mail_env.smtp.messages[0].data
    assert list(Path(tmp_path, "backup", "bundles").glob("*.manifest.json"))


def test_on_error_send_prefers_delivery_over_the_record(mail_env, monkeypatch):
    conn_id = _unreachable_s3(monkeypatch, "aws_down2")
    result = _send(MailArchive("s3://mail-test/archive", conn_id=conn_id, on_error="send"), 6)
    assert len(mail_env.smtp.messages) == 1
    assert result.to_xcom()["archive_keys"] == []


def test_write_once_or_same_accepts_a_re_run_and_refuses_different_bytes(tmp_path):
    from airflow_secure_mail.archive.store import ObjectStore

    store = ObjectStore(f"file://{tmp_path}/out")
    assert store.write_once_or_same("a.eml", b"same bytes") is True
    assert store.write_once_or_same("a.eml", b"same bytes") is False
    with pytest.raises(ArchiveError, match="a.eml already exists; records are never overwritten"):
        store.write_once_or_same("a.eml", b"other bytes")
    assert (tmp_path / "out" / "a.eml").read_bytes() == b"same bytes"


def test_resend_to_the_original_envelope_names_no_recipient(mail_env, tmp_path):
    """The original envelope may hold Bcc recipients: without resend_to there is no Resent-To line at all."""
    archive = MailArchive(f"file://{tmp_path}/a")
    send_mail(_request(1, bcc=("secret.auditor@example.com",)), channel=MailChannel.for_conn(), archive=archive)
    found = select(archive, RestoreSelection(*window()))
    resend(found, resent_from="archive@example.com")
    resent = mail_env.smtp.messages[-1]
    assert sorted(resent.rcpt_tos) == ["r1@example.com", "secret.auditor@example.com"]
    head = resent.data.split(b"\r\n\r\n", 1)[0]
    assert b"Resent-From: archive@example.com\r\n" in head and b"Resent-To" not in head
    assert b"secret.auditor" not in resent.data


def test_a_record_committed_by_an_older_release_as_unknown_is_never_sent_again(mail_env, tmp_path):
    """Before this release a lost DATA reply was committed as final "unknown" (<key>.json): it stays final."""
    import dataclasses

    from airflow_secure_mail.archive.record import ArchiveStatus

    archive = MailArchive(f"file://{tmp_path}/a")
    mail_env.smtp.script.data_replies = ["554 5.7.1 rejected for now"]
    with pytest.raises(DeliveryError, match="answered 554"):
        _send(archive, 8)
    [index] = list(Path(tmp_path, "a", "index").rglob("*.json"))
    pending = archive.lookup(index.stem)
    assert pending is not None and not pending.delivered
    legacy = dataclasses.replace(pending.meta, status=ArchiveStatus.UNKNOWN, committed_at=pending.meta.staged_at)
    archive.write_once(f"{pending.prefix}.json", legacy.to_json())
    again = _send(archive, 8)
    assert again.already_sent == 1 and mail_env.smtp.messages == []
