"""Example DAGs triggered as the CLI, REST API and UI trigger them in Airflow 3: without a logical date."""

from __future__ import annotations

from email import message_from_bytes, policy

from tests.conftest import load_dag
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
    from airflow_secure_mail.testing.keys import seed_vault_keys

    seed_vault_keys(mail_env.bao.client(), "board@example.com", "airflow@example.com")
    create_transit_key(mail_env.bao, "mail-archive-nold")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE", f"file://{tmp_path}/archive")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE_KEY", "mail-archive-nold")
    run = _run_without_logical_date("secure_mail_encrypted_report.py", "secure_mail_encrypted_report")
    assert len(mail_env.smtp.messages) == 2
    assert f"Board pack {run.run_after:%Y-%m-%d} (S/MIME)" in _subjects(mail_env)  # PGP's subject is protected
