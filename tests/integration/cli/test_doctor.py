"""airflow-secure-mail doctor: the checklist, and a connection holding a password fails it."""

from __future__ import annotations


def test_doctor_prints_checklist(mail_env, capsys):
    from airflow_secure_mail.cli import main

    assert main(["doctor", "--conn-id", "secure_smtp_default"]) == 0
    out = capsys.readouterr().out
    assert "PASS  CA pinning" in out
    assert "WARN  Vault over TLS" in out  # the dev server is plain http on loopback
    assert "PASS  TLS negotiated" in out and "TLSv1.3" in out
    assert mail_env.smtp.messages == []


def test_doctor_fails_on_password_in_connection(monkeypatch, capsys):
    import json

    from airflow_secure_mail.cli import main

    conn = {"conn_type": "securesmtp", "host": "smtp.example.com", "port": 587, "password": "hunter2-" * 2}
    monkeypatch.setenv("AIRFLOW_CONN_BAD", json.dumps(conn))
    assert main(["doctor", "--conn-id", "bad"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "hunter2" not in out
