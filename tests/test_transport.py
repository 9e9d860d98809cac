"""Issue 3: hardened transport against real and deliberately broken servers on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from email.message import EmailMessage

import pytest

from airflow_secure_mail.errors import (
    ConfigurationError,
    DeliveryError,
    SmtpAuthError,
    TransportSecurityError,
)
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.mail.outgoing import Outgoing
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.testing.smtp import SmtpCatcher
from tests.helpers import audit_paths
from tests.helpers import plain_message as _message


def _send(api: str, hook: SecureSmtpHook, msg: EmailMessage | bytes, **kw):
    if api == "async":
        return asyncio.run(hook.asend(msg, **kw))
    return hook.send(msg, **kw)


@pytest.fixture(params=["sync", "async"])
def api(request):
    return request.param


@pytest.fixture
def server_factory(mail_env, ca):
    started: list[SmtpCatcher] = []

    def make(**kw) -> SmtpCatcher:
        catcher = SmtpCatcher(kw.pop("ca", ca), users={"airflow": mail_env.password}, **kw).start()
        started.append(catcher)
        return catcher

    yield make
    for catcher in started:
        catcher.stop()


# -- TLS refusals: nothing authenticated, nothing sent --------------------------------------------


def test_starttls_missing_refuses_before_auth(mail_env, server_factory, api):
    broken = server_factory(offer_starttls=False)
    mail_env.set_smtp_conn(starttls=True, port=broken.starttls_port)
    with pytest.raises(TransportSecurityError, match="does not offer STARTTLS"):
        _send(api, SecureSmtpHook(), _message())
    assert broken.auth_attempts == [] and broken.messages == []


def test_starttls_refused_by_server_refuses_before_auth(mail_env, server_factory, api):
    server = server_factory()
    server.script.refuse_starttls = True
    mail_env.set_smtp_conn(starttls=True, port=server.starttls_port)
    with pytest.raises(TransportSecurityError, match="refused STARTTLS"):
        _send(api, SecureSmtpHook(), _message())
    assert server.auth_attempts == [] and server.messages == []


def test_wrong_host_name_refused_before_auth(mail_env, server_factory, ca):
    server = server_factory(server_context=ca.server_context("mail.example.org"))
    mail_env.set_smtp_conn(port=server.tls_port)
    with pytest.raises(TransportSecurityError, match="failed verification"):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == [] and server.messages == []


def test_expired_certificate_refused_before_auth(mail_env, server_factory, ca):
    now = dt.datetime.now(dt.UTC)
    ctx = ca.server_context(not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    server = server_factory(server_context=ctx)
    mail_env.set_smtp_conn(starttls=True, port=server.starttls_port)
    with pytest.raises(TransportSecurityError, match="expired"):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == [] and server.messages == []


def test_old_tls_only_server_refused_before_auth(mail_env, server_factory, ca):
    server = server_factory(server_context=ca.server_context(max_version=ssl.TLSVersion.TLSv1_1))
    mail_env.set_smtp_conn(starttls=True, port=server.starttls_port)
    with pytest.raises(TransportSecurityError, match="TLS handshake"):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == [] and server.messages == []


def test_tls13_minimum_is_enforced(mail_env, server_factory, ca):
    server = server_factory(server_context=ca.server_context(max_version=ssl.TLSVersion.TLSv1_2))
    mail_env.set_smtp_conn(port=server.tls_port, min_tls_version="TLSv1.3")
    with pytest.raises(
        TransportSecurityError,
        match=r"TLS handshake with localhost:\d+ was aborted by the server; it must support TLSv1.3 or newer",
    ):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == []


def test_plaintext_for_non_loopback_host_is_refused(mail_env):
    mail_env.set_smtp_conn(host="smtp.example.com", port=25, security="none")
    with pytest.raises(ConfigurationError, match="plaintext is allowed only on loopback"):
        SecureSmtpHook().send(_message())


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


# -- transient failures: retried on a fresh connection --------------------------------------------


def test_421_at_greeting_then_success(mail_env, api):
    mail_env.smtp.script.greeting_failures = 1
    receipt = _send(api, SecureSmtpHook(), _message())
    assert receipt.attempts == 2
    assert mail_env.smtp.connections == 2
    assert len(mail_env.smtp.messages) == 1


def test_451_after_data_then_success_on_new_connection(mail_env, api):
    mail_env.smtp.script.data_replies = ["451 4.3.0 try again later"]
    receipt = _send(api, SecureSmtpHook(), _message())
    assert receipt.attempts == 2
    assert mail_env.smtp.connections == 2
    assert len(mail_env.smtp.messages) == 1


def test_dropped_connection_mid_data_is_retried(mail_env):
    mail_env.smtp.script.drop_in_data = 1
    receipt = SecureSmtpHook().send(_message())
    assert receipt.attempts == 2
    assert len(mail_env.smtp.messages) == 1


def test_persistent_transient_failure_gives_up_after_retries(mail_env):
    mail_env.smtp.script.data_replies = ["451 4.3.0 try again later"] * 10
    mail_env.set_smtp_conn(retries=2)
    with pytest.raises(DeliveryError) as info:
        SecureSmtpHook().send(_message())
    assert info.value.transient and not info.value.throttled and info.value.code == 451
    assert mail_env.smtp.connections == 3 and mail_env.smtp.messages == []


def test_busy_greetings_are_throttling_retried_with_backoff_until_the_deadline(mail_env):
    """A 421 greeting (too busy) is the relay asking us to slow down: not a failure that uses up ``retries``."""
    mail_env.smtp.script.greeting_failures = 1000
    mail_env.set_smtp_conn(retries=2, retry_backoff=1.0, deadline=4)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        SecureSmtpHook().send(_message())
    assert time.monotonic() - started < 4 + 2
    assert info.value.throttled and info.value.transient and info.value.code == 421
    assert "the relay was still throttling when the deadline of 4s ran out" in str(info.value)
    # Connects at 0 s, then after pauses of 1-2 s and 2-3 s (the next pause ends after the deadline).
    assert 2 <= mail_env.smtp.connections <= 4 and mail_env.smtp.messages == []


def test_552_is_permanent_and_not_retried(mail_env, api):
    mail_env.smtp.script.data_replies = ["552 5.3.4 message too big for policy"]
    with pytest.raises(DeliveryError) as info:
        _send(api, SecureSmtpHook(), _message())
    assert info.value.code == 552 and not info.value.transient
    assert mail_env.smtp.connections == 1 and mail_env.smtp.messages == []


def test_server_size_limit_checked_before_data(mail_env, server_factory):
    server = server_factory(data_size_limit=2000)
    mail_env.set_smtp_conn(port=server.tls_port)
    msg = _message()
    msg.set_content("x" * 5000)
    with pytest.raises(DeliveryError, match=r"accepts at most 2000 \(SIZE\)"):
        SecureSmtpHook().send(msg)
    assert server.messages == []


def test_one_recipient_of_three_refused(mail_env, api):
    mail_env.smtp.script.rcpt_replies = {"bad@example.com": "550 5.1.1 no such user"}
    msg = _message("a@example.com", "bad@example.com", "c@example.com")
    with pytest.raises(DeliveryError, match=r"1 of 3 recipients refused: bad@example.com \(550\)") as info:
        _send(api, SecureSmtpHook(), msg)
    assert info.value.refused == {"bad@example.com": (550, "5.1.1 no such user")}
    assert mail_env.smtp.messages[0].rcpt_tos == ["a@example.com", "c@example.com"]
    receipt = _send(api, SecureSmtpHook(), msg, allow_partial=True)
    assert receipt.accepted == ("a@example.com", "c@example.com")
    assert set(receipt.refused) == {"bad@example.com"}


def test_every_recipient_refused_names_no_address_but_keeps_the_details(mail_env):
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.pipeline.send import send_mail

    mail_env.smtp.script.rcpt_replies = {
        "a@example.com": "550 5.1.1 no such user",
        "hidden@example.com": "550 5.1.1 no such user",
    }
    request = MailRequest(sender="airflow@example.com", to=("a@example.com",), bcc=("hidden@example.com",), subject="s")
    with pytest.raises(DeliveryError) as info:
        send_mail(request, channel=MailChannel.for_conn())
    assert str(info.value) == "every recipient was refused: 2 recipient(s), SMTP code(s) 550"
    assert set(info.value.refused) == {"a@example.com", "hidden@example.com"}
    assert mail_env.smtp.messages == []


# -- authentication and Vault -------------------------------------------------------------------


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


def test_auth_is_plain_or_login_only_over_tls(mail_env):
    SecureSmtpHook().send(_message())
    assert [(a.mechanism, a.tls) for a in mail_env.smtp.auth_attempts] == [("PLAIN", True)]


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
    with pytest.raises(VaultSecretError, match="no secret at Vault path 'secret/smtp/does-not-exist'"):
        SecureSmtpHook().send(_message())
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


# -- OAuth2 ------------------------------------------------------------------------------------


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


# -- connection test -----------------------------------------------------------------------------


def test_connection_test_reports_tls_and_sends_nothing(mail_env):
    ok, detail = SecureSmtpHook().test_connection()
    assert ok
    assert "TLSv1.3" in detail and "AUTH LOGIN,OAUTHBEARER,PLAIN,XOAUTH2" in detail and "authenticated" in detail
    assert mail_env.smtp.messages == []


def test_connection_test_warns_on_expiring_certificate(mail_env, server_factory, ca):
    now = dt.datetime.now(dt.UTC)
    server = server_factory(
        server_context=ca.server_context(not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=5))
    )
    mail_env.set_smtp_conn(port=server.tls_port)
    ok, detail = SecureSmtpHook().test_connection()
    assert ok and "WARNING: renew soon" in detail


# -- doctor and canaries -----------------------------------------------------------------------


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


def test_canary_secrets_never_leak_at_any_failure_stage(mail_env, server_factory, ca, caplog, capfd):
    """Unique secrets in Vault; failures forced at every stage; no canary anywhere we can see."""
    import logging
    import secrets

    from airflow_secure_mail.errors import SecureMailError
    from airflow_secure_mail.testing.smtp import TestCA

    caplog.set_level(logging.DEBUG)
    canary = "CANARY-" + secrets.token_hex(12)
    mail_env.rotate(canary)
    errors: list[str] = []

    def attempt(**conn):
        mail_env.set_smtp_conn(**conn)
        try:
            SecureSmtpHook().send(_message())
        except SecureMailError as exc:
            errors.append(f"{exc!s} {exc!r} {exc.__cause__!r} {exc.__context__!r}")

    mail_env.smtp.users["airflow"] = "server-expects-other"  # 535 twice
    attempt()
    mail_env.smtp.users["airflow"] = canary
    rogue = server_factory(ca=TestCA())  # TLS failure
    attempt(port=rogue.tls_port)
    mail_env.smtp.script.data_replies = ["554 5.7.1 rejected"]  # delivery failure
    attempt()
    mail_env.smtp.script.data_replies = ["451 4.3.0 try again later"] * 2  # transient exhaustion
    attempt(retries=1)
    mail_env.smtp.script.greeting_failures = 1000  # a relay throttling at the greeting until the deadline
    attempt(deadline=2, retry_backoff=0.5)
    mail_env.smtp.script.greeting_failures = 0
    attempt(vault_path="smtp/missing")  # Vault failure
    assert len(errors) == 6
    out, err = capfd.readouterr()
    for text in [*errors, caplog.text, out, err]:
        assert canary not in text
        assert mail_env.bao.root_token not in text


def test_vault_token_is_renewed_before_it_expires(mail_env, monkeypatch):
    import json

    from airflow_secure_mail.vault import VaultSecrets

    policy = 'path "secret/data/smtp/*" { capabilities = ["read"] }'
    role_id, secret_id = mail_env.bao.approle("airflow-renew", policy, token_ttl="50s")
    conn = {
        "conn_type": "vault",
        "host": "127.0.0.1",
        "port": mail_env.bao.port,
        "login": role_id,
        "password": secret_id,
        "extra": {"auth_type": "approle", "use_tls": False},
    }
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_RENEW", json.dumps(conn))
    before = len(mail_env.bao.audit_requests())
    vault = VaultSecrets("vault_renew", cache_ttl=0)
    vault.read(mail_env.secret_path)  # login + lookup: 50 s left, already inside the 60 s renewal margin
    token = vault.client.token
    paths = audit_paths(mail_env.bao, before)
    assert "auth/token/renew-self" in paths
    assert vault.client.token == token  # renewed, not replaced


def test_mutual_tls_with_client_certificate_from_vault(mail_env, server_factory, ca):
    from airflow_secure_mail.errors import SecureMailError

    server = server_factory(server_context=ca.requiring_client_cert(ca.server_context()))
    cert, key = ca.client_pair()
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(path="smtp/mtls", secret={"cert": cert, "key": key})
    mail_env.set_smtp_conn(port=server.tls_port)
    with pytest.raises(SecureMailError, match=r"cannot connect to localhost:\d+ \(SMTPConnectError\)"):
        SecureSmtpHook().send(_message())
    assert server.auth_attempts == [] and server.messages == []
    mail_env.set_smtp_conn(
        port=server.tls_port, client_cert="vault:smtp/mtls#cert", client_key="vault:smtp/mtls#key", retries=0
    )
    SecureSmtpHook().send(_message())
    assert len(server.messages) == 1


def test_policy_defaults_come_from_the_connection(mail_env):
    from airflow_secure_mail.errors import PolicyViolation
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.pipeline.send import send_mail

    mail_env.set_smtp_conn(policy={"allowed_recipient_domains": ["example.org"], "max_recipients": 5})
    request = MailRequest(sender="airflow@example.com", to=("ops@example.com",), subject="s", text="b")
    with pytest.raises(PolicyViolation, match="allowed_recipient_domains"):
        send_mail(request, channel=MailChannel.for_conn())
    assert mail_env.smtp.connections == 0


def test_jwt_auth_with_a_locally_signed_token(mail_env, monkeypatch, tmp_path):
    """JWT login for real: OpenBao trusts a key made here; the token file is what Kubernetes/CI would mount."""
    import json
    import time

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


def test_stuck_server_times_out_instead_of_hanging(mail_env):
    """A server that accepts the TCP connection and never says a word."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    try:
        mail_env.set_smtp_conn(port=listener.getsockname()[1], timeout=1, retries=1, deadline=10)
        start = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            SecureSmtpHook().send(_message())
        assert time.monotonic() - start < 8
        assert info.value.transient
    finally:
        listener.close()


def test_send_many_spreads_over_a_bounded_number_of_sessions(mail_env):
    messages = [
        Outgoing("airflow@example.com", (f"r{n}@example.com",), b"Subject: n\r\n\r\nbody\r\n") for n in range(10)
    ]
    receipts = SecureSmtpHook().send_many(messages, concurrency=3)
    assert [r.accepted for r in receipts] == [(f"r{n}@example.com",) for n in range(10)]
    assert len(mail_env.smtp.messages) == 10
    assert 1 <= mail_env.smtp.connections <= 3


def test_connection_test_reports_failure_without_raising(mail_env, server_factory):
    broken = server_factory(offer_starttls=False)
    mail_env.set_smtp_conn(starttls=True, port=broken.starttls_port)
    ok, detail = SecureSmtpHook().test_connection()
    assert not ok and "does not offer STARTTLS" in detail


# -- one SSL context per TLS policy and certificate material ---------------------------------------


@pytest.fixture
def context_builds(monkeypatch):
    """How many SSL contexts were built (the real ``TLSPolicy.ssl_context`` still runs)."""
    from airflow_secure_mail.transport.tls import TLSPolicy

    builds: list[str | None] = []
    real = TLSPolicy.ssl_context

    def counting(self):
        builds.append(self.ca_cert)
        return real(self)

    monkeypatch.setattr(TLSPolicy, "ssl_context", counting)
    return builds


def test_sessions_of_one_connection_share_one_ssl_context(mail_env, context_builds, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(mail_env.smtp.ca.pem)
    mail_env.set_smtp_conn(ca_cert=str(ca))
    hook = SecureSmtpHook()
    hook.send(_message())
    hook.send(_message())
    SecureSmtpHook().send_many([_message(f"r{n}@example.com") for n in range(6)], concurrency=3)
    assert len(mail_env.smtp.messages) == 8 and mail_env.smtp.connections >= 3
    assert context_builds == [str(ca)]


def test_a_rewritten_ca_file_gives_a_new_ssl_context(mail_env, context_builds, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(mail_env.smtp.ca.pem)
    mail_env.set_smtp_conn(ca_cert=str(ca))
    SecureSmtpHook().send(_message())
    ca.write_text(mail_env.smtp.ca.pem + mail_env.smtp.ca.pem)  # rotation: a bundle with the new CA beside
    SecureSmtpHook().send(_message())
    SecureSmtpHook().send(_message())
    assert context_builds == [str(ca), str(ca)] and len(mail_env.smtp.messages) == 3


def test_new_pem_text_gives_a_new_ssl_context(mail_env, context_builds):
    SecureSmtpHook().send(_message())
    rotated = (mail_env.smtp.ca.pem + mail_env.smtp.ca.pem).strip()  # a bundle: the new CA beside the old
    mail_env.set_smtp_conn(ca_cert=rotated)
    SecureSmtpHook().send(_message())
    SecureSmtpHook().send(_message())
    assert context_builds[-1] == rotated and context_builds.count(rotated) == 1
    assert len(mail_env.smtp.messages) == 3
