"""The public surface: the names users import keep working across the issue-20 move, and stay few."""

from __future__ import annotations

import importlib
import sys

import pytest

import airflow_secure_mail

PUBLIC = {
    "AlertDigest", "AlertDigestFlushOperator", "ClamdScanner", "MailArchive", "MailBackupOperator", "MailChannel",
    "MailPolicy", "MailRestoreOperator", "Outgoing", "Protection", "SecureEmailNotifier", "SecureEmailOperator",
    "SecureMailError", "SecureSmtpHook", "SendReceipt", "SpamAssassinScanner", "TLSPolicy", "get_provider_info",
}  # fmt: skip


def test_exported_members():
    assert set(airflow_secure_mail.__all__) == PUBLIC | {"__version__"}


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("airflow_secure_mail.hooks.smtp", "SecureSmtpHook"),
        ("airflow_secure_mail.operators.email", "SecureEmailOperator"),
        ("airflow_secure_mail.notifications.email", "SecureEmailNotifier"),
        ("airflow_secure_mail.notifications.email", "alert_fields"),
        ("airflow_secure_mail.operators.backup", "MailRestoreOperator"),
        ("airflow_secure_mail.alerts.digest", "AlertDigest"),
        ("airflow_secure_mail.email_backend", "send_email"),
        ("airflow_secure_mail.pipeline", "send_mail"),
        ("airflow_secure_mail.vault", "vault_for"),
        ("airflow_secure_mail.cli", "main"),
    ],
)
def test_module_paths_in_the_docs_and_airflow_config_still_import(path, name):
    """Paths a DAG, an ``airflow.cfg`` (``[email] email_backend``) or the console script names."""
    assert callable(getattr(importlib.import_module(path), name))


def test_the_old_attachments_module_warns_and_still_loads():
    sys.modules.pop("airflow_secure_mail.attachments", None)
    with pytest.warns(DeprecationWarning, match="import from airflow_secure_mail.pipeline.attachments"):
        old = importlib.import_module("airflow_secure_mail.attachments")
    assert old.load_attachments(None) == ()
