"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Connection type ``secure_smtp``, hooks, operators and notifier; no imports beyond this module."""
    from airflow_secure_mail import __version__

    return {
        "package-name": "airflow-secure-mail",
        "name": "Secure Mail",
        "description": "Mail over verified TLS with credentials from Vault, optional PGP/S-MIME, "
        "screening and a write-once archive.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Secure Mail",
                "external-doc-url": "https://pypi.org/project/airflow-secure-mail/",
                "tags": ["protocol"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Secure Mail",
                "python-modules": ["airflow_secure_mail.hooks.smtp"],
            }
        ],
        "operators": [
            {
                "integration-name": "Secure Mail",
                "python-modules": [
                    "airflow_secure_mail.operators.email",
                    "airflow_secure_mail.operators.backup",
                    "airflow_secure_mail.operators.digest",
                ],
            }
        ],
        "notifications": ["airflow_secure_mail.notifications.email.SecureEmailNotifier"],
        "connection-types": [
            {
                "hook-class-name": "airflow_secure_mail.hooks.smtp.SecureSmtpHook",
                "connection-type": "secure_smtp",
                "hook-name": "Secure SMTP (TLS only, credentials in Vault)",
                "conn-fields": {
                    "security": {
                        "label": "Security",
                        "schema": {"type": ["string", "null"], "enum": ["tls", "starttls", "none", None]},
                        "description": "tls = implicit TLS (465); starttls = mandatory STARTTLS (587); "
                        "none only on loopback.",
                    },
                    "min_tls_version": {
                        "label": "Minimum TLS version",
                        "schema": {"type": ["string", "null"], "enum": ["TLSv1.2", "TLSv1.3", None]},
                    },
                    "ca_cert": {
                        "label": "CA certificate (PEM, path or vault:<path>#<field>)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "client_cert": {
                        "label": "Client certificate (PEM, path or vault:<path>#<field>)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "client_key": {
                        "label": "Client key (vault:<path>#<field> recommended)",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "auth": {
                        "label": "Authentication",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["password", "xoauth2", "oauthbearer", "none", None],
                        },
                    },
                    "vault_conn_id": {"label": "Vault connection id", "schema": {"type": ["string", "null"]}},
                    "vault_secret_path": {
                        "label": "Vault path of the SMTP credentials",
                        "schema": {"type": ["string", "null"]},
                    },
                    "vault_mount": {"label": "Vault KV mount", "schema": {"type": ["string", "null"]}},
                    "vault_kv_version": {
                        "label": "Vault KV version",
                        "schema": {"type": ["integer", "null"], "enum": [1, 2, None]},
                    },
                    "from_email": {"label": "Default sender", "schema": {"type": ["string", "null"]}},
                    "timeout": {"label": "Timeout (s)", "schema": {"type": ["integer", "null"]}},
                    "retries": {"label": "Retries", "schema": {"type": ["integer", "null"]}},
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "password", "extra"],
                    "relabeling": {},
                    "placeholders": {
                        "host": "smtp.example.com",
                        "port": "465 (implicit TLS) or 587 (STARTTLS)",
                        "vault_secret_path": "smtp/airflow",
                    },
                },
            }
        ],
    }
