"""The connection's credentials: from Vault (KV, AppRole, JWT, tokens renewed, rotation), OAuth2, never stored in the connection."""

from __future__ import annotations

import time

import pytest

from airflow_secure_mail.errors import (
    ConfigurationError,
    SmtpAuthError,
)
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from tests.helpers import audit_paths
from tests.helpers import plain_message as _message
from tests.integration.conftest import send_with as _send


def test_password_in_connection_is_refused(mail_env, monkeypatch):
    import json

    conn = {"conn_type": "securesmtp", "host": "localhost", "port": 465, "login": "u", "password": "p" * 8}
    monkeypatch.setenv("AIRFLOW_CONN_LEAKY", json.dumps(conn))
    with pytest.raises(ConfigurationError, match="put the credentials in Vault"):
        SecureSmtpHook("leaky").send(_message())


def test_ca_cert_from_vault_reference(mail_env):
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(path="smtp/ca", secret={"pem": mail_env.smtp.ca.pem})
    mail_env.set_smtp_conn(ca_cert="vault:smtp/ca#pem")
    SecureSmtpHook().send(_message())
    assert len(mail_env.smtp.messages) == 1


def test_535_after_rotation_succeeds_after_one_reread(mail_env, api):
    hook = SecureSmtpHook()
    _send(api, hook, _message())
    mail_env.smtp.users["airflow"] = "new-" + "z" * 20
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(
        path=mail_env.secret_path, secret={"username": "airflow", "password": "new-" + "z" * 20}
    )
    _send(api, hook, _message())
    assert [a.ok for a in mail_env.smtp.auth_attempts] == [True, False, True]


def test_persistent_535_fails_without_looping(mail_env, api):
    mail_env.smtp.users["airflow"] = "not-what-vault-holds-" + "q" * 8
    with pytest.raises(SmtpAuthError, match=r"rejected the credentials \(535\)"):
        _send(api, SecureSmtpHook(), _message())
    assert len(mail_env.smtp.auth_attempts) == 2
    assert mail_env.smtp.messages == []
    mail_env.smtp.users["airflow"] = mail_env.password


def test_sealed_vault_opens_no_smtp_connection(mail_env, monkeypatch):
    import json

    from airflow_secure_mail.errors import VaultSecretError
    from airflow_secure_mail.testing.openbao import OpenBaoDevServer

    with OpenBaoDevServer() as sealed:
        sealed.client().secrets.kv.v2.create_or_update_secret(
            path=mail_env.secret_path, secret={"username": "airflow", "password": mail_env.password}
        )
        sealed.client().sys.seal()
        monkeypatch.setenv("AIRFLOW_CONN_VAULT_SEALED", json.dumps(sealed.connection_uri()))
        mail_env.set_smtp_conn(vault_conn_id="vault_sealed")
        with pytest.raises(VaultSecretError, match="sealed") as info:
            SecureSmtpHook().send(_message())
    assert mail_env.secret_path in str(info.value)
    assert mail_env.smtp.connections == 0


def test_missing_vault_path_names_the_path(mail_env):
    from airflow_secure_mail.errors import VaultSecretError

    mail_env.set_smtp_conn(vault_path="smtp/does-not-exist")
    with pytest.raises(VaultSecretError) as info:
        SecureSmtpHook().send(_message())
    assert str(info.value) == (
        "no secret at 'smtp/does-not-exist' under mount 'secret': write it there first "
        "(`bao kv put -mount=secret smtp/does-not-exist username=… password=…`)."
    )
    assert mail_env.smtp.connections == 0


def _approle_connection(mail_env, monkeypatch, conn_id: str, **role) -> None:
    """A vault connection that logs in with a fresh AppRole allowed to read the SMTP secrets."""
    import json

    policy = 'path "secret/data/smtp/*" { capabilities = ["read"] }'
    role_id, secret_id = mail_env.bao.approle(conn_id, policy, **role)
    conn = {
        "conn_type": "vault",
        "host": "127.0.0.1",
        "port": mail_env.bao.port,
        "login": role_id,
        "password": secret_id,
        "extra": {"auth_type": "approle", "use_tls": False},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def test_approle_relogin_after_token_revoked(mail_env, monkeypatch):
    from airflow_secure_mail.vault import VaultSecrets

    _approle_connection(mail_env, monkeypatch, "vault_approle")
    vault = VaultSecrets("vault_approle", cache_ttl=0)
    assert vault.read(mail_env.secret_path)["username"] == "airflow"
    first_token = vault.client.token
    mail_env.bao.client().auth.token.revoke(first_token)
    assert vault.read(mail_env.secret_path)["username"] == "airflow"
    assert vault.client.token != first_token


def test_kv_v1_and_pinned_version(mail_env, monkeypatch):
    from airflow_secure_mail.vault import VaultSecrets

    client = mail_env.bao.client()
    if "kv1/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    client.secrets.kv.v1.create_or_update_secret(path="smtp", secret={"username": "v1user"}, mount_point="kv1")
    vault = VaultSecrets(cache_ttl=0)
    assert vault.read("smtp", mount="kv1", kv_version=1) == {"username": "v1user"}
    versions = client.secrets.kv.v2.read_secret_metadata(path=mail_env.secret_path)["data"]["current_version"]
    client.secrets.kv.v2.create_or_update_secret(path=mail_env.secret_path, secret={"username": "later"})
    assert vault.read(mail_env.secret_path, version=versions)["username"] == "airflow"
    assert vault.read(mail_env.secret_path)["username"] == "later"


def test_burst_of_reads_hits_vault_once(mail_env, monkeypatch):
    from airflow_secure_mail.vault import VaultSecrets

    vault = VaultSecrets()
    calls = []
    original = vault._call

    def counting(what, op):
        calls.append(what)
        return original(what, op)

    monkeypatch.setattr(vault, "_call", counting)
    for _ in range(20):
        vault.read(mail_env.secret_path)
    assert len(calls) == 1


def test_plain_http_vault_to_remote_host_refused(mail_env, monkeypatch):
    import json

    from airflow_secure_mail.vault import VaultSecrets

    conn = {
        "conn_type": "vault",
        "host": "vault.example.com",
        "port": 8200,
        "password": "tok-abcdef",
        "extra": {"auth_type": "token", "use_tls": False},
    }
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_REMOTE", json.dumps(conn))
    with pytest.raises(ConfigurationError, match="set extra use_tls=true"):
        VaultSecrets("vault_remote").read("x")


def test_vault_redirect_to_other_origin_is_not_followed(mail_env, monkeypatch):
    """A loopback 'Vault' that redirects to another port: the token must not follow."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from airflow_secure_mail.errors import VaultSecretError
    from airflow_secure_mail.vault import VaultSecrets

    seen_tokens: list[str | None] = []

    class Thief(BaseHTTPRequestHandler):
        def do_GET(self):
            seen_tokens.append(self.headers.get("X-Vault-Token"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    thief = ThreadingHTTPServer(("127.0.0.1", 0), Thief)

    class Redirector(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{thief.server_address[1]}{self.path}")
            self.end_headers()

        def log_message(self, *a):
            pass

    redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    for srv in (thief, redirector):
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        conn = {
            "conn_type": "vault",
            "host": "127.0.0.1",
            "port": redirector.server_address[1],
            "password": "tok-must-not-leak",
            "extra": {"auth_type": "token", "use_tls": False},
        }
        monkeypatch.setenv("AIRFLOW_CONN_VAULT_REDIRECT", json.dumps(conn))
        with pytest.raises(VaultSecretError, match="with a redirect; refused so the token stays with its origin"):
            VaultSecrets("vault_redirect", cache_ttl=0).read("smtp/x")
        assert seen_tokens == []
    finally:
        thief.shutdown()
        redirector.shutdown()


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_access_token_from_vault(mail_env, mechanism):
    mail_env.smtp.tokens["airflow"] = "static-token-" + "t" * 12
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(
        path="smtp/oauth-static", secret={"username": "airflow", "access_token": "static-token-" + "t" * 12}
    )
    mail_env.set_smtp_conn(auth=mechanism, vault_path="smtp/oauth-static")
    SecureSmtpHook().send(_message())
    assert [(a.mechanism, a.ok) for a in mail_env.smtp.auth_attempts] == [(mechanism.upper(), True)]
    assert len(mail_env.smtp.messages) == 1


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
def test_oauth_token_endpoint_mode(mail_env, grant):
    from airflow_secure_mail.testing.oauth import TokenEndpoint
    from airflow_secure_mail.transport.oauth import clear_tokens

    clear_tokens()
    endpoint = TokenEndpoint(
        mail_env.smtp, client_id="cid", client_secret="cs-" + "s" * 16, smtp_user="airflow"
    ).start()
    try:
        secret = {"username": "airflow", "client_id": "cid"}
        secret.update(
            {"client_secret": endpoint.client_secret}
            if grant == "client_credentials"
            else {"refresh_token": endpoint.refresh_token}
        )
        mail_env.bao.client().secrets.kv.v2.create_or_update_secret(path="smtp/oauth-client", secret=secret)
        mail_env.set_smtp_conn(auth="xoauth2", vault_path="smtp/oauth-client", oauth_endpoint=endpoint.url)
        hook = SecureSmtpHook()
        hook.send(_message())
        hook.send(_message())
        assert [r["grant_type"] for r in endpoint.requests] == [grant]  # token cached for the second send
        assert [a.ok for a in mail_env.smtp.auth_attempts] == [True, True]
    finally:
        endpoint.stop()
        clear_tokens()


def test_vault_token_is_renewed_before_it_expires(mail_env, monkeypatch):
    from airflow_secure_mail.vault import VaultSecrets

    _approle_connection(mail_env, monkeypatch, "vault_renew", token_ttl="50s")
    before = len(mail_env.bao.audit_requests())
    vault = VaultSecrets("vault_renew", cache_ttl=0)
    vault.read(mail_env.secret_path)  # login + lookup: 50 s left, already inside the 60 s renewal margin
    token = vault.client.token
    paths = audit_paths(mail_env.bao, before)
    assert "auth/token/renew-self" in paths
    assert vault.client.token == token  # renewed, not replaced


def test_jwt_auth_with_a_locally_signed_token(mail_env, monkeypatch, tmp_path):
    """JWT login for real: OpenBao trusts a key made here; the token file is what Kubernetes/CI would mount."""
    import json

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from airflow_secure_mail.vault import VaultSecrets

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    client = mail_env.bao.client()
    if "jwt/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("jwt")
    client.write("auth/jwt/config", jwt_validation_pubkeys=[public_pem], bound_issuer="airflow-tests")
    client.sys.create_or_update_policy(name="jwt-mail", policy='path "secret/data/smtp/*" { capabilities = ["read"] }')
    client.write(
        "auth/jwt/role/airflow-mail",
        role_type="jwt",
        user_claim="sub",
        bound_audiences=["openbao"],
        token_policies=["jwt-mail"],
        token_ttl="5m",
    )
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": "airflow-tests",
            "sub": "airflow-worker",
            "aud": "openbao",
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
        },
        key,
        algorithm="RS256",
    )
    token_file = tmp_path / "token"
    token_file.write_text(token)
    conn = {
        "conn_type": "vault",
        "host": "127.0.0.1",
        "port": mail_env.bao.port,
        "extra": {"auth_type": "jwt", "jwt_role": "airflow-mail", "jwt_token_path": str(token_file), "use_tls": False},
    }
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_JWT", json.dumps(conn))
    assert VaultSecrets("vault_jwt", cache_ttl=0).read(mail_env.secret_path)["username"] == "airflow"
