"""The ``securesmtp`` connection as deployed: the UI form's payload, names Airflow masks, the type name."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import pytest

from airflow_secure_mail.connection.fields import FIELDS, FIELDS_BY_NAME, ui_form_extra
from airflow_secure_mail.connection.settings import SmtpSettings
from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from tests.helpers import plain_message


def _form_payload(**filled: object) -> dict[str, object]:
    """What Airflow 3.3's form saves: every conn-field with its API ``value`` (null), the typed ones replaced.

    Read from Airflow's own hook metadata service (the endpoint the React form is built from), not from our table.
    """
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    [meta] = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "securesmtp"]
    assert meta.extra_fields is not None
    payload = {name: spec["value"] for name, spec in meta.extra_fields.items()}
    assert set(filled) <= set(payload)
    payload.update(filled)
    return payload


def _set_conn(mail_env, conn_id: str, extra: dict[str, object], conn_type: str = "securesmtp") -> None:
    """Port not 465 and no ``security``: the default is mandatory STARTTLS, so use the catcher's STARTTLS port."""
    starttls = extra.get("security") in (None, "", "starttls")
    conn = {"conn_type": conn_type, "host": "localhost", "port": mail_env.smtp.port(starttls=starttls), "extra": extra}
    mail_env.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def test_ui_form_payload_with_nulls_tests_and_sends(mail_env):
    payload = _form_payload(vault_path=mail_env.secret_path, ca_cert=mail_env.smtp.ca.pem)
    assert payload == ui_form_extra(vault_path=mail_env.secret_path, ca_cert=mail_env.smtp.ca.pem)
    assert sum(v is None for v in payload.values()) == len(FIELDS) - 2
    _set_conn(mail_env, "from_form", payload)
    hook = SecureSmtpHook("from_form")
    ok, detail = hook.test_connection()
    assert ok, detail
    assert "authenticated" in detail
    hook.send(plain_message())
    [received] = mail_env.smtp.messages
    assert received.auth_identity == "airflow" and received.rcpt_tos == ["ops@example.com"]
    s = hook.settings
    assert (s.auth, s.min_tls_version, s.security, s.vault_conn_id, s.vault_mount) == (
        "password", "TLSv1.2", None, "vault_default", "secret",
    )  # fmt: skip
    assert (s.vault_kv_version, s.vault_version, s.timeout, s.retries, s.deadline, s.policy_defaults) == (
        2, None, 30.0, 3, 300.0, {},
    )  # fmt: skip


def test_ui_test_button_path_round_trips_the_form_payload_through_a_uri(mail_env):
    """POST /api/v2/connections/test exports the body as ``AIRFLOW_CONN_<random>=<get_uri()>`` and tests that."""
    from airflow.models.connection import Connection

    payload = _form_payload(vault_path=mail_env.secret_path, ca_cert=mail_env.smtp.ca.pem)
    conn = Connection(
        conn_id="ui_test", conn_type="securesmtp", host="localhost", port=mail_env.smtp.port(starttls=True),
        extra=json.dumps(payload),
    )  # fmt: skip
    mail_env.monkeypatch.setenv("AIRFLOW_CONN_UI_TEST", conn.get_uri())
    ok, detail = conn.test_connection()
    assert ok, detail
    assert [a.ok for a in mail_env.smtp.auth_attempts] == [True] and mail_env.smtp.messages == []


def test_empty_strings_mean_not_set(mail_env):
    extra = {name: "" for name in FIELDS_BY_NAME} | {
        "vault_path": mail_env.secret_path,
        "ca_cert": mail_env.smtp.ca.pem,
    }
    _set_conn(mail_env, "blank", extra)
    SecureSmtpHook("blank").send(plain_message())
    assert len(mail_env.smtp.messages) == 1


def test_numbers_typed_as_text_in_raw_extra_are_read():
    conn = _FakeConn({"vault_path": "smtp/x", "timeout": "12.5", "retries": "0", "vault_version": "4"})
    s = SmtpSettings.from_connection(conn)
    assert (s.timeout, s.retries, s.vault_version) == (12.5, 0, 4)


def test_relay_rate_is_read_into_the_delivery_limits():
    conn = _FakeConn({"vault_path": "smtp/x", "max_messages_per_minute": "30", "retries": 2, "deadline": 60})
    limits = SmtpSettings.from_connection(conn).delivery_limits("c", concurrency=4)
    assert (limits.max_messages_per_minute, limits.rate_key, limits.concurrency) == (30.0, "c", 4)
    assert (limits.retries, limits.retry_backoff, limits.deadline) == (2, 1.0, 60.0)
    unset = SmtpSettings.from_connection(_FakeConn({"vault_path": "smtp/x", "max_messages_per_minute": None}))
    assert unset.max_messages_per_minute is None


def test_auth_choices_on_the_form_are_the_transports_mechanisms():
    from typing import get_args

    from airflow_secure_mail.transport.auth import AuthMechanism

    assert FIELDS_BY_NAME["auth"].choices == get_args(AuthMechanism)


@dataclasses.dataclass
class _FakeConn:
    """A connection as Airflow hands it over (only the attributes the parser reads): no server is needed here."""

    extra_dejson: dict[str, object]
    conn_id: str = "c"
    host: str = "smtp.example.com"
    port: int | None = 587
    login: str | None = None
    password: str | None = None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"auth": "plain"}, "extra auth 'plain' is unknown; use one of password, xoauth2, oauthbearer, none"),
        ({"timeout": "soon"}, "extra timeout must be a number, not 'soon'"),
        ({"vault_kv_version": 3}, "extra vault_kv_version 3 is unknown; use one of 1, 2"),
        ({"policy": "[1]"}, "extra policy must be a JSON object"),
        ({"vault_path": None}, "needs extra vault_path"),
        ({"oauth_endpoint": "https://idp.example.com/token"}, "sets oauth_endpoint: set auth to xoauth2"),
        ({"client_secret": "abcdefgh"}, "has a secret in extra 'client_secret'"),
        ({"max_messages_per_minute": 0}, "extra max_messages_per_minute must be above 0, not 0.0; leave it empty"),
        ({"max_messages_per_minute": "fast"}, "extra max_messages_per_minute must be a number, not 'fast'"),
    ],
)
def test_bad_extra_is_refused_naming_it(extra, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace("[", r"\[")):
        SmtpSettings.from_connection(_FakeConn({"vault_path": "smtp/x", **extra}))


def test_deprecated_names_are_read_with_a_warning(caplog):
    extra = {
        "vault_secret_path": "smtp/old",
        "vault_secret_version": 2,
        "oauth_token_url": "https://idp.example.com/token",
        "auth": "xoauth2",
    }
    with caplog.at_level(logging.WARNING, logger="airflow_secure_mail.connection.settings"):
        s = SmtpSettings.from_connection(_FakeConn(extra))
    assert (s.vault_path, s.vault_version, s.oauth_endpoint) == ("smtp/old", 2, "https://idp.example.com/token")
    warned = caplog.text
    for old, new in [("vault_secret_path", "vault_path"), ("vault_secret_version", "vault_version"),
                     ("oauth_token_url", "oauth_endpoint")]:  # fmt: skip
        assert f"extra {old} is deprecated: rename it to {new}" in warned


def test_old_and_new_name_disagreeing_is_refused():
    with pytest.raises(
        ConfigurationError, match="extras vault_path and vault_secret_path disagree: keep only vault_path"
    ):
        SmtpSettings.from_connection(_FakeConn({"vault_path": "smtp/a", "vault_secret_path": "smtp/b"}))


def test_every_setting_is_a_form_field_with_its_default_shown():
    from airflow_secure_mail.get_provider_info import get_provider_info

    [conn_type] = get_provider_info()["connection-types"]
    fields = conn_type["conn-fields"]
    assert list(fields) == [f.name for f in FIELDS]
    settings = {f.name for f in dataclasses.fields(SmtpSettings)} - {"host", "port", "policy_defaults"}
    assert settings | {"policy"} == set(fields)
    for name in (
        "oauth_endpoint",
        "oauth_scope",
        "retry_backoff",
        "deadline",
        "policy",
        "vault_version",
        "max_messages_per_minute",
    ):
        assert name in fields
    for name, field in fields.items():
        assert "Default: " in field["description"], name
        assert "default" not in field["schema"], name  # an unset field stays null, so later defaults apply
        if "enum" in field["schema"]:
            assert None in field["schema"]["enum"] and field["schema"]["values_display"]["null"].startswith("default")
    assert "extra" not in conn_type["ui-field-behaviour"]["hidden-fields"]


def test_new_extra_names_are_not_masked_by_airflow():
    from airflow._shared.secrets_masker import redact, should_hide_value_for_key

    assert [f.name for f in FIELDS if should_hide_value_for_key(f.name)] == []
    old_names = [alias for f in FIELDS for alias in f.aliases]
    assert old_names and all(should_hide_value_for_key(name) for name in old_names)  # why they were renamed
    extra = ui_form_extra(vault_path="smtp/airflow", vault_version=3, oauth_endpoint="https://idp.example.com/t")
    assert redact(extra) == extra


def test_provider_load_and_connection_use_log_no_scheme_warning(monkeypatch):
    conn = {"conn_type": "securesmtp", "host": "smtp.example.com", "port": 587, "extra": {"vault_path": "smtp/a"}}
    monkeypatch.setenv("AIRFLOW_CONN_SCHEME_CHECK", json.dumps(conn))
    code = (
        "import logging, warnings; logging.basicConfig(level=logging.DEBUG); warnings.simplefilter('always');"
        "from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService;"
        "HookMetaService.hook_meta_data();"
        "from airflow.models.connection import Connection;"
        "print(Connection.get_connection_from_secrets('scheme_check').get_uri());"
        "from airflow_secure_mail.hooks.smtp import SecureSmtpHook;"
        "print(SecureSmtpHook('scheme_check').settings.vault_path)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "securesmtp://smtp.example.com:587" in run.stdout and "smtp/a" in run.stdout
    assert "shall not contain" not in run.stderr + run.stdout
    assert "Inconsistency" not in run.stderr


def test_connections_of_the_old_type_still_work(mail_env):
    extra = mail_env.smtp.connection_extra(vault_path=mail_env.secret_path)
    _set_conn(mail_env, "legacy", extra, conn_type="secure_smtp")
    SecureSmtpHook("legacy").send(plain_message())
    assert len(mail_env.smtp.messages) == 1


def test_provider_info_imports_only_stdlib_and_the_schema():
    code = (
        "import sys, json; before = set(sys.modules);"
        "from airflow_secure_mail.get_provider_info import get_provider_info; get_provider_info();"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    ours = {m for m in loaded if m.startswith("airflow_secure_mail")}
    assert ours == {
        "airflow_secure_mail", "airflow_secure_mail.get_provider_info",
        "airflow_secure_mail.connection", "airflow_secure_mail.connection.fields",
        "airflow_secure_mail.transport", "airflow_secure_mail.transport.auth", "airflow_secure_mail.errors",
    }  # fmt: skip
    assert not [m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names and m not in ours]
