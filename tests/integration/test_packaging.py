"""Provider registration and the cost of importing the package (Airflow parses DAG files constantly)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import create_transit_key, modules_loaded_by


def test_building_an_operator_loads_only_the_operator_module():
    """The import-cost row of the benchmark: Airflow's provider discovery has already loaded our (stdlib-only)
    provider info, so a DAG file with one SecureEmailOperator adds the operator module and nothing else."""
    loaded = modules_loaded_by(
        "from airflow_secure_mail import SecureEmailOperator\n"
        "SecureEmailOperator(task_id='t', to=['a@example.com'], subject='s', text_content='x')"
    )
    assert loaded == {"airflow_secure_mail.operators", "airflow_secure_mail.operators.email"}


def test_importing_public_api_loads_no_third_party_module():
    """Every public name (configuration objects included) costs only our own code and the stdlib: hvac,
    cryptography, fsspec, aiosmtplib, email-validator, jinja2... load when a task runs, never at DAG parse."""
    loaded = modules_loaded_by(
        "import airflow_secure_mail\nfor name in airflow_secure_mail.__all__: getattr(airflow_secure_mail, name)\n"
        "airflow_secure_mail.MailPolicy(allowed_recipient_domains=('example.com',))\n"
        "airflow_secure_mail.Protection(encrypt='pgp')\n"
        "airflow_secure_mail.MailArchive('file:///nonexistent/archive')"
    )
    outside = {m for m in loaded if m.split(".")[0] not in {*sys.stdlib_module_names, "airflow_secure_mail"}}
    assert outside <= {"airflow.sdk.bases.hook"}, outside  # the SDK's own hook base, for SecureSmtpHook


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
