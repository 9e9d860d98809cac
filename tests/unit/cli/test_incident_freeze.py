"""``incident`` verbs, the freeze switch's value and place, and its two connection extras (no servers)."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest

from airflow_secure_mail.cli import incident, incident_window
from airflow_secure_mail.cli.main import main
from airflow_secure_mail.connection.fields import ExtraError, read_extras
from airflow_secure_mail.connection.freeze import FreezeState, frozen_error, switch_for
from airflow_secure_mail.connection.settings import SmtpSettings


def _settings(**extra: object) -> SmtpSettings:
    conn = SimpleNamespace(conn_id="c", login=None, password=None, host="smtp.example.com", port=465,
                           extra_dejson={"vault_path": "smtp/airflow", **extra})  # fmt: skip
    return SmtpSettings.from_connection(conn)


def test_trace_and_notify_are_registered_by_incident_window_and_dispatched_to_it(monkeypatch):
    seen: list[str] = []

    def add_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        verbs.add_parser("trace").add_argument("--archive")
        verbs.add_parser("notify")

    monkeypatch.setattr(incident_window, "add_verbs", add_verbs)
    monkeypatch.setattr(incident_window, "run", lambda args: seen.append(args.verb) or 7)
    assert main(["incident", "trace", "--archive", "file:///a"]) == 7
    assert main(["incident", "notify"]) == 7
    assert seen == ["trace", "notify"]


def test_freeze_needs_a_reason(capsys):
    args = argparse.Namespace(verb="freeze", conn_id="c", reason="  ")
    assert incident.run(args) == 2
    assert capsys.readouterr().out.strip() == (
        "FAIL  incident freeze: --reason must say why (every refused send shows it)."
    )
    with pytest.raises(SystemExit):
        main(["incident", "freeze", "--conn-id", "c"])


def test_the_switch_lives_beside_the_credentials_unless_freeze_vault_path_says_otherwise():
    switch = switch_for(_settings())
    assert (switch.mount, switch.path, switch.kv_version) == ("secret", "smtp/airflow.freeze", 2)
    assert switch.policy_line() == 'path "secret/data/smtp/airflow.freeze" { capabilities = ["read"] }'
    other = switch_for(_settings(freeze_vault_path="/ops/freeze/", vault_kv_version=1, vault_mount="kv"))
    assert (other.where, other.policy_path()) == ("kv/ops/freeze", "kv/ops/freeze")
    assert switch_for(_settings(vault_path=None, auth="none")) is None


def test_freeze_check_interval_defaults_to_10_and_must_be_positive():
    assert _settings().freeze_check_interval == 10.0
    assert _settings(freeze_check_interval="2.5").freeze_check_interval == 2.5
    with pytest.raises(
        ExtraError, match="extra freeze_check_interval must be above 0, not 0.0; leave it empty for 10.0"
    ):
        read_extras({"freeze_check_interval": 0})


@pytest.mark.parametrize(
    ("stored", "frozen"),
    [({"frozen": True}, True), ({"frozen": "true"}, True), ({"frozen": "YES"}, True), ({"frozen": 1}, True),
     ({"frozen": False}, False), ({"frozen": "false"}, False), ({}, False), ({"frozen": None}, False)],
)  # fmt: skip
def test_the_stored_value_as_written_by_the_cli_or_by_bao_kv_put(stored, frozen):
    assert FreezeState.from_secret(stored).frozen is frozen


def test_the_cli_value_round_trips_and_the_error_says_how_to_end_it():
    state = FreezeState(frozen=True, reason="phishing\nwave.", since="2026-12-08T03:00:00+00:00", by="ops")
    assert FreezeState.from_secret(json.loads(json.dumps(state.to_secret()))) == state
    error = frozen_error("smtp_prod", state)
    assert str(error) == (
        "connection 'smtp_prod' is frozen since 2026-12-08T03:00:00+00:00: phishing wave. Nothing was sent; "
        "`airflow-secure-mail incident unfreeze --conn-id smtp_prod` ends the freeze."
    )
    assert (error.rule, error.conn_id, error.reason, error.since) == (
        "frozen", "smtp_prod", "phishing wave.", "2026-12-08T03:00:00+00:00"
    )  # fmt: skip
