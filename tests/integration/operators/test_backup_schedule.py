"""Scheduled backups (``@daily`` = CronTriggerTimetable: a zero-length data interval) without any run conf."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from airflow_secure_mail.archive.store import MailArchive
from tests.conftest import load_dag
from tests.integration.archive.test_store import _send


def _manifests(backup_dir: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_bytes()) for p in sorted((backup_dir / "bundles").glob("*.manifest.json"))}


def _keys(manifest: dict) -> set[str]:
    return {r["key"] for r in manifest["records"]}


def test_cron_runs_back_up_everything_since_the_last_bundle_once(mail_env, airflow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE", f"file://{tmp_path}/archive")
    monkeypatch.setenv("SECURE_MAIL_BACKUP", f"file://{tmp_path}/backup")
    monkeypatch.setenv("SECURE_MAIL_RESTORE_TO", f"file://{tmp_path}/restored")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE_KEY", "")  # this archive is not sealed (the example's default is)
    archive = MailArchive(f"file://{tmp_path}/archive")
    dag = load_dag("secure_mail_backup_restore.py", "secure_mail_backup_restore")
    _send(archive, 1)
    _send(archive, 2)
    first_tick = datetime.now(UTC)
    _send(archive, 3)
    second_tick = datetime.now(UTC)

    first = dag.test(logical_date=first_tick)
    assert first.data_interval_start == first.data_interval_end  # what the scheduler gives a cron run
    assert first.state == "success"
    assert len(list(Path(tmp_path, "restored").glob("*.eml"))) == 2  # the restore took what the backup took
    second = dag.test(logical_date=second_tick)
    assert second.state == "success"
    rerun = dag.test(logical_date=second_tick)  # a cleared run: same interval, finds its bundle
    assert rerun.state == "success"
    assert rerun.get_task_instance("backup_archive").xcom_pull(task_ids="backup_archive")["created"] is False

    manifests = list(_manifests(Path(tmp_path, "backup")).values())
    assert len(manifests) == 2
    older, newer = sorted(manifests, key=lambda m: m["interval"][1])
    assert newer["interval"][0] == older["interval"][1] == first_tick.isoformat()  # they meet: no gap
    assert newer["interval"][1] == second_tick.isoformat()
    everything = {r.key for r in archive.iter_records(datetime(2000, 1, 1, tzinfo=UTC), second_tick)}
    assert len(everything) == 3
    assert _keys(older) | _keys(newer) == everything and not _keys(older) & _keys(newer)  # once each


def test_run_without_logical_date_backs_up_up_to_its_run_time(mail_env, airflow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE", f"file://{tmp_path}/archive")
    monkeypatch.setenv("SECURE_MAIL_BACKUP", f"file://{tmp_path}/backup")
    monkeypatch.setenv("SECURE_MAIL_RESTORE_TO", f"file://{tmp_path}/restored")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE_KEY", "")  # this archive is not sealed (the example's default is)
    _send(MailArchive(f"file://{tmp_path}/archive"), 1)
    run = load_dag("secure_mail_backup_restore.py", "secure_mail_backup_restore").test(logical_date=None)
    assert run.state == "success"
    [manifest] = _manifests(Path(tmp_path, "backup")).values()
    assert manifest["count"] == 1 and manifest["interval"][1] == run.run_after.isoformat()
    assert len(list(Path(tmp_path, "restored").glob("*.eml"))) == 1
