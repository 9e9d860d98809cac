"""The listener's settings: off until listener_to, defaults, environment variables, errors that name the option."""

from __future__ import annotations

import pytest

from airflow_secure_mail.errors import ConfigurationError
from airflow_secure_mail.listeners.config import OPTIONS, ListenerSettings, read_settings, settings_from


def test_off_when_listener_to_is_empty():
    assert settings_from({}) is None
    assert settings_from({"listener_to": " , ", "listener_catch_all": "true"}) is None


def test_defaults_once_listener_to_is_set():
    settings = settings_from({"listener_to": "oncall@example.com, team@example.com"}, airflow_home="/srv/airflow")
    assert settings == ListenerSettings(
        to=("oncall@example.com", "team@example.com"),
        digest_state="file:///srv/airflow/secure-mail/listener-state",
        conn_id="secure_smtp_default",
        import_errors=True,
        catch_all=False,
        repeat_interval="4h",
    )


def test_environment_variables_reach_the_settings(monkeypatch):
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_TO", "oncall@example.com")
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_CONN_ID", "relay_two")
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_IMPORT_ERRORS", "false")
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_CATCH_ALL", "True")
    monkeypatch.setenv("AIRFLOW__SECURE_MAIL__LISTENER_DIGEST_STATE", "s3://alerts/listener")
    settings = read_settings()
    assert settings is not None
    assert (settings.to, settings.conn_id, settings.import_errors, settings.catch_all, settings.digest_state) == (
        ("oncall@example.com",),
        "relay_two",
        False,
        True,
        "s3://alerts/listener",
    )


def test_unset_in_the_environment_is_off(monkeypatch):
    monkeypatch.delenv("AIRFLOW__SECURE_MAIL__LISTENER_TO", raising=False)
    assert read_settings() is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"listener_catch_all": "maybe"}, "[secure_mail] listener_catch_all = 'maybe': give true or false."),
        (
            {"listener_digest_state": "ftp://host/x"},
            "[secure_mail] listener_digest_state: digest state: scheme ftp:// is not supported; "
            "use file:///path or s3://bucket/prefix.",
        ),
        (
            {"listener_repeat_interval": "soon"},
            "[secure_mail] listener_repeat_interval = 'soon': give a duration like 30m, 4h or 1d.",
        ),
    ],
)
def test_a_bad_value_names_its_option(values, message):
    with pytest.raises(ConfigurationError) as caught:
        settings_from({"listener_to": "oncall@example.com", **values})
    assert str(caught.value) == message


def test_provider_info_declares_every_option_with_its_default():
    from airflow_secure_mail.get_provider_info import NOTIFIER_OPTIONS, get_provider_info

    section = get_provider_info()["config"]["secure_mail"]["options"]
    assert set(section) == set(OPTIONS) | set(NOTIFIER_OPTIONS)
    assert section["listener_conn_id"]["default"] == "secure_smtp_default"
    assert section["listener_catch_all"]["default"] == "False"
    assert all(spec["description"] and spec["version_added"] for spec in section.values())
