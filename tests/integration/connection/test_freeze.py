"""The kill switch: ``incident freeze`` in Vault stops every send (this process and others), ``unfreeze`` resumes."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_secure_mail.cli.main import main
from airflow_secure_mail.errors import SendFrozen
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail
from airflow_secure_mail.testing._ports import wait_until
from airflow_secure_mail.testing.openbao import OpenBaoDevServer

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _fresh_freeze_state():
    from airflow_secure_mail.connection.freeze import forget

    forget()
    yield
    forget()


def _request(subject: str = "numbers") -> MailRequest:
    return MailRequest(sender="airflow@example.com", to=("ana@example.com",), subject=subject, text="42")


def _switch(mail_env) -> dict:  # type: ignore[no-untyped-def,type-arg]
    reply = mail_env.bao.client().secrets.kv.v2.read_secret_version(
        path=f"{mail_env.secret_path}.freeze", raise_on_deleted_version=True
    )
    return dict(reply["data"]["data"])


def test_freeze_via_the_cli_stops_sends_and_unfreeze_resumes_them(mail_env, capsys):
    send_mail(_request(), channel=MailChannel.for_conn())
    assert main(["incident", "freeze", "--conn-id", "secure_smtp_default", "--reason", "phishing wave"]) == 0
    out = capsys.readouterr().out
    switch = _switch(mail_env)
    assert switch["frozen"] is True and switch["reason"] == "phishing wave" and switch["by"]
    assert f"written to Vault secret/{mail_env.secret_path}.freeze" in out
    assert mail_env.bao.root_token not in out
    with pytest.raises(SendFrozen) as info:
        send_mail(_request(), channel=MailChannel.for_conn())
    assert str(info.value) == (
        f"connection 'secure_smtp_default' is frozen since {switch['since']}: phishing wave. Nothing was sent; "
        "`airflow-secure-mail incident unfreeze --conn-id secure_smtp_default` ends the freeze."
    )
    assert (info.value.rule, info.value.conn_id, info.value.since) == ("frozen", "secure_smtp_default", switch["since"])
    assert len(mail_env.smtp.messages) == 1
    assert main(["incident", "unfreeze", "--conn-id", "secure_smtp_default"]) == 0
    assert _switch(mail_env)["frozen"] is False
    send_mail(_request(), channel=MailChannel.for_conn())
    assert len(mail_env.smtp.messages) == 2


def test_a_freeze_written_elsewhere_is_read_within_the_interval(mail_env):
    mail_env.set_smtp_conn(freeze_check_interval=0.5)
    send_mail(_request(), channel=MailChannel.for_conn())  # reads "not frozen" and keeps it for 0.5 s
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(
        path=f"{mail_env.secret_path}.freeze", secret={"frozen": "true", "reason": "bao kv put"}
    )  # as `bao kv put … frozen=true` stores it: text
    wait_until(_frozen, timeout=30, what="the freeze to reach this process")  # sends go on until it is read
    delivered = len(mail_env.smtp.messages)
    with pytest.raises(SendFrozen, match="bao kv put"):
        send_mail(_request(), channel=MailChannel.for_conn())
    assert len(mail_env.smtp.messages) == delivered


def _frozen() -> bool:
    try:
        send_mail(_request(), channel=MailChannel.for_conn())
    except SendFrozen:
        return True
    return False


def test_freeze_vault_path_overrides_the_place(mail_env):
    path = f"incident/switch-{secrets.token_hex(3)}"
    mail_env.set_smtp_conn(freeze_vault_path=path)
    assert main(["incident", "freeze", "--conn-id", "secure_smtp_default", "--reason", "drill"]) == 0
    assert (
        mail_env.bao.client().secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)["data"][
            "data"
        ]["frozen"]
        is True
    )
    with pytest.raises(SendFrozen, match="drill"):
        send_mail(_request(), channel=MailChannel.for_conn())


def test_cli_with_a_token_that_may_not_write_says_what_to_grant(mail_env, monkeypatch, capsys):
    root = mail_env.bao.client()
    root.sys.create_or_update_policy(name="read-only", policy='path "secret/data/*" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["read-only"], ttl="1h")["auth"]["client_token"]
    monkeypatch.setenv("VAULT_TOKEN", token)
    assert main(["incident", "freeze", "--conn-id", "secure_smtp_default", "--reason", "x"]) == 1
    out = capsys.readouterr().out
    assert out.strip() == (
        f"FAIL  freeze secure_smtp_default: the Vault token (token from VAULT_TOKEN) may not write "
        f'secret/{mail_env.secret_path}.freeze: grant it `path "secret/data/{mail_env.secret_path}.freeze" '
        '{ capabilities = ["create", "update"] }`, or run with an operator\'s token in VAULT_TOKEN.'
    )
    assert token not in out


def test_a_policy_gap_lets_sends_go_on_with_one_warning_per_interval(mail_env, monkeypatch, caplog):
    """Workers whose policy predates the switch (403 on it, never read) keep sending, warned, not stopped."""
    root = mail_env.bao.client()
    root.sys.create_or_update_policy(
        name="smtp-creds-only", policy=f'path "secret/data/{mail_env.secret_path}" {{ capabilities = ["read"] }}'
    )
    token = root.auth.token.create(policies=["smtp-creds-only"], ttl="1h")["auth"]["client_token"]
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_WORKER", json.dumps(dict(mail_env.bao.connection_uri(), password=token)))
    mail_env.set_smtp_conn(vault_conn_id="vault_worker", freeze_check_interval=3600)
    assert main(["incident", "freeze", "--conn-id", "secure_smtp_default", "--reason", "x"]) == 1  # worker token
    root.secrets.kv.v2.create_or_update_secret(path=f"{mail_env.secret_path}.freeze", secret={"frozen": True})
    with caplog.at_level(logging.WARNING, logger="airflow_secure_mail"):
        send_mail(_request(), channel=MailChannel.for_conn())
        send_mail(_request(), channel=MailChannel.for_conn())
    assert len(mail_env.smtp.messages) == 2
    [warning] = [r.getMessage() for r in caplog.records if "freeze switch" in r.getMessage()]
    assert warning == (
        f"connection 'secure_smtp_default': cannot read its freeze switch at secret/{mail_env.secret_path}.freeze "
        f"(Vault denied access to secret/{mail_env.secret_path}.freeze: grant the Airflow role read on this path.); "
        f"sending anyway. Give the workers' Vault policy: "
        f'path "secret/data/{mail_env.secret_path}.freeze" {{ capabilities = ["read"] }}'
    )


def test_a_known_freeze_holds_while_vault_is_away(mail_env, monkeypatch):
    """Vault stops after the freeze was read: the freeze stays in force (credentials are still cached)."""
    private = OpenBaoDevServer().start()
    try:
        client = private.client()
        client.secrets.kv.v2.create_or_update_secret(
            path="smtp/airflow", secret={"username": "airflow", "password": mail_env.password}
        )
        monkeypatch.setenv("AIRFLOW_CONN_VAULT_PRIVATE", json.dumps(private.connection_uri()))
        mail_env.set_smtp_conn(vault_conn_id="vault_private", vault_path="smtp/airflow", freeze_check_interval=0.2)
        send_mail(_request(), channel=MailChannel.for_conn())  # credentials read and cached
        assert main(["incident", "freeze", "--conn-id", "secure_smtp_default", "--reason", "held"]) == 0
    finally:
        private.stop()
    time.sleep(0.3)  # past the interval: the next send tries Vault, which is gone
    for _ in range(2):
        with pytest.raises(SendFrozen, match="held"):
            send_mail(_request(), channel=MailChannel.for_conn())
    assert len(mail_env.smtp.messages) == 1


SENDER = """
import sys, time
from airflow_secure_mail.errors import SendFrozen
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.pipeline.send import send_mail

tag, stop = sys.argv[1], sys.argv[2]
n = 0
while True:
    try:
        open(stop).close()
        break
    except FileNotFoundError:
        pass
    n += 1
    try:
        send_mail(MailRequest(sender="airflow@example.com", to=("ana@example.com",), subject=f"{tag} {n}", text="x"),
                  channel=MailChannel.for_conn())
        print("sent", n, flush=True)
    except SendFrozen:
        print("frozen", n, flush=True)
    time.sleep(0.1)
"""


def test_freeze_stops_two_processes_and_unfreeze_resumes_both(mail_env, tmp_path):
    mail_env.set_smtp_conn(freeze_check_interval=1)
    stop = tmp_path / "stop"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for tag in ("one", "two"):
        with open(tmp_path / f"{tag}.out", "w") as out:  # the child keeps its own copy of the descriptor
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", SENDER, tag, str(stop)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
            )

    def delivered(tag: str) -> int:
        return sum(m.data.count(f"Subject: {tag} ".encode()) for m in list(mail_env.smtp.messages))

    def reports(tag: str, word: str) -> int:
        return sum(line.startswith(word) for line in (tmp_path / f"{tag}.out").read_text().splitlines())

    try:
        wait_until(lambda: delivered("one") and delivered("two"), timeout=180, what="both processes sending")
        assert main(["incident", "freeze", "--conn-id", "secure_smtp_default", "--reason", "drill"]) == 0
        time.sleep(1 + 1.5)  # the interval and a margin: every process has read the switch since
        frozen_at = {tag: delivered(tag) for tag in ("one", "two")}
        wait_until(lambda: reports("one", "frozen") >= 3 and reports("two", "frozen") >= 3, timeout=60,
                   what="both processes refusing")  # fmt: skip
        time.sleep(1.5)  # more frozen sends, past another interval
        assert {tag: delivered(tag) for tag in ("one", "two")} == frozen_at
        assert main(["incident", "unfreeze", "--conn-id", "secure_smtp_default"]) == 0
        wait_until(lambda: all(delivered(t) > frozen_at[t] for t in frozen_at), timeout=60, what="both resuming")
    finally:
        stop.touch()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    for tag in ("one", "two"):
        assert "Traceback" not in (tmp_path / f"{tag}.out").read_text()
