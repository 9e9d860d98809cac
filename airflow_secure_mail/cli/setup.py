"""``airflow-secure-mail setup``: create in Vault what a connection needs and is safe to create; say the rest.

Creates only what is missing: the Transit engine at ``transit/`` and the archive's Transit key
(``aes256-gcm96``), and, when asked with ``--example-keys``, TEST signing and recipient keys. It never
rotates or overwrites anything and never invents a credential: a missing SMTP secret or a request the token
may not make becomes a TODO line with the exact command; a missing signer (needed only to sign) is a NOTE.
An administrator runs it with their own token in ``VAULT_TOKEN`` (the address still comes from the
Vault connection); without it the Vault connection logs in as the workers do.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_secure_mail.errors import ConfigurationError, SecureMailError, VaultSecretError

if TYPE_CHECKING:
    import hvac

    from airflow_secure_mail.connection.settings import SmtpSettings

OK, CREATED, TODO, FAIL = "OK", "CREATED", "TODO", "FAIL"
NOTE = "NOTE"  # information only: not a reason to exit 1 (e.g. no signer for a team that does not sign)
Item = tuple[str, str, str]  # (status, what, detail)
Outcome = Literal["ok", "missing", "denied"]

DEFAULT_TRANSIT_KEY = "mail-archive"
KEYS_MOUNT = "secret"  # where Protection looks by default (Protection.vault_mount)
KEYS_PATH = "mail-keys"  # Protection.keys_vault_path
SIGNING_PATH = "mail-signing"  # the signing_vault_path the examples use
_ADMIN = "run setup with an administrator's token in VAULT_TOKEN"
_DATA_KEY_TYPES = ("aes128-gcm96", "aes256-gcm96", "chacha20-poly1305")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``setup`` on the main parser (``doctor --fix`` shares its options)."""
    parser = sub.add_parser("setup", help="create what a securesmtp connection needs in Vault; print the rest")
    add_options(parser)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conn-id", default="secure_smtp_default")
    parser.add_argument("--transit-key", default=DEFAULT_TRANSIT_KEY, help="the archive's Transit key name")
    parser.add_argument(
        "--example-keys",
        nargs="+",
        default=[],
        metavar="ADDRESS",
        help="store TEST signing and recipient keys for these addresses (never for production)",
    )


@dataclass
class _Run:
    """What one setup run found: the items in order, and whether a TODO came from a refused request."""

    client: hvac.Client
    items: list[Item] = field(default_factory=list)
    denied: bool = False
    test_keys: list[str] = field(default_factory=list)
    mounts: dict[str, Any] | None = None

    def add(self, status: str, what: str, detail: str) -> None:
        self.items.append((status, what, detail))

    def attempt(self, op: Callable[[hvac.Client], Any]) -> tuple[Outcome, Any]:
        """Run one request: ("ok", reply), ("missing", None) on 404, ("denied", None) on 403."""
        import hvac.exceptions

        try:
            return "ok", op(self.client)
        except hvac.exceptions.Forbidden:
            self.denied = True
            return "denied", None
        except hvac.exceptions.InvalidPath:
            return "missing", None


def setup(conn_id: str, transit_key: str = DEFAULT_TRANSIT_KEY, example_keys: Sequence[str] = ()) -> int:
    """Print one line per item; exit 0 when nothing is left TODO or FAILed, 1 otherwise (2: wrong connection)."""
    from airflow_secure_mail.cli._conn import securesmtp_connection
    from airflow_secure_mail.connection.settings import SmtpSettings

    print(f"airflow-secure-mail setup: {conn_id}")
    conn = securesmtp_connection(conn_id, "setup", fail=f"  {FAIL:<7}")
    if isinstance(conn, int):
        return conn
    try:
        settings = SmtpSettings.from_connection(conn)
        client, how = _client(settings.vault_conn_id)
        run = _Run(client)
        print(f"  Vault connection {settings.vault_conn_id}, {how}")
        _check_all(run, settings, transit_key, example_keys)
    except SecureMailError as exc:
        print(f"  {FAIL:<7} {_one_line(exc)}")
        return 1
    except Exception as exc:  # Vault unreachable, an unexpected reply: say which, never a reply body
        print(f"  {FAIL:<7} Vault request failed: {type(exc).__name__}: {_first_line(exc)}")
        return 1
    return _report(run, settings, transit_key)


def _check_all(run: _Run, settings: SmtpSettings, transit_key: str, example_keys: Sequence[str]) -> None:
    mounted, run.mounts = _transit_mount(run)
    _transit_key(run, transit_key, mounted)
    _smtp_secret(run, settings)
    _freeze_switch(run, settings)
    _example_keys(run, settings, example_keys)


def _report(run: _Run, settings: SmtpSettings, transit_key: str) -> int:
    for status, what, detail in run.items:
        print(f"  {status:<7} {what:<34} {detail}")
    if run.test_keys:
        print("  !! TEST KEYS: " + ", ".join(run.test_keys) + " were generated by this command.")
        print("  !! They are for trying the examples only, NOT for production: store your team's own keys")
        print("  !! there before sending anything real (docs/protection.md).")
    if run.denied and any(status == TODO for status, _, _ in run.items):
        print("  The token may not make every request above. The workers' Vault policy needs:")
        for line in worker_policy(settings, transit_key):
            print(f"    {line}")
    return 1 if any(status in (TODO, FAIL) for status, _, _ in run.items) else 0


def worker_policy(settings: SmtpSettings, transit_key: str) -> list[str]:
    """The policy lines the workers' Vault role needs for this connection and the examples (KV v2 paths)."""
    from airflow_secure_mail.connection.freeze import switch_for

    smtp = f"{settings.vault_mount}/data/{(settings.vault_path or 'smtp/airflow').strip('/')}"
    if settings.vault_kv_version == 1:
        smtp = f"{settings.vault_mount}/{(settings.vault_path or 'smtp/airflow').strip('/')}"
    freeze = switch_for(settings)
    return [
        f'path "{smtp}" {{ capabilities = ["read"] }}',
        *([freeze.policy_line()] if freeze is not None else []),
        f'path "{KEYS_MOUNT}/data/{KEYS_PATH}/*" {{ capabilities = ["read"] }}',
        f'path "{KEYS_MOUNT}/data/{SIGNING_PATH}" {{ capabilities = ["read"] }}',
        f'path "transit/datakey/plaintext/{transit_key}" {{ capabilities = ["update"] }}',
        f'path "transit/decrypt/{transit_key}" {{ capabilities = ["update"] }}',
    ]


def _client(vault_conn_id: str) -> tuple[hvac.Client, str]:
    """An administrator's ``VAULT_TOKEN`` at the connection's address, else the connection's own login."""
    token = os.environ.get("VAULT_TOKEN", "").strip()
    if not token:
        from airflow_secure_mail.vault import vault_for

        return vault_for(vault_conn_id).client, "logged in with that connection"
    import hvac
    from airflow.sdk import BaseHook

    from airflow_secure_mail._masking import mask
    from airflow_secure_mail.vault import check_vault_url, vault_url

    mask(token, "vault_token")
    try:
        conn = BaseHook.get_connection(vault_conn_id)
    except Exception:
        conn = None
    if conn is None:
        raise VaultSecretError(f"Vault connection {vault_conn_id!r} does not exist: create it (conn_type vault).")
    extra = conn.extra_dejson or {}
    url = vault_url(conn)
    allow_http = str(extra.get("allow_insecure_http")).strip().lower() in ("1", "true", "yes", "on")
    check_vault_url(url, vault_conn_id, allow_http=allow_http)
    kwargs = dict(extra.get("client_kwargs") or {})
    client = hvac.Client(
        url=url,
        token=token,
        verify=kwargs.get("verify", True),
        cert=kwargs.get("cert"),
        namespace=extra.get("namespace") or None,
    )
    return client, "token from VAULT_TOKEN"


# -- Transit ----------------------------------------------------------------------------------------------------


def _transit_mount(run: _Run) -> tuple[bool | None, dict[str, Any] | None]:
    """Enable Transit at ``transit/`` when the token may list mounts and it is absent; True/False/None = unknown."""
    outcome, reply = run.attempt(lambda c: c.sys.list_mounted_secrets_engines())
    if outcome != "ok":
        return None, None  # a worker's token: the key checks below tell whether Transit works
    mounts: dict[str, Any] = dict(reply.get("data") or reply)
    engine = mounts.get("transit/")
    if engine is not None:
        kind = engine.get("type", "?")
        if kind != "transit":
            run.add(FAIL, "Transit engine at transit/", f"transit/ is a {kind!r} engine: the archive needs Transit")
            return False, mounts
        run.add(OK, "Transit engine at transit/", "enabled")
        return True, mounts
    outcome, _ = run.attempt(lambda c: c.sys.enable_secrets_engine("transit", path="transit"))
    if outcome == "ok":
        run.add(CREATED, "Transit engine at transit/", "enabled")
        return True, mounts
    run.add(TODO, "Transit engine at transit/", "bao secrets enable transit   (or: vault secrets enable transit)")
    return False, mounts


def _transit_key(run: _Run, name: str, mounted: bool | None) -> None:
    what = f"Transit key {name}"
    create = f"bao write -f transit/keys/{name} type=aes256-gcm96   (or: vault write -f …)"
    if mounted is False:
        run.add(TODO, what, create)
        return
    outcome, reply = run.attempt(lambda c: c.secrets.transit.read_key(name=name))
    if outcome == "ok":
        kind = str(reply["data"].get("type"))
        if kind not in _DATA_KEY_TYPES:
            run.add(FAIL, what, f"type {kind} cannot make data keys: create an aes256-gcm96 key and use its name")
        else:
            run.add(OK, what, f"{kind}, version {reply['data'].get('latest_version')}")
        return
    if outcome == "missing":
        created, _ = run.attempt(lambda c: c.secrets.transit.create_key(name=name, key_type="aes256-gcm96"))
        run.add(CREATED, what, "aes256-gcm96") if created == "ok" else run.add(TODO, what, create)
        return
    # The workers' policy may not read the key's settings; making a data key is what they need, and harmless.
    usable, _ = run.attempt(lambda c: c.secrets.transit.generate_data_key(name=name, key_type="plaintext"))
    if usable == "ok":
        run.add(OK, what, "makes data keys (this token may not read its settings)")
    elif mounted is None:
        run.add(TODO, "Transit engine at transit/", "bao secrets enable transit   (or: vault secrets enable transit)")
        run.add(TODO, what, create)
    else:
        run.add(TODO, what, create)


# -- KV secrets -------------------------------------------------------------------------------------------------


def _read_kv(run: _Run, path: str, mount: str, version: int = 2) -> tuple[Outcome, dict[str, Any] | None]:
    if version == 1:
        outcome, reply = run.attempt(lambda c: c.secrets.kv.v1.read_secret(path=path, mount_point=mount))
        return outcome, (reply or {}).get("data")
    outcome, reply = run.attempt(
        lambda c: c.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
    )
    return outcome, ((reply or {}).get("data") or {}).get("data")


def _credential_fields(settings: SmtpSettings) -> tuple[str, ...]:
    if settings.oauth_endpoint:
        return ("username", "client_id", "client_secret")
    return ("username", "password" if settings.auth == "password" else "access_token")


def _kv_put(mount: str, path: str, assignments: str) -> str:
    return f"bao kv put -mount={mount} {path} {assignments}   (or: vault kv put -mount={mount} {path} …)"


def _smtp_secret(run: _Run, settings: SmtpSettings) -> None:
    what = "SMTP credentials"
    if settings.auth == "none" or not settings.vault_path:
        run.add(OK, what, "none needed (auth none)")
        return
    path, mount = settings.vault_path.strip("/"), settings.vault_mount
    where = f"{mount}/{path}"
    names = _credential_fields(settings)
    command = _kv_put(mount, path, " ".join(f"{n}=…" for n in names))
    if run.mounts is not None and f"{mount}/" not in run.mounts:
        kv = "kv-v2" if settings.vault_kv_version == 2 else "kv"
        run.add(TODO, f"KV engine at {mount}/", f"bao secrets enable -path={mount} {kv}   (or: vault secrets enable …)")
        run.add(TODO, what, command)
        return
    outcome, data = _read_kv(run, path, mount, settings.vault_kv_version)
    if outcome == "denied":
        run.add(TODO, what, f"this token may not read {where}: grant read (policy below), or run as the workers")
        return
    if outcome == "missing" or data is None:
        run.add(TODO, what, f"nothing at {where}: {command}")
        return
    absent = [n for n in names if n != "client_secret" and not data.get(n)]
    if settings.oauth_endpoint and not (data.get("client_secret") or data.get("refresh_token")):
        absent.append("client_secret or refresh_token")
    if absent:
        run.add(TODO, what, f"{where} lacks {', '.join(absent)}: {command}")
    else:
        run.add(OK, what, f"{where} has {', '.join(names)}")


def _freeze_switch(run: _Run, settings: SmtpSettings) -> None:
    """Whether this token may read the freeze switch (workers that cannot would send on through a freeze)."""
    from airflow_secure_mail.connection.freeze import FreezeState, switch_for

    what = "freeze switch"
    switch = switch_for(settings)
    if switch is None:
        run.add(NOTE, what, "no vault_path: set extra freeze_vault_path to be able to freeze this connection")
        return
    outcome, data = _read_kv(run, switch.path, switch.mount, switch.kv_version)
    if outcome == "denied":
        run.add(FAIL, what, f"this token may not read {switch.where}: a freeze would not stop these workers; "
                f"grant {switch.policy_line()}")  # fmt: skip
    elif outcome == "missing" or data is None:
        run.add(OK, what, f"{switch.where} readable, nothing stored: not frozen")
    else:
        state = FreezeState.from_secret(data)
        if state.frozen:
            run.add(NOTE, what, f"{switch.where}: FROZEN since {state.since} by {state.by}: {state.reason}")
        else:
            run.add(OK, what, f"{switch.where}: not frozen")


def freeze_check(settings: SmtpSettings) -> tuple[str, str, str]:
    """``doctor``'s line on the freeze switch, read as the workers read it: PASS, WARN when frozen, FAIL when the
    workers' Vault login may not read it (they would send on through a freeze)."""
    from airflow_secure_mail.connection.freeze import read_switch, switch_for
    from airflow_secure_mail.vault import vault_for

    what = "freeze switch"
    switch = switch_for(settings)
    if switch is None:
        return ("WARN", what, "no vault_path: set extra freeze_vault_path to be able to freeze this connection")
    try:
        state = read_switch(switch, vault_for(settings.vault_conn_id))
    except SecureMailError as exc:
        return ("FAIL", what, f"cannot read {switch.where} ({_one_line(exc)}): grant {switch.policy_line()}")
    if state.frozen:
        return ("WARN", what, f"FROZEN since {state.since} by {state.by}: {state.reason}")
    return ("PASS", what, f"{switch.where} readable: not frozen")


def _example_keys(run: _Run, settings: SmtpSettings, addresses: Sequence[str]) -> None:
    """The signer at secret/mail-signing and recipients at secret/mail-keys/<address>: TEST keys only if asked."""
    where = f"{KEYS_MOUNT}/{SIGNING_PATH}"
    outcome, data = _read_kv(run, SIGNING_PATH, KEYS_MOUNT)
    ca = None
    if outcome == "ok" and data is not None:
        kinds = [k for k, f in (("PGP", "pgp_private_key"), ("S/MIME", "smime_private_key")) if data.get(f)]
        run.add(OK, "signing keys", f"{where} holds a {' + '.join(kinds) or 'no'} signer")
    elif outcome == "denied":
        run.add(TODO, "signing keys", f"this token may not read {where}: grant read (policy below)")
    elif not addresses:
        run.add(
            NOTE,
            "signing keys",
            f"nothing at {where} (needed only to sign; docs/protection.md): "
            + _kv_put(KEYS_MOUNT, SIGNING_PATH, "pgp_private_key=@signer.asc pgp_passphrase=… "
                      "smime_private_key=@signer.key smime_certificate=@signer.pem"),
        )  # fmt: skip
    elif not settings.from_email:
        run.add(TODO, "signing keys", "set extra from_email on the connection: the test signer's identity")
    elif not _may_write(run, SIGNING_PATH):
        run.add(TODO, "signing keys", f"this token may not write {where}: {_ADMIN}")
    else:
        keys = _test_keys()
        ca = keys.SmimeCA()
        pgp, smime = _make_pgp(keys, settings.from_email), ca.issue(settings.from_email)
        secret = {
            "pgp_private_key": pgp.private_key,
            "pgp_passphrase": pgp.passphrase,
            "smime_private_key": smime.private_key,
            "smime_certificate": smime.certificate,
        }
        _store_test_key(run, "signing keys", SIGNING_PATH, secret, f"TEST PGP + S/MIME signer {settings.from_email}")
    for address in addresses:
        _recipient_key(run, address, ca)


def _recipient_key(run: _Run, address: str, ca: Any) -> None:
    path = f"{KEYS_PATH}/{address}"
    what = f"recipient key {address}"
    outcome, data = _read_kv(run, path, KEYS_MOUNT)
    if outcome == "ok" and data is not None:
        kinds = [k for k, f in (("PGP", "pgp_public_key"), ("S/MIME", "smime_certificate")) if data.get(f)]
        run.add(OK, what, f"{KEYS_MOUNT}/{path} holds {' + '.join(kinds) or 'no key'}")
        return
    if outcome == "denied":
        run.add(TODO, what, f"this token may not read {KEYS_MOUNT}/{path}: grant read (policy below)")
        return
    if not _may_write(run, path):
        run.add(TODO, what, f"this token may not write {KEYS_MOUNT}/{path}: {_ADMIN}")
        return
    keys = _test_keys()
    pgp, smime = _make_pgp(keys, address), (ca or keys.SmimeCA()).issue(address)
    secret = {"pgp_public_key": pgp.public_key, "smime_certificate": smime.certificate}
    _store_test_key(run, what, path, secret, f"TEST PGP + S/MIME key for {address}")


def _may_write(run: _Run, path: str) -> bool:
    """Whether the token may create ``secret/<path>`` (asked before gpg spends seconds making a key for it)."""
    outcome, reply = run.attempt(lambda c: c.sys.get_capabilities(paths=[f"{KEYS_MOUNT}/data/{path}"]))
    if outcome != "ok":
        return True  # cannot tell: the write itself will say
    granted = set((reply.get("data") or reply).get("capabilities") or [])
    return bool(granted & {"root", "create", "update"})


def _store_test_key(run: _Run, what: str, path: str, secret: dict[str, str], label: str) -> None:
    outcome, _ = run.attempt(
        lambda c: c.secrets.kv.v2.create_or_update_secret(path=path, secret=secret, mount_point=KEYS_MOUNT, cas=0)
    )  # cas=0: written only if still absent, never over a key stored meanwhile
    if outcome == "ok":
        run.add(CREATED, what, f"{KEYS_MOUNT}/{path}: {label}")
        run.test_keys.append(f"{KEYS_MOUNT}/{path}")
    else:
        run.add(
            TODO, what, f"this token may not write {KEYS_MOUNT}/{path}: run setup with an administrator's VAULT_TOKEN"
        )


def _test_keys() -> Any:
    """The throwaway key makers of ``airflow_secure_mail.testing``, imported only on request (``--example-keys``);
    the one import from ``testing`` outside it, declared in the layers contract (pyproject.toml)."""
    try:
        from airflow_secure_mail.testing import keys

        return keys
    except ImportError as exc:  # cryptography missing
        raise ConfigurationError(f"--example-keys needs {exc.name or 'cryptography'}: install it.") from None


def _make_pgp(keys: Any, address: str) -> Any:
    """A TEST PGP identity made by gpg; a missing or failing gpg is one line that says so."""
    import subprocess

    try:
        return keys.make_pgp_identity(address)
    except FileNotFoundError:
        error = ConfigurationError("--example-keys needs gpg to make PGP test keys: install gnupg.")
    except subprocess.CalledProcessError as exc:
        error = ConfigurationError(f"gpg could not make a test key for {address} (exit {exc.returncode}).")
    raise error


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
