"""VaultSecrets: the only module that talks to Vault (KV v1/v2 reads with a TTL cache, Transit)."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from airflow_secure_mail._masking import mask
from airflow_secure_mail.errors import ConfigurationError, VaultSecretError
from airflow_secure_mail.transport.tls import is_loopback

if TYPE_CHECKING:
    import hvac

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CACHE_TTL = 30.0
_LOGIN = "login"
_RENEW_MARGIN = 60.0

_cache: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every cached secret (tests, and after a known rotation)."""
    with _cache_lock:
        _cache.clear()


def parse_vault_ref(ref: str) -> tuple[str, str]:
    """Split ``vault:<path>#<field>`` into path and field."""
    body = ref.removeprefix("vault:")
    path, sep, field = body.partition("#")
    if not sep or not path or not field:
        raise ConfigurationError(f"{ref!r} is not a Vault reference: write it as vault:<path>#<field>.")
    return path.strip("/"), field


class VaultSecrets:
    """Authenticated access to Vault through the hashicorp provider's ``vault`` connection.

    Adds what that hook lacks: refusal of plain HTTP to non-loopback hosts, no redirects (the token
    must not travel to another origin), a short TTL cache, token renewal, one re-login on 403, and
    errors that name the path but never a value.
    """

    def __init__(self, vault_conn_id: str = "vault_default", *, cache_ttl: float | None = None) -> None:
        self.vault_conn_id = vault_conn_id
        self.cache_ttl = DEFAULT_CACHE_TTL if cache_ttl is None else float(cache_ttl)
        self._hook: Any = None
        self._token_expires: float | None = None
        self._renewable = False
        self._lock = threading.Lock()

    # -- client -------------------------------------------------------------------------------
    def _new_hook(self) -> Any:
        from airflow.providers.hashicorp.hooks.vault import VaultHook
        from requests import Session

        session = Session()
        session.max_redirects = 0
        try:
            hook = VaultHook(vault_conn_id=self.vault_conn_id, session=session, allow_redirects=False)
        except Exception as exc:
            raise VaultSecretError(
                f"Vault connection {self.vault_conn_id!r} could not be set up ({type(exc).__name__}): "
                "check that it exists and its auth_type fields are complete."
            ) from None
        url = str(hook.vault_client.url)
        parts = urlsplit(url)
        allow_http = str(hook.connection.extra_dejson.get("allow_insecure_http", "false")).lower() == "true"
        if parts.scheme != "https" and not is_loopback(parts.hostname or "") and not allow_http:
            raise ConfigurationError(
                f"Vault connection {self.vault_conn_id!r} points at {parts.scheme}://{parts.hostname}: "
                "set extra use_tls=true (plain HTTP is accepted only on loopback)."
            )
        if hook.connection.password:
            mask(hook.connection.password, "vault_token")
        return hook

    @property
    def client(self) -> hvac.Client:
        """The authenticated client, renewed or re-logged before its token runs out."""
        with self._lock:
            if self._hook is None:
                self._hook = self._new_hook()
                self._token_expires = None
            client = self._login()
            if not self._keep_token(client):
                self._relogin()
                client = self._login()
            return client

    def _login(self) -> hvac.Client:
        client = self._with_vault_errors(_LOGIN, lambda: self._hook.vault_client.client)
        mask(client.token, "vault_token")
        return client

    def _keep_token(self, client: hvac.Client) -> bool:
        """Learn the token's TTL once, renew it inside the margin; False = log in again."""
        now = time.monotonic()
        if self._token_expires is None:
            try:
                data = client.auth.token.lookup_self()["data"]
            except Exception:
                self._token_expires = now + 300
                return True
            ttl = int(data.get("ttl") or 0)
            self._token_expires = float("inf") if ttl == 0 else now + ttl
            self._renewable = bool(data.get("renewable"))
            return True
        if now < self._token_expires - _RENEW_MARGIN:
            return True
        if self._renewable:
            try:
                auth = client.auth.token.renew_self()["auth"]
                self._token_expires = now + int(auth.get("lease_duration") or 0)
                return True
            except Exception:
                log.info("Vault token renewal failed; logging in again")
        return False

    def _relogin(self) -> None:
        self._hook = self._new_hook()
        self._token_expires = None

    def _call(self, what: str, op: Callable[[hvac.Client], T]) -> T:
        """Run one Vault request; on 403 log in again once (expired token), then give up."""
        try:
            return self._with_vault_errors(what, lambda: op(self.client))
        except _Forbidden:
            with self._lock:
                self._relogin()
            try:
                return self._with_vault_errors(what, lambda: op(self.client))
            except _Forbidden:
                raise VaultSecretError(
                    f"Vault denied access to {what}: grant the Airflow role read on this path.", path=what
                ) from None

    def _with_vault_errors(self, what: str, fn: Callable[[], T]) -> T:
        import hvac.exceptions
        import requests

        try:
            return fn()
        except hvac.exceptions.Forbidden:
            raise _Forbidden() from None
        except hvac.exceptions.InvalidPath:
            raise VaultSecretError(
                f"no secret at Vault path {what!r}: write it there first.", path=what, missing=True
            ) from None
        except hvac.exceptions.VaultDown:
            raise VaultSecretError(
                f"Vault is sealed or down while reading {what!r}: unseal it and retry.", path=what
            ) from None
        except requests.exceptions.TooManyRedirects:
            raise VaultSecretError(
                f"Vault answered {what!r} with a redirect; refused so the token stays with its origin. "
                "Point the connection at the active node.",
                path=what,
            ) from None
        except requests.exceptions.RequestException as exc:
            raise VaultSecretError(
                f"cannot reach Vault for {what!r} ({type(exc).__name__}): check the vault connection's host.",
                path=what,
            ) from None
        except hvac.exceptions.VaultError as exc:  # also what the hashicorp hook raises for a failed login
            if what == _LOGIN:
                raise VaultSecretError(
                    f"Vault login for connection {self.vault_conn_id!r} failed: check its credentials.", path=what
                ) from None
            raise VaultSecretError(
                f"Vault refused {what!r} ({type(exc).__name__}): check the path, mount and policy.", path=what
            ) from None

    # -- KV -----------------------------------------------------------------------------------
    def read(
        self,
        path: str,
        *,
        mount: str = "secret",
        kv_version: int = 2,
        version: int | None = None,
        fresh: bool = False,
    ) -> dict[str, Any]:
        """Read one KV secret; every value is masked before it is returned. ``fresh`` bypasses the cache."""
        path = path.strip("/")
        key = (self.vault_conn_id, mount, path, kv_version, version)
        now = time.monotonic()
        if not fresh and self.cache_ttl > 0:
            with _cache_lock:
                hit = _cache.get(key)
            if hit and hit[0] > now:
                return dict(hit[1])
        where = f"{mount}/{path}"

        def op(client: hvac.Client) -> dict[str, Any]:
            if kv_version == 1:
                if version is not None:
                    raise ConfigurationError("vault_secret_version needs KV v2; KV v1 has no versions.")
                return dict(client.secrets.kv.v1.read_secret(path=path, mount_point=mount))
            return dict(
                client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=mount, version=version, raise_on_deleted_version=True
                )
            )

        response = self._call(where, op)
        data = response.get("data") or {}
        if kv_version == 2:
            data = data.get("data") or {}
        if not isinstance(data, dict):
            raise VaultSecretError(f"Vault path {where!r} holds no key/value data.", path=where)
        mask(data)
        ttl = self.cache_ttl
        lease = int(response.get("lease_duration") or 0)
        if lease > 0:
            ttl = min(ttl, lease)
        if ttl > 0:
            with _cache_lock:
                _cache[key] = (now + ttl, dict(data))
        return dict(data)

    def read_field(self, ref: str, *, mount: str = "secret", kv_version: int = 2) -> str:
        """Resolve a ``vault:<path>#<field>`` reference to its value."""
        path, field = parse_vault_ref(ref)
        data = self.read(path, mount=mount, kv_version=kv_version)
        if field not in data:
            raise VaultSecretError(f"Vault path {mount}/{path!s} has no field {field!r}.", path=f"{mount}/{path}")
        return str(data[field])

    # -- Transit ------------------------------------------------------------------------------
    def transit_data_key(self, key_name: str, *, mount: str = "transit") -> tuple[bytes, str]:
        """A fresh 256-bit data key: (plaintext bytes, wrapped ciphertext to store beside the data)."""

        def op(client: hvac.Client) -> dict[str, Any]:
            return dict(
                client.secrets.transit.generate_data_key(
                    name=key_name, key_type="plaintext", bits=256, mount_point=mount
                )
            )

        data = self._call(f"{mount}/datakey/{key_name}", op)["data"]
        return base64.b64decode(data["plaintext"]), str(data["ciphertext"])

    def transit_unwrap(self, key_name: str, wrapped: str, *, mount: str = "transit") -> bytes:
        """Decrypt a data key wrapped by :meth:`transit_data_key` (works across key rotations)."""

        def op(client: hvac.Client) -> dict[str, Any]:
            return dict(client.secrets.transit.decrypt_data(name=key_name, ciphertext=wrapped, mount_point=mount))

        data = self._call(f"{mount}/decrypt/{key_name}", op)["data"]
        return base64.b64decode(data["plaintext"])


class _Forbidden(Exception):
    """Internal marker for a 403, so the caller can re-login once."""
