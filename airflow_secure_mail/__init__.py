"""airflow-secure-mail: Airflow mail over verified TLS, credentials from Vault, optional PGP/S-MIME, archived.

Public names are imported lazily so that importing the package (as Airflow does while parsing DAGs)
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "SecureSmtpHook": "airflow_secure_mail.hooks.smtp",
    "SecureEmailOperator": "airflow_secure_mail.operators.email",
    "SecureEmailNotifier": "airflow_secure_mail.notifications.email",
    "AlertDigest": "airflow_secure_mail.alerts.digest",
    "AlertDigestFlushOperator": "airflow_secure_mail.operators.digest",
    "MailBackupOperator": "airflow_secure_mail.operators.backup",
    "MailRestoreOperator": "airflow_secure_mail.operators.backup",
    "MailArchive": "airflow_secure_mail.archive.store",
    "MailChannel": "airflow_secure_mail.pipeline.channel",
    "Outgoing": "airflow_secure_mail.mail.outgoing",
    "MailPolicy": "airflow_secure_mail.mail.screen",
    "ClamdScanner": "airflow_secure_mail.scanning.clamd",
    "SpamAssassinScanner": "airflow_secure_mail.scanning.spamd",
    "Protection": "airflow_secure_mail.mail.protect",
    "TLSPolicy": "airflow_secure_mail.transport.tls",
    "SendReceipt": "airflow_secure_mail.transport.session",
    "SecureMailError": "airflow_secure_mail.errors",
    "get_provider_info": "airflow_secure_mail.get_provider_info",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.digest import AlertDigest
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.errors import SecureMailError
    from airflow_secure_mail.get_provider_info import get_provider_info
    from airflow_secure_mail.hooks.smtp import SecureSmtpHook
    from airflow_secure_mail.mail.outgoing import Outgoing
    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.mail.screen import MailPolicy
    from airflow_secure_mail.notifications.email import SecureEmailNotifier
    from airflow_secure_mail.operators.backup import MailBackupOperator, MailRestoreOperator
    from airflow_secure_mail.operators.digest import AlertDigestFlushOperator
    from airflow_secure_mail.operators.email import SecureEmailOperator
    from airflow_secure_mail.pipeline.channel import MailChannel
    from airflow_secure_mail.scanning.clamd import ClamdScanner
    from airflow_secure_mail.scanning.spamd import SpamAssassinScanner
    from airflow_secure_mail.transport.session import SendReceipt
    from airflow_secure_mail.transport.tls import TLSPolicy


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_secure_mail' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
