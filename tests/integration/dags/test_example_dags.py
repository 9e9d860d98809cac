"""Example DAGs triggered as the CLI, REST API and UI trigger them in Airflow 3: without a logical date."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from airflow_secure_mail.testing.keys import seed_vault_keys
from airflow_secure_mail.testing.openbao import OpenBaoDevServer
from tests.conftest import ROOT, load_dag
from tests.helpers import create_transit_key


def _subjects(mail_env) -> list[str]:
    return [str(message_from_bytes(m.data, policy=policy.default)["Subject"]) for m in mail_env.smtp.messages]


def _run_without_logical_date(filename: str, dag_id: str):  # type: ignore[no-untyped-def]
    run = load_dag(filename, dag_id).test(logical_date=None)
    assert run.logical_date is None
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    return run


def test_per_recipient_dag_runs_without_logical_date(mail_env, airflow_db, monkeypatch):
    monkeypatch.setenv("SECURE_MAIL_TEAM", "ana@example.com,bo@example.com")
    run = _run_without_logical_date("secure_mail_per_recipient.py", "secure_mail_per_recipient")
    day = run.run_after.strftime("%Y-%m-%d")
    assert _subjects(mail_env) == [f"Your pipeline summary for {day}"] * 2


def test_weekly_report_dag_runs_without_logical_date(mail_env, airflow_db, monkeypatch, tmp_path):
    monkeypatch.setenv("SECURE_MAIL_REPORT_BASE", f"file://{tmp_path}/reports")
    run = _run_without_logical_date("secure_mail_weekly_report.py", "secure_mail_weekly_report")
    day = run.run_after.strftime("%Y-%m-%d")
    assert _subjects(mail_env) == [f"Weekly sales report {day}"]
    assert (tmp_path / "reports" / f"weekly-{day}.csv").exists()


def test_encrypted_report_dag_runs_without_logical_date(mail_env, airflow_db, monkeypatch, tmp_path):
    seed_vault_keys(mail_env.bao.client(), "board@example.com", "airflow@example.com")
    create_transit_key(mail_env.bao, "mail-archive-nold")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE", f"file://{tmp_path}/archive")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE_KEY", "mail-archive-nold")
    run = _run_without_logical_date("secure_mail_encrypted_report.py", "secure_mail_encrypted_report")
    assert len(mail_env.smtp.messages) == 2
    assert f"Board pack {run.run_after:%Y-%m-%d} (S/MIME)" in _subjects(mail_env)  # PGP's subject is protected


# -- every example after the documented setup command, with no setting ---------------------------------------

_SETTINGS = re.compile(r"\b((?:AIRFLOW_)?SECURE_MAIL_[A-Z_]+)\b")


def _documented_setup_command() -> list[str]:
    text = (ROOT / "docs" / "examples.md").read_text()
    block = re.search(r"<!-- setup-command -->\s*```bash\n(.*?)\n\s*```", text, re.DOTALL)
    assert block is not None, "docs/examples.md lost its marked setup command"
    argv = shlex.split(block.group(1))
    assert argv[0] == "airflow-secure-mail"
    return argv[1:]


@pytest.fixture
def fresh_vault(mail_env, monkeypatch) -> Iterator[OpenBaoDevServer]:
    """A new OpenBao as a team's would be (KV v2 at secret/, no Transit), holding only the SMTP secret."""
    from airflow_secure_mail.archive.crypto import TransitSealer
    from airflow_secure_mail.vault import clear_cache

    server = OpenBaoDevServer().start()
    server.client().sys.disable_secrets_engine("transit")  # the helper enables it; a team's Vault may not have it
    server.client().secrets.kv.v2.create_or_update_secret(
        path=mail_env.secret_path, secret={"username": "airflow", "password": mail_env.password}
    )
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", json.dumps(server.connection_uri()))
    clear_cache()
    TransitSealer.forget_keys()
    yield server
    clear_cache()
    TransitSealer.forget_keys()
    server.stop()


@pytest.fixture
def no_settings(monkeypatch) -> Iterator[Path]:
    """No SECURE_MAIL_* variable set; the examples' local folder ($AIRFLOW_HOME/secure-mail) starts empty."""
    for name in {m for p in (ROOT / "dags").glob("*.py") for m in _SETTINGS.findall(p.read_text())}:
        monkeypatch.delenv(name, raising=False)
    local = Path(os.environ["AIRFLOW_HOME"], "secure-mail")
    shutil.rmtree(local, ignore_errors=True)
    yield local
    shutil.rmtree(local, ignore_errors=True)


def test_encrypted_report_then_backup_restore_succeed_after_the_setup_command_with_no_setting(
    mail_env, airflow_db, fresh_vault, no_settings, monkeypatch, capsys
):
    """Issue 21: the encrypted report failed three times on a fresh Vault, then the backup could not read it."""
    from airflow_secure_mail.cli import main

    monkeypatch.setenv("VAULT_TOKEN", fresh_vault.root_token)  # an administrator runs setup
    assert main(_documented_setup_command()) == 0, capsys.readouterr().out
    monkeypatch.delenv("VAULT_TOKEN")

    report = _run_without_logical_date("secure_mail_encrypted_report.py", "secure_mail_encrypted_report")
    assert f"Board pack {report.run_after:%Y-%m-%d} (S/MIME)" in _subjects(mail_env)
    sent = [m.data for m in mail_env.smtp.messages]
    assert len(sent) == 2 and all(b"12.4M" not in data for data in sent)
    stored = sorted((no_settings / "archive" / "messages").rglob("*.eml"))
    assert len(stored) == 2 and all(p.read_bytes().startswith(b"ASM-AESGCM-1\n") for p in stored)  # sealed

    _run_without_logical_date("secure_mail_backup_restore.py", "secure_mail_backup_restore")
    restored = sorted((no_settings / "restored").glob("*.eml"))
    assert sorted(p.read_bytes() for p in restored) == sorted(sent)
    assert list((no_settings / "backup" / "bundles").glob("*.manifest.json"))


def test_archive_key_empty_turns_sealing_off_for_writer_and_backup(mail_env, airflow_db, no_settings, monkeypatch):
    """SECURE_MAIL_ARCHIVE_KEY="" everywhere: records and bundles unsealed, no Transit key needed."""
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE_KEY", "")
    seed_vault_keys(mail_env.bao.client(), "board@example.com", "airflow@example.com")
    _run_without_logical_date("secure_mail_encrypted_report.py", "secure_mail_encrypted_report")
    stored = sorted((no_settings / "archive" / "messages").rglob("*.eml"))
    assert sorted(p.read_bytes() for p in stored) == sorted(m.data for m in mail_env.smtp.messages)
    _run_without_logical_date("secure_mail_backup_restore.py", "secure_mail_backup_restore")
    [manifest] = list((no_settings / "backup" / "bundles").glob("*.manifest.json"))
    assert json.loads(manifest.read_bytes())["encryption"] is None
    assert len(list((no_settings / "restored").glob("*.eml"))) == 2


def _dags() -> dict[str, Any]:
    import runpy

    found = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        for value in runpy.run_path(str(path)).values():
            if hasattr(value, "dag_id") and hasattr(value, "test"):
                found[value.dag_id] = value
    return found


def test_only_the_backup_and_the_flush_have_a_schedule_and_the_flush_starts_unpaused(airflow_db):
    """Unpausing a mail-sending example sends nothing; the flush must run for digests to go out."""
    dags = _dags()
    scheduled = {dag_id: dag.schedule for dag_id, dag in dags.items() if dag.schedule is not None}
    assert scheduled == {"secure_mail_backup_restore": "@daily", "secure_mail_alert_digest_flush": "*/5 * * * *"}
    unpaused = sorted(dag_id for dag_id, dag in dags.items() if dag.is_paused_upon_creation is False)
    assert unpaused == ["secure_mail_alert_digest_flush"]


# -- the alert-path examples (issue 22): what they hand to Airflow, checked without running them -------------


def test_deadline_example_hands_the_triggerer_json_references_only(monkeypatch):
    """The callback's kwargs are stored in the metadata database: addresses, a location, ids, a key name."""
    from airflow.sdk import AsyncCallback, DeadlineReference

    monkeypatch.setenv("SECURE_MAIL_DEADLINE_SECONDS", "12")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE", "s3://mail-bucket/archive")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE_CONN", "aws_default")
    (alert,) = load_dag("secure_mail_deadline.py", "secure_mail_deadline").deadline
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "airflow_secure_mail.notifications.email.SecureEmailNotifier"
    assert alert.callback.kwargs == {
        "to": "oncall@example.com",
        "archive": "s3://mail-bucket/archive",
        "archive_conn_id": "aws_default",
        "archive_transit_key": "mail-archive",
    }
    assert json.loads(json.dumps(alert.callback.kwargs)) == alert.callback.kwargs
    assert alert.interval.total_seconds() == 12
    assert type(alert.reference) is type(DeadlineReference.DAGRUN_QUEUED_AT)


def test_approval_example_mails_its_request_through_our_notifier(monkeypatch):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from airflow_secure_mail import SecureEmailNotifier

    monkeypatch.setenv("SECURE_MAIL_APPROVERS", "a@example.com,b@example.com")
    dag = load_dag("secure_mail_approval.py", "secure_mail_approval")
    approve = dag.get_task("approve_release")
    assert isinstance(approve, ApprovalOperator)
    (notifier,) = approve.notifiers
    assert isinstance(notifier, SecureEmailNotifier) and notifier.to == "a@example.com,b@example.com"
    assert approve.defaults == ["Reject"] and approve.response_timeout is not None
    assert [t.task_id for t in approve.downstream_list] == ["publish"]
