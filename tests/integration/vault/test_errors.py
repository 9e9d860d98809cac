"""Vault errors that say what to fix, against a real OpenBao: Transit engine or key missing, a KV path written
with its mount, a KV mount that does not exist, a TLS connection to a plain-HTTP Vault."""

from __future__ import annotations

import json
import secrets

import pytest

from airflow_secure_mail.errors import SmtpAuthError, VaultSecretError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.mail.compose import MailRequest
from airflow_secure_mail.mail.protect import Protection
from airflow_secure_mail.pipeline.channel import MailChannel
from tests.helpers import plain_message


def _request() -> MailRequest:
    return MailRequest(sender="airflow@example.com", to=("ops@example.com",), subject="s", text="x")


def _send_archived(tmp_path, key: str, mount: str = "transit") -> None:
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.pipeline.send import send_mail

    archive = MailArchive(f"file://{tmp_path}/a", transit_key=key, transit_mount=mount)
    send_mail(_request(), channel=MailChannel.for_conn(), archive=archive)


# -- Transit: engine not enabled, key missing (item 4) -------------------------------------------


def test_archive_sealed_with_transit_not_enabled_says_enable_it_and_create_the_key(mail_env, tmp_path):
    mount = "transit-" + secrets.token_hex(3)  # never enabled on the dev server
    with pytest.raises(VaultSecretError) as info:
        _send_archived(tmp_path, "mail-archive", mount)
    assert str(info.value) == (
        f"Vault Transit engine is not enabled at '{mount}/' (needed for key 'mail-archive'): run "
        f"`bao secrets enable -path={mount} transit` and `bao write -f {mount}/keys/mail-archive type=aes256-gcm96`,"
        " or `airflow-secure-mail setup`."
    )
    assert info.value.path == f"{mount}/datakey/mail-archive"
    assert mail_env.smtp.connections == 0


def test_transit_not_enabled_at_the_default_mount_names_the_short_command(mail_env):
    """The default mount gets `bao secrets enable transit`; asked of a Vault without the engine."""
    from airflow_secure_mail.testing.openbao import OpenBaoDevServer
    from airflow_secure_mail.vault import vault_for

    with OpenBaoDevServer() as bare:
        bare.client().sys.disable_secrets_engine("transit")
        mail_env.monkeypatch.setenv("AIRFLOW_CONN_VAULT_BARE", json.dumps(bare.connection_uri()))
        with pytest.raises(VaultSecretError) as info:
            vault_for("vault_bare").transit_data_key("mail-archive")
    assert str(info.value) == (
        "Vault Transit engine is not enabled at 'transit/' (needed for key 'mail-archive'): run "
        "`bao secrets enable transit` and `bao write -f transit/keys/mail-archive type=aes256-gcm96`, "
        "or `airflow-secure-mail setup`."
    )


def test_archive_sealed_with_a_missing_transit_key_says_create_the_key(mail_env, tmp_path):
    key = "mail-archive-" + secrets.token_hex(3)
    with pytest.raises(VaultSecretError) as info:
        _send_archived(tmp_path, key)
    assert str(info.value) == (
        f"Vault Transit key '{key}' not found at 'transit/': run "
        f"`bao write -f transit/keys/{key} type=aes256-gcm96`, or `airflow-secure-mail setup`."
    )
    assert mail_env.smtp.connections == 0


def test_unwrap_from_a_mount_without_transit_says_which_vault_to_point_at(mail_env):
    from airflow_secure_mail.vault import vault_for

    mount = "transit-" + secrets.token_hex(3)
    with pytest.raises(VaultSecretError) as info:
        vault_for().transit_unwrap("mail-archive", "vault:v1:AAAA", mount=mount)
    assert str(info.value) == (
        f"Vault Transit engine is not enabled at '{mount}/', so key 'mail-archive' cannot unwrap this record: "
        "point the archive's vault connection at the Vault that holds the key (or restore that key there)."
    )


# -- KV: a missing signing key secret, a mount that does not exist (item 4) ----------------------


def test_missing_signing_secret_names_the_path_under_its_mount(mail_env):
    from airflow_secure_mail.pipeline.send import send_mail

    path = "mail-signing-" + secrets.token_hex(3)
    with pytest.raises(VaultSecretError) as info:
        send_mail(_request(), channel=MailChannel.for_conn(), protection=Protection(sign=True, signing_vault_path=path))
    assert str(info.value) == (
        f"no secret at '{path}' under mount 'secret': write it there first "
        f"(`bao kv put -mount=secret {path} pgp_private_key=… pgp_passphrase=…`)."
    )
    assert mail_env.smtp.connections == 0


def test_missing_secret_names_the_fields_its_reader_needs(mail_env):
    from airflow_secure_mail.vault import vault_for

    path = "mail-signing-" + secrets.token_hex(3)
    with pytest.raises(VaultSecretError) as info:
        vault_for().read(path, setting="signing_vault_path", fields=("pgp_private_key", "pgp_passphrase"))
    assert str(info.value) == (
        f"no secret at '{path}' under mount 'secret': write it there first "
        f"(`bao kv put -mount=secret {path} pgp_private_key=… pgp_passphrase=…`)."
    )


def test_kv_mount_that_does_not_exist_says_set_vault_mount(mail_env):
    mount = "kv-" + secrets.token_hex(3)
    mail_env.set_smtp_conn(vault_mount=mount)
    with pytest.raises(VaultSecretError) as info:
        SecureSmtpHook().send(plain_message())
    assert str(info.value) == (
        f"Vault has no secrets engine mounted at '{mount}/' (reading '{mail_env.secret_path}'): set vault_mount to "
        f"the KV mount that holds it, or enable one (`bao secrets enable -path={mount} kv-v2`)."
    )
    assert mail_env.smtp.connections == 0


# -- KV: a path written with its mount (item 12) --------------------------------------------------


@pytest.mark.parametrize("prefix", ["secret/", "secret/data/"])
def test_vault_path_that_starts_with_the_mount_says_it_is_relative(mail_env, prefix):
    mail_env.set_smtp_conn(vault_path=prefix + mail_env.secret_path)
    with pytest.raises(VaultSecretError) as info:
        SecureSmtpHook().send(plain_message())
    assert str(info.value) == (
        f"no secret at '{prefix}{mail_env.secret_path}' under mount 'secret': vault_path is relative to the mount: "
        f"use '{mail_env.secret_path}'."
    )
    assert info.value.missing and mail_env.smtp.connections == 0


def test_vault_path_starting_with_the_mount_reads_what_is_stored_there_not_another_secret(mail_env):
    """Relative to the mount, always: a secret really stored at secret/secret/... is the one read."""
    nested = "secret/" + mail_env.secret_path
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(
        path=nested, secret={"username": "nested-user", "password": secrets.token_urlsafe(12)}
    )
    mail_env.set_smtp_conn(vault_path=nested, retries=0)
    with pytest.raises(SmtpAuthError):
        SecureSmtpHook().send(plain_message())
    assert {(a.username, a.ok) for a in mail_env.smtp.auth_attempts} == {("nested-user", False)}


# -- TLS to a plain-HTTP Vault (item 12) -----------------------------------------------------------


def _tls_vault_conn(mail_env, conn_id: str, port: int, **extra: object) -> None:
    conn = {
        "conn_type": "vault",
        "host": "127.0.0.1",
        "port": port,
        "password": mail_env.bao.root_token,
        "extra": {"auth_type": "token", **extra},
    }
    mail_env.monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    mail_env.set_smtp_conn(vault_conn_id=conn_id)


def test_tls_vault_connection_to_plain_http_vault_says_untick_use_tls(mail_env):
    """use_tls as the UI form saves it by default (ticked)."""
    _tls_vault_conn(mail_env, "vault_tls_on", mail_env.bao.port, use_tls=True)
    with pytest.raises(VaultSecretError) as info:
        SecureSmtpHook().send(plain_message())
    assert str(info.value) == (
        f"Vault at 127.0.0.1:{mail_env.bao.port} answered plain HTTP to a TLS handshake: the vault connection "
        "'vault_tls_on' has use_tls on; untick it (only on loopback) or give Vault a certificate."
    )
    assert mail_env.bao.root_token not in str(info.value)
    assert mail_env.smtp.connections == 0


def test_tls_vault_connection_to_a_port_that_is_not_http_is_not_called_plain_http(mail_env):
    """The catcher's STARTTLS port greets with 220 (not TLS, not HTTP): no claim about HTTP is made."""
    _tls_vault_conn(mail_env, "vault_on_smtp", mail_env.smtp.starttls_port, use_tls=True)
    with pytest.raises(VaultSecretError) as info:
        SecureSmtpHook().send(plain_message())
    assert "plain HTTP" not in str(info.value)
    assert str(info.value) == (
        f"cannot reach Vault for 'secret/{mail_env.secret_path}' (SSLError, after retries): check the vault "
        "connection's host and that Vault is up."
    )


def test_recipient_keys_under_a_mount_that_does_not_exist_is_an_error_not_a_missing_key(mail_env):
    """A wrong mount is not "this recipient has no key": dropping every recipient for it would hide the fix."""
    from airflow_secure_mail.pipeline.send import send_mail

    mount = "kv-" + secrets.token_hex(3)
    protection = Protection(encrypt="pgp", vault_mount=mount, missing_key="drop_recipient")
    with pytest.raises(VaultSecretError) as info:
        send_mail(_request(), channel=MailChannel.for_conn(), protection=protection)
    assert str(info.value) == (
        f"Vault has no secrets engine mounted at '{mount}/' (reading 'mail-keys/ops@example.com'): set vault_mount "
        f"to the KV mount that holds it, or enable one (`bao secrets enable -path={mount} kv-v2`)."
    )
    assert not info.value.missing and mail_env.smtp.connections == 0
