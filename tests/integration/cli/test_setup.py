"""airflow-secure-mail setup / doctor --fix against a fresh OpenBao dev server (no Transit engine yet)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import hvac.exceptions
import pytest

from airflow_secure_mail.testing.openbao import OpenBaoDevServer

pytestmark = pytest.mark.vault  # every test starts its own fresh OpenBao

SMTP_PATH = "smtp/airflow"


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenBaoDevServer]:
    """A new OpenBao with only the dev server's KV v2 at secret/ (Transit disabled), and the two connections."""
    from airflow_secure_mail.archive.crypto import TransitSealer
    from airflow_secure_mail.vault import clear_cache

    server = OpenBaoDevServer().start()
    server.client().sys.disable_secrets_engine("transit")
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", json.dumps(server.connection_uri()))
    _smtp_conn(monkeypatch, {"host": "smtp.example.com", "port": 587})
    clear_cache()
    yield server
    clear_cache()
    TransitSealer.forget_keys()
    server.stop()


def _smtp_conn(monkeypatch: pytest.MonkeyPatch, base: dict[str, object], **extra: object) -> None:
    conn = {
        "conn_type": "securesmtp",
        **base,
        "extra": {"vault_path": SMTP_PATH, "from_email": "airflow@example.com", **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SECURE_SMTP_DEFAULT", json.dumps(conn))


def _put_smtp_secret(server: OpenBaoDevServer, password: str = "") -> None:
    server.client().secrets.kv.v2.create_or_update_secret(
        path=SMTP_PATH, secret={"username": "airflow", "password": password or secrets.token_urlsafe(12)}
    )


def _lines(out: str) -> dict[str, str]:
    """Item name → status, from the `  STATUS  what  detail` lines."""
    found = {}
    for line in out.splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0] in ("OK", "CREATED", "TODO", "FAIL"):
            found[parts[1].split("  ")[0].strip()] = parts[0]
    return found


def _setup(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from airflow_secure_mail.cli import main
    from airflow_secure_mail.vault import clear_cache

    clear_cache()
    code = main(["setup", *args])
    return code, capsys.readouterr().out


def test_setup_creates_transit_engine_and_key_then_second_run_is_all_ok(fresh, capsys):
    _put_smtp_secret(fresh)
    code, out = _setup(capsys)
    items = _lines(out)
    assert items["Transit engine at transit/"] == "CREATED"
    assert items["Transit key mail-archive"] == "CREATED"
    assert items["SMTP credentials"] == "OK"
    assert items["signing keys"] == "TODO" and "docs/protection.md" in out  # no --example-keys: a TODO
    assert code == 1
    key = fresh.client().secrets.transit.read_key(name="mail-archive")["data"]
    assert key["type"] == "aes256-gcm96" and key["latest_version"] == 1

    code, out = _setup(capsys, "--example-keys", "board@example.com")
    assert code == 0
    code, out = _setup(capsys, "--example-keys", "board@example.com")
    assert code == 0, out
    assert set(_lines(out).values()) == {"OK"}
    assert "TEST KEYS" not in out
    key = fresh.client().secrets.transit.read_key(name="mail-archive")["data"]
    assert key["latest_version"] == 1  # never rotated


def test_setup_with_a_worker_token_prints_commands_and_creates_nothing(fresh, capsys, monkeypatch):
    _put_smtp_secret(fresh)
    root = fresh.client()
    worker_policy = 'path "secret/data/*" { capabilities = ["read"] }\n'
    root.sys.create_or_update_policy(name="worker", policy=worker_policy)
    token = root.auth.token.create(policies=["worker"], ttl="1h")["auth"]["client_token"]
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", json.dumps(dict(fresh.connection_uri(), password=token)))

    code, out = _setup(capsys, "--example-keys", "board@example.com")

    assert code == 1
    items = _lines(out)
    assert items["Transit engine at transit/"] == "TODO" and items["Transit key mail-archive"] == "TODO"
    assert items["signing keys"] == "TODO" and items["recipient key board@example.com"] == "TODO"
    assert "may not write secret/mail-signing: run setup with an administrator's token in VAULT_TOKEN" in out
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.kv.v2.read_secret_version(path="mail-signing", raise_on_deleted_version=True)
    assert "bao secrets enable transit" in out
    assert "bao write -f transit/keys/mail-archive type=aes256-gcm96" in out
    assert 'path "transit/datakey/plaintext/mail-archive" { capabilities = ["update"] }' in out
    assert items["SMTP credentials"] == "OK"  # what the worker may read is still checked
    assert "transit/" not in root.sys.list_mounted_secrets_engines()["data"]
    assert token not in out and fresh.root_token not in out


def test_setup_with_vault_token_uses_it_at_the_connections_address(fresh, capsys, monkeypatch):
    """The connection holds a worker's token; the administrator's VAULT_TOKEN creates, and is never printed."""
    _put_smtp_secret(fresh)
    root = fresh.client()
    root.sys.create_or_update_policy(name="worker", policy='path "secret/data/*" { capabilities = ["read"] }\n')
    worker = root.auth.token.create(policies=["worker"], ttl="1h")["auth"]["client_token"]
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_DEFAULT", json.dumps(dict(fresh.connection_uri(), password=worker)))
    monkeypatch.setenv("VAULT_TOKEN", fresh.root_token)

    code, out = _setup(capsys, "--transit-key", "reports")

    items = _lines(out)
    assert items["Transit engine at transit/"] == "CREATED" and items["Transit key reports"] == "CREATED"
    assert "token from VAULT_TOKEN" in out
    assert fresh.root_token not in out and worker not in out
    assert code == 1  # the signer is still a TODO


def test_setup_missing_smtp_secret_is_a_todo_with_the_command(fresh, capsys):
    code, out = _setup(capsys)
    assert code == 1
    assert _lines(out)["SMTP credentials"] == "TODO"
    assert "bao kv put -mount=secret smtp/airflow username=… password=…" in out
    assert "vault kv put -mount=secret smtp/airflow" in out
    with pytest.raises(hvac.exceptions.InvalidPath):  # nothing invented
        fresh.client().secrets.kv.v2.read_secret_version(path=SMTP_PATH, raise_on_deleted_version=True)


@pytest.mark.tools
@pytest.mark.smtp
def test_setup_example_keys_are_where_protection_looks(fresh, capsys, smtp_server, monkeypatch):
    """TEST keys from --example-keys sign and encrypt a PGP and an S/MIME message end to end."""
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.pipeline.channel import MailChannel
    from airflow_secure_mail.pipeline.send import send_mail

    smtp_server.reset()
    _put_smtp_secret(fresh, smtp_server.users["airflow"])
    extra = smtp_server.connection_extra(starttls=False, vault_path=SMTP_PATH, from_email="airflow@example.com")
    conn = {"conn_type": "securesmtp", "host": "localhost", "port": smtp_server.port(starttls=False), "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_SECURE_SMTP_DEFAULT", json.dumps(conn))

    code, out = _setup(capsys, "--example-keys", "board@example.com", "cfo@example.com")

    assert code == 0, out
    items = _lines(out)
    assert items["signing keys"] == "CREATED" and items["recipient key board@example.com"] == "CREATED"
    assert "TEST KEYS" in out and "NOT for production" in out
    assert fresh.root_token not in out
    request = MailRequest(
        sender="airflow@example.com", to=("board@example.com", "cfo@example.com"), subject="Q4", text="x"
    )
    for scheme in ("pgp", "smime"):
        send_mail(
            request,
            channel=MailChannel.for_conn(),
            protection=Protection(encrypt=scheme, sign=True, signing_vault_path="mail-signing"),  # type: ignore[arg-type]
        )
    pgp, smime = smtp_server.messages
    assert b"application/pgp-encrypted" in pgp.data
    assert b"application/pkcs7-mime" in smime.data or b"application/x-pkcs7-mime" in smime.data


def test_doctor_fix_runs_setup_then_the_checklist(fresh, capsys):
    from airflow_secure_mail.cli import main

    _put_smtp_secret(fresh)
    code = main(["doctor", "--fix"])
    out = capsys.readouterr().out
    assert "airflow-secure-mail setup: secure_smtp_default" in out
    assert "airflow-secure-mail doctor: secure_smtp_default" in out
    assert _lines(out)["Transit key mail-archive"] == "CREATED"
    assert code == 1  # the relay smtp.example.com is not reachable here: the live check fails


def test_setup_and_doctor_refuse_a_vault_connection(fresh, capsys):
    from airflow_secure_mail.cli import main

    for command in (["doctor"], ["setup"], ["doctor", "--fix"]):
        assert main([*command, "--conn-id", "vault_default"]) == 2
        out = capsys.readouterr().out
        assert "connection 'vault_default' is a 'vault' connection, not 'securesmtp'" in out
        assert "--conn-id <a securesmtp connection>" in out
        assert "remove" not in out and fresh.root_token not in out
