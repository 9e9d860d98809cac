"""The process-wide login of one Vault connection: its address judged, its token kept alive.

One :class:`Login` per connection id and process (:func:`login_for`): every reader of that connection
(credentials, keys, the archive's Transit key) shares its authenticated ``hvac.Client``, logged in again
only after a 403 or when the token runs out. ``auth_type: agent`` points at a Vault/OpenBao Agent API
proxy that adds its own token: no credential here, no login.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from airflow_secure_mail._masking import mask
from airflow_secure_mail.errors import ConfigurationError, VaultSecretError
from airflow_secure_mail.transport.tls import is_loopback, judge_url

if TYPE_CHECKING:
    import hvac
    from requests import Session

log = logging.getLogger(__name__)

AGENT_AUTH_TYPE = "agent"
_RENEW_MARGIN = 60.0
_UNKNOWN_TOKEN_TTL = 300


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


def vault_url(conn: Any) -> str:
    use_tls = conn.extra_dejson.get("use_tls")
    scheme = "https" if (conn.conn_type == "vaults" if use_tls in (None, "") else _flag(use_tls)) else "http"
    return f"{scheme}://{conn.host or ''}" + (f":{conn.port}" if conn.port else "")


def _cache_ttl(extra: dict[str, Any], conn_id: str) -> float | None:
    """The connection's extra ``cache_ttl`` (seconds a KV read is reused; 0 = never), or None if unset."""
    value = extra.get("cache_ttl")
    if value in (None, ""):
        return None
    try:
        ttl = float(value)
    except (TypeError, ValueError):
        ttl = -1.0
    if ttl < 0:
        raise ConfigurationError(
            f"Vault connection {conn_id!r} has extra cache_ttl={value!r}: give a number of seconds (0 = no cache)."
        )
    return ttl


class Login:
    """The authenticated client of one Vault connection, shared by the whole process."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.agent = False
        self.token_auth = False
        self.cache_ttl: float | None = None
        """The connection's extra ``cache_ttl``, known after the first log-in."""
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
        from airflow_secure_mail.vault._http import vault_session

        self._expires = None
        conn = self._connection()
        extra = conn.extra_dejson or {}
        client_kwargs = dict(extra.get("client_kwargs") or {})
        allow_http = _flag(extra.get("allow_insecure_http"))
        session = vault_session(verify=client_kwargs.pop("verify", None), cert=client_kwargs.pop("cert", None))
        self.agent = extra.get("auth_type") == AGENT_AUTH_TYPE
        self.token_auth = (extra.get("auth_type") or "token") == "token"
        self.cache_ttl = _cache_ttl(extra, self.conn_id)
        if self.agent:
            check_vault_url(vault_url(conn), self.conn_id, allow_http=allow_http)
            return self._agent_client(conn, session, client_kwargs)
        return self._provider_client(conn, session, client_kwargs, allow_http)

    def _connection(self) -> Any:
        from airflow.sdk import BaseHook

        try:
            return BaseHook.get_connection(self.conn_id)
        except Exception:
            error = VaultSecretError(f"Vault connection {self.conn_id!r} does not exist: create it (conn_type vault).")
        raise error  # outside the except: nothing of the lookup's failure travels with it

    def _provider_client(
        self, conn: Any, session: Session, client_kwargs: dict[str, Any], allow_http: bool
    ) -> hvac.Client:
        """Log in through the hashicorp provider's VaultHook, for every auth type it supports."""
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
        client = hook.vault_client.client  # logs in
        mask(client.token, "vault_token")
        return client

    def _agent_client(self, conn: Any, session: Session, client_kwargs: dict[str, Any]) -> hvac.Client:
        import hvac

        if conn.login or conn.password:
            raise ConfigurationError(
                f"Vault connection {self.conn_id!r} uses auth_type agent but stores a login or password: "
                "remove them; the agent authenticates and adds its own token."
            )
        client_kwargs.pop("token", None)
        client = hvac.Client(url=vault_url(conn), session=session, allow_redirects=False, **client_kwargs)
        client.token = None  # hvac falls back to VAULT_TOKEN or ~/.vault-token; the agent's token must win
        return client

    def _keep_token(self, client: hvac.Client) -> bool:
        """Learn the token's TTL once, renew it inside the margin; False = log in again."""
        now = time.monotonic()
        if self._expires is None:
            ttl = self._token_ttl(client)
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

    def _token_ttl(self, client: hvac.Client) -> int:
        try:
            data = client.auth.token.lookup_self()["data"]
            self._renewable = bool(data.get("renewable"))
            return int(data.get("ttl") or 0)
        except Exception:
            log.debug("Vault token lookup failed; assuming a 5 minute lifetime")
            self._renewable = False
            return _UNKNOWN_TOKEN_TTL


_logins: dict[str, Login] = {}
_logins_lock = threading.Lock()


def login_for(conn_id: str) -> Login:
    """The process's one Login for ``conn_id``."""
    with _logins_lock:
        login = _logins.get(conn_id)
        if login is None:
            login = _logins[conn_id] = Login(conn_id)
        return login


def forget_logins() -> None:
    """Drop every login (tests, an edited Vault connection): the next call logs in again."""
    with _logins_lock:
        _logins.clear()
