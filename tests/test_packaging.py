"""Provider registration and the cost of importing the package (Airflow parses DAG files constantly)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import create_transit_key, modules_loaded_by


def test_importing_public_api_loads_no_heavy_dependency():
    loaded = modules_loaded_by(
        "from airflow_secure_mail import SecureEmailOperator, SecureEmailNotifier, MailArchive, Protection,"
        " MailPolicy, MailBackupOperator, MailRestoreOperator, SecureSmtpHook, TLSPolicy"
    )
    heavy = {"hvac", "cryptography", "gnupg", "fsspec", "s3fs", "aiosmtplib", "requests", "jinja2", "tenacity"}
    assert not (loaded & heavy), loaded & heavy


def test_provider_is_registered_with_airflow():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-secure-mail" in manager.providers
    hook = manager.hooks["securesmtp"]
    assert hook is not None and hook.hook_class_name == "airflow_secure_mail.hooks.smtp.SecureSmtpHook"
    assert "airflow_secure_mail.notifications.email.SecureEmailNotifier" in manager.notification


def test_airflow_providers_list_shows_it(airflow_db):
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "-o", "json"], capture_output=True, text=True, check=True
    ).stdout
    names = [p["package_name"] for p in json.loads(out[out.index("[") :])]
    assert "airflow-secure-mail" in names


def test_encrypted_report_dag_sends_only_ciphertext(mail_env, airflow_db, monkeypatch, tmp_path):
    """The example DAG end to end (keys generated here, stored in Vault as the README describes)."""
    from airflow_secure_mail.testing.keys import seed_vault_keys
    from tests.conftest import load_dag

    seed_vault_keys(mail_env.bao.client(), "board@example.com", "airflow@example.com")
    create_transit_key(mail_env.bao, "mail-archive-dag")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE", f"file://{tmp_path}/archive")
    monkeypatch.setenv("SECURE_MAIL_ARCHIVE_KEY", "mail-archive-dag")
    run = load_dag("secure_mail_encrypted_report.py", "secure_mail_encrypted_report").test()
    assert run.state == "success"
    kinds = sorted(b"multipart/encrypted" in m.data for m in mail_env.smtp.messages)
    assert kinds == [False, True] and all(b"12.4M" not in m.data for m in mail_env.smtp.messages)
    assert len(list((tmp_path / "archive" / "messages").rglob("*.eml"))) == 2
