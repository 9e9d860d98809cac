"""`airflow-secure-mail doctor`: as a user runs it (a separate process, connections in the database) and its checks."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _airflow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "airflow", *args], check=True, capture_output=True, text=True)


def test_doctor_finds_connections_stored_in_the_metadata_database(mail_env, airflow_db):
    suffix = secrets.token_hex(3)
    smtp_id, vault_id = f"smtp_db_{suffix}", f"vault_db_{suffix}"
    _airflow("connections", "add", vault_id, "--conn-json", json.dumps(mail_env.bao.connection_uri()))
    extra = mail_env.smtp.connection_extra(starttls=True, vault_path=mail_env.secret_path, vault_conn_id=vault_id)
    conn = {"conn_type": "securesmtp", "host": "localhost", "port": mail_env.smtp.port(starttls=True), "extra": extra}
    _airflow("connections", "add", smtp_id, "--conn-json", json.dumps(conn))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    cli = shutil.which("airflow-secure-mail", path=str(Path(sys.executable).parent))
    assert cli is not None
    run = subprocess.run([cli, "doctor", "--conn-id", smtp_id], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"airflow-secure-mail doctor: {smtp_id}" in run.stdout
    assert "PASS  TLS negotiated" in run.stdout
    assert "AUTH" in run.stdout and "authenticated" in run.stdout
    assert f"{vault_id} is plain http on loopback" in run.stdout  # the Vault connection came from the database too
    assert mail_env.password not in run.stdout + run.stderr
    assert "shall not contain" not in run.stdout + run.stderr
    assert mail_env.smtp.messages == []


def test_doctor_says_where_it_looked_for_a_missing_connection(airflow_db):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    run = subprocess.run(
        [sys.executable, "-m", "airflow_secure_mail.cli", "doctor", "--conn-id", "nowhere"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "FAIL  connection nowhere: AirflowNotFoundException (looked in the metadata database" in run.stdout


def test_doctor_warns_about_deprecated_extra_names(mail_env, capsys):
    from airflow_secure_mail.cli import main

    mail_env.set_smtp_conn("old_names", vault_secret_path=mail_env.secret_path)
    assert main(["doctor", "--conn-id", "old_names"]) == 0
    out = capsys.readouterr().out
    assert "WARN  extra names" in out and "extra vault_secret_path is deprecated: rename it to vault_path." in out
    assert "PASS  TLS negotiated" in out


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        ({"conn_type": "vault", "host": "vault.example", "extra": {"use_tls": "yes"}}, ("PASS", "uses https")),
        ({"conn_type": "vaults", "host": "vault.example"}, ("PASS", "uses https")),
        (
            {"conn_type": "vaults", "host": "vault.example", "extra": {"use_tls": "false"}},
            ("FAIL", "is plain http: set use_tls=true"),
        ),
        ({"conn_type": "vault", "host": "127.0.0.1"}, ("WARN", "is plain http on loopback")),
    ],
)
def test_doctor_judges_the_vault_scheme_as_the_vault_client_does(monkeypatch, conn, expected):
    from airflow_secure_mail.cli.main import _vault_tls_check

    monkeypatch.setenv("AIRFLOW_CONN_VAULT_DOCTOR", json.dumps(conn))
    status, what, detail = _vault_tls_check("vault_doctor")
    assert (status, what, detail) == (expected[0], "Vault over TLS", f"vault_doctor {expected[1]}")


def test_doctor_fails_a_missing_vault_connection_by_name(monkeypatch):
    from airflow_secure_mail.cli.main import _vault_tls_check

    monkeypatch.delenv("AIRFLOW_CONN_VAULT_NOWHERE", raising=False)
    assert _vault_tls_check("vault_nowhere") == ("FAIL", "Vault connection", "vault_nowhere: AirflowNotFoundException")


def test_doctor_looks_the_connection_up_once(mail_env, capsys, monkeypatch):
    from airflow.sdk import BaseHook

    from airflow_secure_mail.cli import main

    looked_up: list[str] = []
    real = BaseHook.get_connection.__func__

    def counting(cls, conn_id):  # the real lookup still runs; only counted
        looked_up.append(conn_id)
        return real(cls, conn_id)

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(counting))
    assert main(["doctor", "--conn-id", "secure_smtp_default"]) == 0
    assert looked_up.count("secure_smtp_default") == 1
    out = capsys.readouterr().out
    assert "PASS  TLS negotiated" in out and "PASS  AUTH" in out and "PASS  CA pinning" in out
