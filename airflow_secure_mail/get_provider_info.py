"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

LISTENER_SECTION = "secure_mail"
"""The listener plugin's section of Airflow's configuration (``listeners/config.py`` reads it)."""

LISTENER_OPTIONS: dict[str, dict[str, Any]] = {
    "listener_to": {
        "description": "Comma-separated addresses the listener mails (DAG import errors and, with "
        "listener_catch_all, failures of DAGs that wire no alert of their own). Empty: the listener is off.",
        "type": "string",
        "example": "oncall@example.com, data-team@example.com",
        "default": "",
    },
    "listener_conn_id": {
        "description": "The securesmtp connection the listener sends through.",
        "type": "string",
        "example": None,
        "default": "secure_smtp_default",
    },
    "listener_import_errors": {
        "description": "Mail DAG import errors (one mail per file and error, repeats throttled, a resolved "
        "line when the file parses again). On when listener_to is set.",
        "type": "boolean",
        "example": None,
        "default": "True",
    },
    "listener_catch_all": {
        "description": "Mail failures of tasks whose task and DAG have no on_failure_callback and no "
        "email_on_failure of their own, folded into alert digests.",
        "type": "boolean",
        "example": None,
        "default": "False",
    },
    "listener_digest_state": {
        "description": "Where the listener keeps its digest and throttle state (file:///path or "
        "s3://bucket/prefix). Default: file://$AIRFLOW_HOME/secure-mail/listener-state, which only works when "
        "every Airflow component runs on one machine; set an s3:// location for several machines.",
        "type": "string",
        "example": "s3://alerts/listener-state",
        "default": "",
    },
    "listener_repeat_interval": {
        "description": "How long the same import error of the same file stays quiet after its mail "
        "(a duration: 30m, 4h, 1d).",
        "type": "string",
        "example": None,
        "default": "4h",
    },
}


NOTIFIER_OPTIONS: dict[str, dict[str, Any]] = {
    "hitl_responders": {
        "description": "SecureEmailNotifier as a HITL notifier: a JSON object mapping Airflow user ids (or "
        "names) of a request's assigned users to mail addresses; those users get the request mail too. "
        "Not a secret. A notifier's responder_addresses= wins.",
        "type": "string",
        "example": '{"alice": "alice@example.com"}',
        "default": "",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Connection type ``securesmtp``, hooks, operators and notifier; imports only stdlib modules of ours.

    The form's fields come from the same table the settings parser reads (``connection/fields.py``).
    The raw "Extra Fields JSON" editor stays visible: Airflow 3's form cannot hide it, and we do not try.
    """
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
        "connection-types": [_connection_type()],
        "config": _config(),
    }


def _config() -> dict[str, Any]:
    """The ``[secure_mail]`` section: the listener plugin's options (from the table its reader uses) and the
    HITL notifier's ``hitl_responders``."""
    return {
        LISTENER_SECTION: {
            "description": "Secure mail: the listener plugin (DAG import errors and failures of DAGs that wire no "
            "alert of their own; off until listener_to is set) and the HITL notifier's responder addresses.",
            "options": {
                name: {**spec, "version_added": "0.2.0"}
                for name, spec in {**LISTENER_OPTIONS, **NOTIFIER_OPTIONS}.items()
            },
        }
    }


def _connection_type() -> dict[str, Any]:
    """The ``securesmtp`` form: every extra from the one schema, login and password hidden (they live in Vault)."""
    from airflow_secure_mail.connection.fields import CONN_TYPE, conn_fields, placeholders

    return {
        "hook-class-name": "airflow_secure_mail.hooks.smtp.SecureSmtpHook",
        "connection-type": CONN_TYPE,
        "hook-name": "Secure SMTP (TLS only, credentials in Vault)",
        "conn-fields": conn_fields(),
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "login", "password"],
            "relabeling": {"host": "SMTP host"},
            "placeholders": {
                "host": "smtp.example.com",
                "port": "465 (implicit TLS) or 587 (STARTTLS)",
                **placeholders(),
            },
        },
    }
