"""VaultSecrets: the only module that talks to Vault (KV v1/v2 reads with a TTL cache, Transit).

One login per process and Vault connection: every ``VaultSecrets`` of a connection id (credentials,
keys, the archive's Transit key) shares one authenticated client, logged in again only after a 403 or
when its token runs out. With ``auth_type: agent`` the connection points at a Vault/OpenBao Agent
API proxy that adds its own auto-auth token, and this process holds no credential and never logs in.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_secure_mail._masking import mask
from airflow_secure_mail.errors import ConfigurationError, VaultSecretError
from airflow_secure_mail.transport.tls import is_loopback, judge_url

if TYPE_CHECKING:
    import hvac

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CACHE_TTL = 30.0
DEFAULT_CALL_BUDGET = 60.0
"""Longest one Vault call (retries included) may take when no send deadline is in force."""
AGENT_AUTH_TYPE = "agent"
_LOGIN = "login"
_RENEW_MARGIN = 60.0

_cache: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("vault_deadline", default=None)


def clear_cache() -> None:
    """Forget every cached secret and login (tests, a known rotation, an edited Vault connection)."""
    with _cache_lock:
        _cache.clear()
    with _logins_lock:
        _logins.clear()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every Vault call inside (threads from ``asyncio.to_thread`` included) ends within ``seconds``."""
    end = time.monotonic() + seconds
    current = _deadline.get()
    token = _deadline.set(end if current is None else min(current, end))
    try:
        yield
    finally:
        _deadline.reset(token)


def _call_budget() -> float:
    end = _deadline.get()
    if end is None:
        return DEFAULT_CALL_BUDGET
    return min(DEFAULT_CALL_BUDGET, end - time.monotonic())


def parse_vault_ref(ref: str) -> tuple[str, str]:
    """Split ``vault:<path>#<field>`` into path and field."""
    body = ref.removeprefix("vault:")
    path, sep, field = body.partition("#")
    if not sep or not path or not field:
        raise ConfigurationError(f"{ref!r} is not a Vault reference: write it as vault:<path>#<field>.")
    return path.strip("/"), field


def check_vault_url(url: str, conn_id: str, *, allow_http: bool = False) -> None:
    """Judge the address with the parser that will connect (urllib3's); refuse anything ambiguous.

    Plain HTTP is accepted only to a loopback host (``0.0.0.0`` is not one) unless ``allow_http``.
    """
    what = f"Vault connection {conn_id!r}"
    if "@" in url:
        raise ConfigurationError(f"{what} has an ambiguous address ('@' in host): give only a host name or IP.")
    scheme, host, path = judge_url(url, what)
    if path not in ("", "/"):
        raise ConfigurationError(f"{what} has an ambiguous address (a path after the host): give only host and port.")
    if scheme not in ("http", "https"):
        raise ConfigurationError(f"{what} must use http or https, not {scheme!r}.")
    if scheme != "https" and not is_loopback(host) and not allow_http:
        raise ConfigurationError(
            f"{what} points at http://{host}: set extra use_tls=true (plain HTTP is accepted only on loopback)."
        )


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _connection_url(conn: Any) -> str:
    use_tls = conn.extra_dejson.get("use_tls")
    scheme = "https" if (conn.conn_type == "vaults" if use_tls in (None, "") else _flag(use_tls)) else "http"
    return f"{scheme}://{conn.host or ''}" + (f":{conn.port}" if conn.port else "")


class _Login:
    """The authenticated client of one Vault connection, shared by the whole process."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.agent = False
        self.token_auth = False
        self._client: hvac.Client | None = None
        self._expires: float | None = None
        self._renewable = False
        self.lock = threading.RLock()

    def client(self) -> hvac.Client:
        """The current client, logged in on first use, renewed or logged in again before it expires."""
        with self.lock:
            if self._client is None:
                self._client = self._log_in()
            if self.agent:
                return self._client
            if not self._keep_token(self._client):
                self._client = self._log_in()
                self._keep_token(self._client)
            return self._client

    def forget(self, client: hvac.Client) -> None:
        """After a 403: log in again on next use, unless another thread already did."""
        with self.lock:
            if self._client is client:
                self._client = None

    def _log_in(self) -> hvac.Client:
        from airflow.sdk import BaseHook

        from airflow_secure_mail._vault_http import vault_session

        self._expires = None
        try:
            conn = BaseHook.get_connection(self.conn_id)
        except Exception:
            raise VaultSecretError(
                f"Vault connection {self.conn_id!r} does not exist: create it (conn_type vault)."
            ) from None
        extra = conn.extra_dejson or {}
        client_kwargs = dict(extra.get("client_kwargs") or {})
        allow_http = _flag(extra.get("allow_insecure_http"))
        session = vault_session(verify=client_kwargs.pop("verify", None), cert=client_kwargs.pop("cert", None))
        self.agent = extra.get("auth_type") == AGENT_AUTH_TYPE
        self.token_auth = (extra.get("auth_type") or "token") == "token"
        if self.agent:
            check_vault_url(_connection_url(conn), self.conn_id, allow_http=allow_http)
            return self._agent_client(conn, session, client_kwargs)
        from airflow.providers.hashicorp.hooks.vault import VaultHook

        kwargs: dict[str, Any] = {"session": session, "allow_redirects": False}
        if "timeout" not in client_kwargs:
            kwargs["timeout"] = None  # our adapter supplies connect/read timeouts clamped to the deadline
        error: VaultSecretError | None = None
        try:
            hook = VaultHook(vault_conn_id=self.conn_id, **kwargs)
        except Exception as exc:
            error = VaultSecretError(
                f"Vault connection {self.conn_id!r} could not be set up ({type(exc).__name__}): "
                "check its auth_type and the fields that auth type needs."
            )
        if error is not None:
            raise error
        check_vault_url(str(hook.vault_client.url), self.conn_id, allow_http=allow_http)  # the URL hvac will use
        if conn.password:
            mask(conn.password, "vault_token")
        client = hook.vault_client.client  # the login, for every auth type the hashicorp provider supports
        mask(client.token, "vault_token")
        return client

    def _agent_client(self, conn: Any, session: Any, client_kwargs: dict[str, Any]) -> hvac.Client:
        import hvac

        if conn.login or conn.password:
            raise ConfigurationError(
                f"Vault connection {self.conn_id!r} uses auth_type agent but stores a login or password: "
                "remove them; the agent authenticates and adds its own token."
            )
        client_kwargs.pop("token", None)
        client = hvac.Client(url=_connection_url(conn), session=session, allow_redirects=False, **client_kwargs)
        client.token = None  # hvac falls back to VAULT_TOKEN or ~/.vault-token; the agent's token must win
        return client

    def _keep_token(self, client: hvac.Client) -> bool:
        """Learn the token's TTL once, renew it inside the margin; False = log in again."""
        now = time.monotonic()
        if self._expires is None:
            try:
                data = client.auth.token.lookup_self()["data"]
                ttl = int(data.get("ttl") or 0)
                self._renewable = bool(data.get("renewable"))
            except Exception:
                log.debug("Vault token lookup failed; assuming a 5 minute lifetime")
                ttl, self._renewable = 300, False
            self._expires = float("inf") if ttl == 0 else now + ttl
        if now < self._expires - _RENEW_MARGIN:
            return True
        if self._renewable:
            try:
                auth = client.auth.token.renew_self()["auth"]
                self._expires = now + int(auth.get("lease_duration") or 0)
                return True
            except Exception:
                log.info("Vault token renewal failed; logging in again")
        return self.token_auth  # a fixed token cannot be replaced by logging in again


_logins: dict[str, _Login] = {}
_logins_lock = threading.Lock()


def _login_for(conn_id: str) -> _Login:
    with _logins_lock:
        login = _logins.get(conn_id)
        if login is None:
            login = _logins[conn_id] = _Login(conn_id)
        return login


def _unexpected(what: str, detail: str) -> VaultSecretError:
    return VaultSecretError(
        f"Vault gave an unexpected reply for {what!r} ({detail}): check that the vault connection points at "
        "Vault itself and not a proxy or maintenance page.",
        path=what,
    )


def _as_dict(value: Any, what: str, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        shape = "not JSON" if hasattr(value, "status_code") else f"{field} is {type(value).__name__}, not an object"
        raise _unexpected(what, shape)
    return value


class VaultSecrets:
    """Authenticated access to Vault through the ``vault`` connection (hashicorp provider, or an agent).

    Adds what the hashicorp hook lacks: the address judged by the parser that connects, no environment
    proxies and no redirects (the token stays with its origin), bounded retries of 5xx and resets, a hard
    deadline per call, a short TTL cache, token renewal, one re-login on 403, and errors that name the path
    but never a value or a reply body.
    """

    def __init__(self, vault_conn_id: str = "vault_default", *, cache_ttl: float | None = None) -> None:
        self.vault_conn_id = vault_conn_id
        self.cache_ttl = DEFAULT_CACHE_TTL if cache_ttl is None else float(cache_ttl)

    @property
    def client(self) -> hvac.Client:
        """The process-wide authenticated client of this connection."""
        return self._guarded(_LOGIN, lambda: _login_for(self.vault_conn_id).client())

    def _guarded(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside the call's deadline; map every failure to our errors with no context kept."""
        from airflow_secure_mail._vault_http import CallGuard

        budget = _call_budget()
        if budget <= 0:
            raise VaultSecretError(f"no time left for Vault call {what!r}: the send's deadline has passed.", path=what)
        guard = CallGuard(budget)
        try:
            with guard:
                return fn()
        except _Forbidden:
            raise
        except BaseException as exc:
            error = self._map(what, exc, guard.expired, budget)
        if isinstance(error, _Forbidden) and what == _LOGIN:
            error = VaultSecretError(
                f"Vault login for connection {self.vault_conn_id!r} was denied: check its credentials and role.",
                path=what,
            )
        raise error  # outside the except: no __context__ that could hold a reply body

    def _call(self, what: str, op: Callable[[hvac.Client], T]) -> T:
        """Run one Vault request; on 403 log in again once (expired token), then say why it still fails."""
        login = _login_for(self.vault_conn_id)
        for _attempt in range(2):
            client = self.client
            try:
                return self._guarded(what, lambda c=client: op(c))  # type: ignore[misc]
            except _Forbidden:
                login.forget(client)
        raise self._denied(what, login)

    def _denied(self, what: str, login: _Login) -> VaultSecretError:
        if login.agent:
            return VaultSecretError(
                f"Vault denied access to {what} through the agent of connection {self.vault_conn_id!r}: grant "
                "the agent's role read on this path, and check the agent is logged in.",
                path=what,
            )
        try:
            client = self.client
            self._guarded("auth/token/lookup-self", lambda: client.auth.token.lookup_self())
        except _Forbidden:
            return VaultSecretError(
                f"Vault rejected the token of connection {self.vault_conn_id!r} as invalid or expired while "
                f"reading {what}: issue a new token, or use an auth method that logs in (AppRole, Kubernetes).",
                path=what,
            )
        except VaultSecretError as exc:
            return exc
        return VaultSecretError(f"Vault denied access to {what}: grant the Airflow role read on this path.", path=what)

    def _map(self, what: str, exc: BaseException, expired: bool, budget: float) -> BaseException:
        """Our error for what hvac/requests raised; never their text, which may echo a reply body."""
        import hvac.exceptions
        import requests

        from airflow_secure_mail._vault_http import DeadlinePassed
        from airflow_secure_mail.errors import SecureMailError

        if expired or isinstance(exc, DeadlinePassed):
            return VaultSecretError(
                f"Vault did not answer {what!r} within {budget:.0f}s (the send's deadline): check that Vault is "
                "up and reachable, or raise extra deadline.",
                path=what,
            )
        if isinstance(exc, SecureMailError):
            return exc
        if isinstance(exc, hvac.exceptions.Forbidden):
            return _Forbidden()
        if isinstance(exc, hvac.exceptions.InvalidPath):
            return VaultSecretError(f"no secret at Vault path {what!r}: write it there first.", path=what, missing=True)
        if isinstance(exc, hvac.exceptions.VaultDown):
            return VaultSecretError(f"Vault is sealed or down while reading {what!r}: unseal it and retry.", path=what)
        if isinstance(exc, requests.exceptions.TooManyRedirects) or (
            isinstance(exc, hvac.exceptions.VaultError) and "redirect" in type(exc).__name__.lower()
        ):
            return _redirect(what)
        if isinstance(exc, requests.exceptions.RequestException):
            return VaultSecretError(
                f"cannot reach Vault for {what!r} ({type(exc).__name__}, after retries): check the vault "
                "connection's host and that Vault is up.",
                path=what,
            )
        if isinstance(exc, hvac.exceptions.VaultError):
            if what == _LOGIN:
                return VaultSecretError(
                    f"Vault login for connection {self.vault_conn_id!r} failed ({type(exc).__name__}): "
                    "check its credentials and auth method.",
                    path=what,
                )
            return VaultSecretError(
                f"Vault refused {what!r} ({type(exc).__name__}): check the path, mount and policy.", path=what
            )
        if isinstance(exc, KeyError | TypeError | ValueError | AttributeError):
            return _unexpected(what, f"{type(exc).__name__} while reading it")
        return exc

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
        if kv_version == 1 and version is not None:
            raise ConfigurationError("vault_version needs KV v2; KV v1 has no versions.")

        def op(client: hvac.Client) -> Any:
            if kv_version == 1:
                return client.secrets.kv.v1.read_secret(path=path, mount_point=mount)
            return client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, version=version, raise_on_deleted_version=True
            )

        response = _as_dict(self._call(where, op), where, "the reply")
        data = _as_dict(response.get("data"), where, "data")
        if kv_version == 2:
            data = _as_dict(data.get("data"), where, "data.data")
        mask(data)
        ttl = self.cache_ttl
        lease = response.get("lease_duration")
        if isinstance(lease, int) and lease > 0:
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
        where = f"{mount}/datakey/{key_name}"

        def op(client: hvac.Client) -> Any:
            return client.secrets.transit.generate_data_key(
                name=key_name, key_type="plaintext", bits=256, mount_point=mount
            )

        data = _as_dict(_as_dict(self._call(where, op), where, "the reply").get("data"), where, "data")
        wrapped = data.get("ciphertext")
        if not isinstance(wrapped, str) or not wrapped.startswith("vault:"):
            raise _unexpected(where, "no wrapped key in data.ciphertext")
        return _b64_key(data.get("plaintext"), where), wrapped

    def transit_unwrap(self, key_name: str, wrapped: str, *, mount: str = "transit") -> bytes:
        """Decrypt a data key wrapped by :meth:`transit_data_key` (works across key rotations)."""
        where = f"{mount}/decrypt/{key_name}"

        def op(client: hvac.Client) -> Any:
            return client.secrets.transit.decrypt_data(name=key_name, ciphertext=wrapped, mount_point=mount)

        data = _as_dict(_as_dict(self._call(where, op), where, "the reply").get("data"), where, "data")
        return _b64_key(data.get("plaintext"), where)


def _b64_key(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        try:
            key = base64.b64decode(value, validate=True)
        except ValueError:
            key = b""
        if len(key) == 32:
            return key
    raise _unexpected(where, "data.plaintext is not a base64 256-bit key")


def _redirect(what: str) -> VaultSecretError:
    return VaultSecretError(
        f"Vault answered {what!r} with a redirect; refused so the token stays with its origin. "
        "Point the connection at the active node.",
        path=what,
    )


class _Forbidden(Exception):
    """Internal marker for a 403, so the caller can re-login once."""


_SHARED: dict[str, VaultSecrets] = {}
_SHARED_LOCK = threading.Lock()


def vault_for(vault_conn_id: str = "vault_default") -> VaultSecrets:
    """The process's one VaultSecrets per Vault connection, shared by credentials, keys and Transit."""
    with _SHARED_LOCK:
        if vault_conn_id not in _SHARED:
            _SHARED[vault_conn_id] = VaultSecrets(vault_conn_id)
        return _SHARED[vault_conn_id]
