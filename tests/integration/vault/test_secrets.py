"""VaultSecrets against a real OpenBao, directly and behind a fault-injecting HTTP front end on loopback."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import pytest

from airflow_secure_mail.errors import ConfigurationError, SecureMailError, VaultSecretError
from airflow_secure_mail.hooks.smtp import SecureSmtpHook
from airflow_secure_mail.pipeline.channel import MailChannel
from airflow_secure_mail.testing.faults import Fault, FaultyHttpProxy
from tests.helpers import audit_paths, plain_message


def _vault_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, host: str, port: int | None, token: str, **extra):
    conn = {"conn_type": "vault", "host": host, "password": token, "extra": {"auth_type": "token", **extra}}
    if port:
        conn["port"] = port
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _chain_text(exc: BaseException) -> str:
    return "\n".join(f"{type(e).__name__} {e} {e.args!r}" for e in _chain(exc))


@pytest.fixture
def recorder() -> Iterator[FaultyHttpProxy]:
    """A loopback listener with nothing behind it: it records what reaches it and answers 502."""
    with FaultyHttpProxy() as proxy:
        yield proxy


@pytest.fixture
def faulty(mail_env, monkeypatch) -> Iterator[FaultyHttpProxy]:
    """OpenBao behind a fault injector; the SMTP connection reads its credentials through it, deadline 5 s."""
    with FaultyHttpProxy(upstream=("127.0.0.1", mail_env.bao.port)) as proxy:
        _vault_conn(monkeypatch, "vault_faulty", "127.0.0.1", proxy.port, mail_env.bao.root_token, use_tls=False)
        mail_env.set_smtp_conn(vault_conn_id="vault_faulty", deadline=5, freeze_vault_path="incident/freeze-faulty")
        yield proxy


# -- 1. the address is judged by the parser that connects ---------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0:{port}\\@127.0.0.1",  # urlsplit sees 127.0.0.1, urllib3 connects to 0.0.0.0:{port}
        "0.0.0.0:{port}\\\\@localhost",
        "user@0.0.0.0:{port}",
        "0.0.0.0:{port} ",
        "0.0.0.0:{port}\t",
        "0.0.0.0:{port}/x",
    ],
)
def test_ambiguous_vault_address_is_refused_before_any_request(mail_env, monkeypatch, recorder, host):
    _vault_conn(monkeypatch, "vault_tricky", host.format(port=recorder.port), None, mail_env.bao.root_token)
    mail_env.set_smtp_conn(vault_conn_id="vault_tricky")
    with pytest.raises(ConfigurationError, match="ambiguous address") as info:
        SecureSmtpHook().send(plain_message())
    assert recorder.seen == []
    assert mail_env.smtp.connections == 0
    assert mail_env.bao.root_token not in _chain_text(info.value)


def test_plain_http_to_unspecified_address_is_not_loopback(mail_env, monkeypatch, recorder):
    """0.0.0.0 lands on the loopback listener here, but it names no host: it stands in for a remote Vault."""
    _vault_conn(monkeypatch, "vault_remote", "0.0.0.0", recorder.port, mail_env.bao.root_token, use_tls=False)
    mail_env.set_smtp_conn(vault_conn_id="vault_remote")
    with pytest.raises(ConfigurationError, match="set extra use_tls=true"):
        SecureSmtpHook().send(plain_message())
    assert recorder.seen == []


# -- 2. environment proxies never see the token -------------------------------------------------


def test_environment_proxy_never_sees_the_vault_token(mail_env, monkeypatch, recorder):
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, recorder.url)
    SecureSmtpHook().send(plain_message())
    assert recorder.seen == []
    assert len(mail_env.smtp.messages) == 1


def test_explicit_proxy_on_the_vault_connection_is_used(mail_env, monkeypatch, recorder):
    _vault_conn(
        monkeypatch,
        "vault_proxied",
        "127.0.0.1",
        mail_env.bao.port,
        mail_env.bao.root_token,
        use_tls=False,
        client_kwargs={"proxies": {"http": recorder.url}},
    )
    mail_env.set_smtp_conn(vault_conn_id="vault_proxied")
    with pytest.raises(VaultSecretError):
        SecureSmtpHook().send(plain_message())
    assert recorder.seen and recorder.seen[0].target.startswith(f"http://127.0.0.1:{mail_env.bao.port}/v1/")
    assert mail_env.smtp.connections == 0


# -- 3. transient errors are retried, 4xx are not -----------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=503, body=b'{"errors": ["busy"]}'),
        Fault("status", status=500, body=b'{"errors": ["internal"]}'),
        Fault("status", status=502, body=b"bad gateway", content_type="text/plain"),
        Fault("reset"),
    ],
    ids=["503", "500", "502", "reset"],
)
def test_one_transient_vault_error_is_retried(mail_env, faulty, fault):
    fault.path = mail_env.secret_path
    faulty.add(fault)
    SecureSmtpHook().send(plain_message())
    reads = [r for r in faulty.seen if mail_env.secret_path in r.target]
    assert [r.fault for r in reads] == [fault.kind, None]
    assert len(mail_env.smtp.messages) == 1


def test_vault_4xx_is_not_retried(mail_env, faulty):
    faulty.add(Fault("status", status=400, body=b'{"errors": ["bad request"]}', path=mail_env.secret_path))
    with pytest.raises(VaultSecretError, match=f"secret/{mail_env.secret_path}"):
        SecureSmtpHook().send(plain_message())
    assert len([r for r in faulty.seen if mail_env.secret_path in r.target]) == 1
    assert mail_env.smtp.connections == 0


def test_persistent_vault_outage_gives_up_after_bounded_retries(mail_env, faulty):
    faulty.add(Fault("status", status=503, body=b"{}", path=mail_env.secret_path, times=100))
    with pytest.raises(VaultSecretError, match="sealed or down"):
        SecureSmtpHook().send(plain_message())
    assert len([r for r in faulty.seen if mail_env.secret_path in r.target]) == 4  # 1 + 3 retries
    assert mail_env.smtp.connections == 0


# -- 4. faults end within the deadline ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["hang", "trickle"])
def test_unanswering_vault_ends_within_the_deadline(mail_env, faulty, kind):
    faulty.add(Fault(kind, path=mail_env.secret_path, times=100))
    started = time.monotonic()
    with pytest.raises(SecureMailError, match="within 5s"):
        SecureSmtpHook().send(plain_message())
    elapsed = time.monotonic() - started
    assert elapsed < 5 + 10, f"a {kind} Vault held the send for {elapsed:.0f}s"  # correctness bound, not speed
    assert mail_env.smtp.connections == 0


def test_unanswering_vault_fails_the_connection_test_within_the_deadline(mail_env, faulty):
    faulty.add(Fault("trickle", path=mail_env.secret_path, times=100))
    started = time.monotonic()
    ok, detail = SecureSmtpHook().test_connection()
    assert not ok and "5s" in detail
    assert time.monotonic() - started < 5 + 10


def test_unanswering_transit_is_bounded_by_the_send_deadline(mail_env, faulty, tmp_path, transit_key):
    """Vault calls before delivery (the archive's Transit data key) count against the same deadline."""
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.pipeline.send import send_mail

    faulty.add(Fault("hang", path=f"transit/datakey/plaintext/{transit_key}", times=100))
    archive = MailArchive(f"file://{tmp_path}/a", transit_key=transit_key, vault_conn_id="vault_faulty")
    request = MailRequest(sender="airflow@example.com", to=("ops@example.com",), subject="s", text="x")
    started = time.monotonic()
    with pytest.raises(SecureMailError, match="within 5s"):
        send_mail(request, channel=MailChannel.for_conn(), archive=archive)
    assert time.monotonic() - started < 5 + 10
    assert mail_env.smtp.connections == 0


# -- 5. unexpected replies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "shape"),
    [
        (b"<html><body>Scheduled outage-7731</body></html>", "text/html", "not JSON"),
        (b'{"data": "outage-7731"}', "application/json", "data is str"),
        (b'{"data": {"data": ["outage-7731"]}}', "application/json", "data.data is list"),
        (b"[]", "application/json", "the reply is list"),
    ],
    ids=["html", "data-string", "data-data-list", "json-list"],
)
def test_unexpected_vault_reply_names_the_path_not_the_body(mail_env, faulty, body, content_type, shape):
    faulty.add(Fault("status", status=200, body=body, content_type=content_type, path=mail_env.secret_path))
    with pytest.raises(VaultSecretError, match="unexpected reply") as info:
        SecureSmtpHook().send(plain_message())
    message = str(info.value)
    assert f"secret/{mail_env.secret_path}" in message and shape in message
    assert "outage-7731" not in _chain_text(info.value)
    assert mail_env.smtp.connections == 0


def test_vault_error_bodies_echoing_the_token_stay_out_of_the_exception_chain(mail_env, faulty):
    token = mail_env.bao.root_token
    echo = json.dumps({"errors": [f"internal error for token {token}"]}).encode()
    faulty.add(Fault("status", status=500, body=echo, path=mail_env.secret_path, times=100))
    with pytest.raises(VaultSecretError) as info:
        SecureSmtpHook().send(plain_message())
    assert token not in _chain_text(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None


# -- 6. the secret's fields are checked before connecting ---------------------------------------


@pytest.mark.parametrize(
    ("secret", "field", "kind"),
    [
        ({"username": "airflow", "password": 73519046}, "password", "a int"),
        ({"username": "airflow", "password": ""}, "password", "empty"),
        ({"password": "x-canary-91f"}, "username", "missing"),
        ({"username": ["airflow"], "password": "x-canary-91f"}, "username", "a list"),
    ],
)
def test_malformed_secret_field_is_named_before_connecting(mail_env, secret, field, kind):
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(path=mail_env.secret_path, secret=secret)
    with pytest.raises(VaultSecretError) as info:
        SecureSmtpHook().send(plain_message())
    message = str(info.value)
    assert f"field {field!r}" in message and kind in message
    assert "73519046" not in message and "x-canary-91f" not in message
    assert mail_env.smtp.connections == 0


# -- tokens and logins --------------------------------------------------------------------------


def test_revoked_token_error_says_invalid_or_expired(mail_env, monkeypatch):
    from airflow_secure_mail.vault import VaultSecrets

    root = mail_env.bao.client()
    root.sys.create_or_update_policy(name="smtp-read", policy='path "secret/data/smtp/*" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["smtp-read"], ttl="1h")["auth"]["client_token"]
    _vault_conn(monkeypatch, "vault_token", "127.0.0.1", mail_env.bao.port, token, use_tls=False)
    vault = VaultSecrets("vault_token", cache_ttl=0)
    assert vault.read(mail_env.secret_path)["username"] == "airflow"
    root.auth.token.revoke(token)
    with pytest.raises(VaultSecretError, match="invalid or expired") as info:
        vault.read(mail_env.secret_path)
    assert token not in str(info.value)


def test_token_without_read_policy_is_told_to_grant_read(mail_env, monkeypatch):
    from airflow_secure_mail.vault import VaultSecrets

    root = mail_env.bao.client()
    root.sys.create_or_update_policy(name="nothing", policy='path "secret/data/other/*" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["nothing"], ttl="1h")["auth"]["client_token"]
    _vault_conn(monkeypatch, "vault_weak", "127.0.0.1", mail_env.bao.port, token, use_tls=False)
    with pytest.raises(VaultSecretError, match="grant the Airflow role read"):
        VaultSecrets("vault_weak").read(mail_env.secret_path)


def _logins(bao, since: int) -> list[str]:
    return [p for p in audit_paths(bao, since) if p.startswith("auth/") and p.endswith("/login")]


def test_one_vault_login_per_process_shared_by_credentials_certificates_and_transit(
    mail_env, monkeypatch, tmp_path, transit_key
):
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.pipeline.send import send_mail

    bao = mail_env.bao
    root = bao.client()
    root.secrets.kv.v2.create_or_update_secret(path="smtp/ca", secret={"pem": mail_env.smtp.ca.pem})
    policy = (
        'path "secret/data/smtp/*" { capabilities = ["read"] }\n'
        f'path "transit/datakey/plaintext/{transit_key}" {{ capabilities = ["update"] }}\n'
        f'path "transit/decrypt/{transit_key}" {{ capabilities = ["update"] }}\n'
    )
    role_id, secret_id = bao.approle("airflow-once", policy)
    conn = {
        "conn_type": "vault",
        "host": "127.0.0.1",
        "port": bao.port,
        "login": role_id,
        "password": secret_id,
        "extra": {"auth_type": "approle", "use_tls": False},
    }
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_APPROLE_ONCE", json.dumps(conn))
    mail_env.set_smtp_conn(vault_conn_id="vault_approle_once", ca_cert="vault:smtp/ca#pem")
    before = len(bao.audit_requests())
    for n in range(2):  # two tasks' worth of hooks and archives in one process
        archive = MailArchive(f"file://{tmp_path}/a", transit_key=transit_key, vault_conn_id="vault_approle_once")
        request = MailRequest(sender="airflow@example.com", to=(f"r{n}@example.com",), subject=f"s{n}", text="x")
        send_mail(request, channel=MailChannel.for_conn(), archive=archive)
    assert len(mail_env.smtp.messages) == 2
    assert _logins(bao, before) == ["auth/approle/login"]


# -- Vault Agent: the fleet pattern -------------------------------------------------------------


@pytest.mark.parametrize("use_auto_auth_token", ["force", "true"])
def test_mail_through_vault_agent_worker_holds_no_credential_and_never_logs_in(
    mail_env, monkeypatch, tmp_path, use_auto_auth_token, transit_key
):
    """Credentials and the archive's Transit key read through a real ``bao agent``.

    With ``true`` (not ``force``) the agent uses its token only when the request carries none, so this also
    proves the worker sends no token of its own, not even the VAULT_TOKEN in its environment.
    """
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.pipeline.send import send_mail
    from airflow_secure_mail.testing.openbao import OpenBaoAgent

    bao = mail_env.bao
    role = "airflow-agent-" + secrets.token_hex(3)
    policy = (
        'path "secret/data/smtp/*" { capabilities = ["read"] }\n'
        f'path "transit/datakey/plaintext/{transit_key}" {{ capabilities = ["update"] }}\n'
    )
    role_id, secret_id = bao.approle(role, policy)
    monkeypatch.setenv("VAULT_TOKEN", bao.root_token)
    with OpenBaoAgent(bao, role_id, secret_id, use_auto_auth_token=use_auto_auth_token) as agent:
        connection = agent.connection()
        assert "password" not in connection and "login" not in connection
        monkeypatch.setenv("AIRFLOW_CONN_VAULT_AGENT", json.dumps(connection))
        mail_env.set_smtp_conn(vault_conn_id="vault_agent")
        before = len(bao.audit_requests())
        for n in range(2):
            archive = MailArchive(f"file://{tmp_path}/a", transit_key=transit_key, vault_conn_id="vault_agent")
            request = MailRequest(sender="airflow@example.com", to=(f"r{n}@example.com",), subject=f"{n}", text="x")
            send_mail(request, channel=MailChannel.for_conn(), archive=archive)
        seen = bao.audit_requests()[before:]
    assert len(mail_env.smtp.messages) == 2
    assert _logins(bao, before) == []
    used = [
        e
        for e in seen
        if e["request"]["path"] in (f"secret/data/{mail_env.secret_path}", f"transit/datakey/plaintext/{transit_key}")
    ]
    assert {e["request"]["path"].split("/")[0] for e in used} == {"secret", "transit"}
    assert all((e.get("auth") or {}).get("metadata", {}).get("role_name") == role for e in used)


def test_agent_connection_that_stores_a_credential_is_refused(mail_env, monkeypatch):
    from airflow_secure_mail.vault import VaultSecrets

    conn = {"conn_type": "vault", "host": "127.0.0.1", "port": 1, "password": "s.abc", "extra": {"auth_type": "agent"}}
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_AGENT_BAD", json.dumps(conn))
    with pytest.raises(ConfigurationError, match="auth_type agent but stores a login or password"):
        VaultSecrets("vault_agent_bad").read("smtp/x")


# -- one access object per process and connection; a read cache that lasts a batch ---------------


def _reads(bao, since: int, path: str) -> int:
    """How many reads of ``path`` OpenBao's audit log shows since entry ``since`` (writes not counted)."""
    return audit_paths(bao, since, "read").count(path)


def test_vault_for_gives_one_object_per_connection_until_clear_cache():
    from concurrent.futures import ThreadPoolExecutor

    from airflow_secure_mail.vault import VaultSecrets, clear_cache, vault_for

    clear_cache()
    with ThreadPoolExecutor(8) as pool:
        seen = set(map(id, pool.map(lambda _: vault_for("vault_default"), range(64))))
    shared = vault_for()
    assert seen == {id(shared)} and isinstance(shared, VaultSecrets)
    assert shared.vault_conn_id == "vault_default"
    assert vault_for("vault_other") is not shared and vault_for("vault_other").vault_conn_id == "vault_other"
    clear_cache()
    assert vault_for() is not shared


def test_thousand_credential_reads_from_eight_threads_ask_vault_once(mail_env):
    from concurrent.futures import ThreadPoolExecutor

    from airflow_secure_mail.vault import vault_for

    before = len(mail_env.bao.audit_requests())
    with ThreadPoolExecutor(8) as pool:
        users = list(pool.map(lambda _: vault_for().read(mail_env.secret_path)["username"], range(1000)))
    assert users == ["airflow"] * 1000
    assert _reads(mail_env.bao, before, f"secret/data/{mail_env.secret_path}") == 1


def test_fresh_read_bypasses_the_cache_and_refreshes_it_for_the_rotated_password(mail_env):
    from airflow_secure_mail.vault import vault_for

    vault, path = vault_for(), mail_env.secret_path
    old = vault.read(path)["password"]
    before = len(mail_env.bao.audit_requests())
    mail_env.rotate("rotated-" + secrets.token_hex(8))
    assert vault.read(path)["password"] == old  # cached: the batch keeps its credentials
    assert vault.read(path, fresh=True)["password"] == mail_env.password  # what a 535 triggers
    assert [vault.read(path)["password"] for _ in range(100)] == [mail_env.password] * 100
    assert _reads(mail_env.bao, before, f"secret/data/{path}") == 1


def test_absent_path_is_remembered_like_a_secret_and_fresh_finds_it_once_written(mail_env):
    from airflow_secure_mail.vault import vault_for

    vault, path = vault_for(), "mail-keys/nokey-" + secrets.token_hex(3) + "@example.com"
    before = len(mail_env.bao.audit_requests())
    errors = []
    for _ in range(1000):
        with pytest.raises(VaultSecretError) as info:
            vault.read(path)
        errors.append(info.value)
    assert {str(e) for e in errors} == {
        f"no secret at {path!r} under mount 'secret': write it there first (`bao kv put -mount=secret {path} <field>=…`)."
    }
    assert all(e.missing and e.path == f"secret/{path}" for e in errors)
    assert all(e.__context__ is None and e.__cause__ is None for e in errors)
    assert _reads(mail_env.bao, before, f"secret/data/{path}") == 1
    mail_env.bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"pgp_public_key": "k"})
    with pytest.raises(VaultSecretError, match="write it there first"):
        vault.read(path)
    assert vault.read(path, fresh=True) == {"pgp_public_key": "k"}
    assert vault.read(path) == {"pgp_public_key": "k"}
    assert _reads(mail_env.bao, before, f"secret/data/{path}") == 2


def test_cache_ttl_zero_on_the_vault_connection_reads_every_time(mail_env, monkeypatch):
    from airflow_secure_mail.vault import vault_for

    monkeypatch.setenv("AIRFLOW_CONN_VAULT_NOCACHE", json.dumps(mail_env.bao.connection_uri(cache_ttl="0")))
    before = len(mail_env.bao.audit_requests())
    for _ in range(3):
        assert vault_for("vault_nocache").read(mail_env.secret_path)["username"] == "airflow"
    assert _reads(mail_env.bao, before, f"secret/data/{mail_env.secret_path}") == 3


def test_bad_cache_ttl_on_the_vault_connection_is_named(mail_env, monkeypatch):
    from airflow_secure_mail.vault import vault_for

    monkeypatch.setenv("AIRFLOW_CONN_VAULT_BADTTL", json.dumps(mail_env.bao.connection_uri(cache_ttl="soon")))
    with pytest.raises(ConfigurationError) as info:
        vault_for("vault_badttl").read(mail_env.secret_path)
    assert str(info.value) == (
        "Vault connection 'vault_badttl' has extra cache_ttl='soon': give a number of seconds (0 = no cache)."
    )


def test_shorter_lease_from_kv_v1_ttl_wins_over_the_cache_ttl(mail_env):
    from airflow_secure_mail.vault import vault_for

    client = mail_env.bao.client()
    if "kv1/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    path = "leased-" + secrets.token_hex(3)
    client.secrets.kv.v1.create_or_update_secret(path=path, secret={"username": "v1", "ttl": "1s"}, mount_point="kv1")
    before = len(mail_env.bao.audit_requests())
    vault = vault_for()
    assert vault.read(path, mount="kv1", kv_version=1)["username"] == "v1"
    assert vault.read(path, mount="kv1", kv_version=1)["username"] == "v1"
    assert _reads(mail_env.bao, before, f"kv1/{path}") == 1
    time.sleep(1.2)  # past the 1 s lease Vault gave (the cache would otherwise keep it 300 s)
    assert vault.read(path, mount="kv1", kv_version=1)["username"] == "v1"
    assert _reads(mail_env.bao, before, f"kv1/{path}") == 2


def test_twenty_sends_from_separate_hooks_read_the_credentials_once(mail_env):
    """Each send opens its own hook and session; the process-wide cache still answers all but the first."""
    before = len(mail_env.bao.audit_requests())
    for _ in range(20):
        SecureSmtpHook().send(plain_message())
    assert len(mail_env.smtp.messages) == 20
    assert _reads(mail_env.bao, before, f"secret/data/{mail_env.secret_path}") == 1


def test_a_batch_of_protected_archived_sends_reads_each_secret_once(mail_env, tmp_path, transit_key):
    """Through the whole pipeline: 40 sends (each its own hook and channel, as 40 tasks in one worker would),
    PGP-encrypted to a key in Vault and archived sealed with Transit: one read of the SMTP credentials, one of
    the recipient's key, one Transit data key (issue 12: at most two per 1,000 messages)."""
    from airflow_secure_mail.archive.store import MailArchive
    from airflow_secure_mail.mail.compose import MailRequest
    from airflow_secure_mail.mail.protect import Protection
    from airflow_secure_mail.pipeline.channel import MailChannel
    from airflow_secure_mail.pipeline.send import send_mail
    from airflow_secure_mail.testing.keys import make_pgp_identity
    from airflow_secure_mail.vault import clear_cache

    alice = make_pgp_identity("alice@example.com")
    client = mail_env.bao.client()
    client.secrets.kv.v2.create_or_update_secret(
        path="mail-keys/alice@example.com", secret={"pgp_public_key": alice.public_key}
    )
    clear_cache()
    before = len(mail_env.bao.audit_requests())
    for n in range(40):
        request = MailRequest(sender="airflow@example.com", to=("alice@example.com",), subject=f"r{n}", text="x")
        send_mail(request, channel=MailChannel.for_conn(), protection=Protection(encrypt="pgp"),
                  archive=MailArchive(f"file://{tmp_path}/a", transit_key=transit_key))  # fmt: skip
    assert len(mail_env.smtp.messages) == 40
    assert _reads(mail_env.bao, before, f"secret/data/{mail_env.secret_path}") == 1
    assert _reads(mail_env.bao, before, "secret/data/mail-keys/alice@example.com") == 1
    datakeys = [p for p in audit_paths(mail_env.bao, before) if p.startswith("transit/datakey")]
    assert len(datakeys) == 1
