"""The connection test as Airflow's Test button runs it: on a copy of the connection under a random id, which
its message must never name (issue 21 item 14)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_secure_mail.hooks.smtp import SecureSmtpHook

STORED_PASSWORD = (
    "this connection stores a login or password: remove them and put the credentials in Vault "
    "(extra vault_path, fields username and password)."
)


def _stored(mail_env: Any, **fields: Any) -> dict[str, Any]:
    conn = {
        "conn_type": "securesmtp",
        "host": "localhost",
        "port": mail_env.smtp.port(starttls=True),
        "extra": mail_env.smtp.connection_extra(starttls=True, vault_path=mail_env.secret_path),
    }
    return conn | fields


def test_connection_test_under_a_random_id_names_no_id(mail_env):
    """What ``POST /api/v2/connections/test`` does: export the body as ``AIRFLOW_CONN_<random>``, test that."""
    from airflow.models.connection import Connection
    from airflow.utils.strings import get_random_string

    transient = get_random_string()
    body = _stored(mail_env, login="airflow", password="typed-in-the-form")
    conn = Connection(conn_id=transient, **(body | {"extra": json.dumps(body["extra"])}))
    mail_env.monkeypatch.setenv(f"AIRFLOW_CONN_{transient.upper()}", conn.get_uri())
    ok, message = conn.test_connection()
    assert (ok, message) == (False, STORED_PASSWORD)
    assert mail_env.smtp.connections == 0


def test_connection_test_of_a_connection_without_host_says_this_connection(mail_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_NO_HOST", json.dumps(_stored(mail_env, host=None)))
    assert SecureSmtpHook("no_host").test_connection() == (False, "this connection has no host: set the SMTP server.")


def test_send_still_names_the_connection_id(mail_env, monkeypatch):
    """Outside the test the id is the user's own: errors keep naming it."""
    from airflow_secure_mail.errors import ConfigurationError
    from tests.helpers import plain_message

    monkeypatch.setenv("AIRFLOW_CONN_WITH_PASSWORD", json.dumps(_stored(mail_env, password="x")))
    with pytest.raises(ConfigurationError, match="^connection 'with_password' stores a login or password"):
        SecureSmtpHook("with_password").send(plain_message())


def test_rest_test_route_of_a_stored_connection_with_a_password_names_no_random_id(mail_env, airflow_db, monkeypatch):
    """Airflow's own route function, in process: the stored connection is copied under a random id and tested."""
    import airflow.utils.strings
    from airflow.api_fastapi.core_api.datamodels.connections import ConnectionBody
    from airflow.api_fastapi.core_api.routes.public.connections import test_connection as rest_test

    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    stored = _stored(mail_env, login="airflow", password="stored-password")
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_FROM_UI", json.dumps(stored))
    drawn: list[str] = []
    random_string = airflow.utils.strings.get_random_string

    def recorded(*args: Any, **kwargs: Any) -> str:
        drawn.append(random_string(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr("airflow.api_fastapi.core_api.routes.public.connections.get_random_string", recorded)
    # The list's Test button resends the connection as read back, the password masked: the stored one is merged in.
    body = ConnectionBody(
        connection_id="smtp_from_ui",
        conn_type="securesmtp",
        host="localhost",
        port=stored["port"],
        login="airflow",
        password="***",
        extra=json.dumps(stored["extra"]),
    )
    allow_all = SimpleNamespace(is_authorized_connection=lambda **_: True)
    verdict = rest_test(body, user=SimpleNamespace(), auth_manager=allow_all)
    assert (verdict.status, verdict.message) == (False, STORED_PASSWORD)
    assert len(drawn) == 1 and drawn[0] not in verdict.message
    assert mail_env.smtp.connections == 0
