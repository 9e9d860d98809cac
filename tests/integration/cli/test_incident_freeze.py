"""``setup`` (and doctor's check) say whether the workers may read the freeze switch: a gap is a FAIL."""

from __future__ import annotations

import json
import secrets

import pytest

from airflow_secure_mail.cli.main import main


@pytest.fixture(autouse=True)
def _fresh_freeze_state():
    from airflow_secure_mail.connection.freeze import forget

    forget()
    yield
    forget()


def _setup(capsys) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    code = main(["setup", "--conn-id", "secure_smtp_default", "--transit-key", f"mail-archive-{secrets.token_hex(3)}"])
    return code, capsys.readouterr().out


def _freeze_line(out: str) -> str:
    [line] = [line.strip() for line in out.splitlines() if "freeze switch" in line]
    return " ".join(line.split())


def test_setup_reports_the_switch_not_frozen_then_frozen(mail_env, capsys):
    where = f"secret/{mail_env.secret_path}.freeze"
    assert _freeze_line(_setup(capsys)[1]) == f"OK freeze switch {where} readable, nothing stored: not frozen"
    assert main(["incident", "freeze", "--conn-id", "secure_smtp_default", "--reason", "drill"]) == 0
    capsys.readouterr()
    line = _freeze_line(_setup(capsys)[1])
    assert line.startswith(f"NOTE freeze switch {where}: FROZEN since ") and line.endswith(": drill")


def test_workers_that_may_not_read_the_switch_are_a_fail_with_the_policy_line(mail_env, capsys, monkeypatch):
    from airflow_secure_mail.cli.setup import freeze_check, worker_policy
    from airflow_secure_mail.connection.settings import SmtpSettings

    root = mail_env.bao.client()
    root.sys.create_or_update_policy(
        name="creds-only", policy=f'path "secret/data/{mail_env.secret_path}" {{ capabilities = ["read"] }}'
    )
    token = root.auth.token.create(policies=["creds-only"], ttl="1h")["auth"]["client_token"]
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_WORKER", json.dumps(dict(mail_env.bao.connection_uri(), password=token)))
    mail_env.set_smtp_conn(vault_conn_id="vault_worker")
    grant = f'path "secret/data/{mail_env.secret_path}.freeze" {{ capabilities = ["read"] }}'
    code, out = _setup(capsys)
    assert code == 1
    assert _freeze_line(out) == (
        f"FAIL freeze switch this token may not read secret/{mail_env.secret_path}.freeze: a freeze would not stop "
        f"these workers; grant {grant}"
    )
    assert token not in out
    from airflow.sdk import BaseHook

    settings = SmtpSettings.from_connection(BaseHook.get_connection("secure_smtp_default"))
    assert grant in worker_policy(settings, "mail-archive")
    status, what, detail = freeze_check(settings)
    assert (status, what) == ("FAIL", "freeze switch") and detail.endswith(f": grant {grant}")
