"""VaultSecrets: the only module that talks to Vault (KV v1/v2 reads with a batch-long cache, Transit).

One access object per process and Vault connection (:func:`vault_for`), shared by SMTP credentials,
recipients' and signing keys and the archive's Transit key; under it one login per connection
(``_vault_login``), the guarded HTTP session (``_vault_http``), the read cache (``_vault_cache``) and the
mapping of failures to our errors (``_vault_errors``). With ``auth_type: agent`` the connection points
at a Vault/OpenBao Agent API proxy that adds its own token: this process holds no credential.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_secure_mail._masking import mask
from airflow_secure_mail.errors import ConfigurationError, VaultSecretError
from airflow_secure_mail.vault._cache import Absent, Loaded, ReadCache
from airflow_secure_mail.vault._call import DEFAULT_CALL_BUDGET, VaultCalls, call_budget, deadline
from airflow_secure_mail.vault._errors import (
    PathMissing,
    RequestRefused,
    as_dict,
    b64_key,
    kv_missing_error,
    kv_mount_missing_error,
    transit_missing_error,
    transit_unwrap_mount_error,
    unexpected,
)
from airflow_secure_mail.vault._login import AGENT_AUTH_TYPE, check_vault_url, forget_logins, login_for, vault_url

if TYPE_CHECKING:
    import hvac

__all__ = [
    "AGENT_AUTH_TYPE",
    "DEFAULT_CACHE_TTL",
    "DEFAULT_CALL_BUDGET",
    "VaultSecrets",
    "check_vault_url",
    "clear_cache",
    "deadline",
    "parse_vault_ref",
    "vault_for",
    "vault_url",
]

DEFAULT_CACHE_TTL = 300.0
"""Seconds a KV read (or a path found empty) is reused: long enough for a batch; the Vault connection's
extra ``cache_ttl`` or ``VaultSecrets(cache_ttl=)`` changes it, and a shorter lease from Vault wins."""

_reads = ReadCache()
_shared: dict[str, VaultSecrets] = {}
_shared_lock = threading.Lock()


def vault_for(vault_conn_id: str = "vault_default") -> VaultSecrets:
    """The process's one :class:`VaultSecrets` for this connection (credentials, keys and Transit share it)."""
    with _shared_lock:
        vault = _shared.get(vault_conn_id)
        if vault is None:
            vault = _shared[vault_conn_id] = VaultSecrets(vault_conn_id)
        return vault


def clear_cache() -> None:
    """Forget every cached secret, login and shared access object (tests, a rotation, an edited connection)."""
    _reads.clear()
    forget_logins()
    with _shared_lock:
        _shared.clear()


def parse_vault_ref(ref: str) -> tuple[str, str]:
    """Split ``vault:<path>#<field>`` into path and field."""
    body = ref.removeprefix("vault:")
    path, sep, field = body.partition("#")
    if not sep or not path or not field:
        raise ConfigurationError(f"{ref!r} is not a Vault reference: write it as vault:<path>#<field>.")
    return path.strip("/"), field


class VaultSecrets(VaultCalls):
    """Authenticated access to Vault through the ``vault`` connection (hashicorp provider, or an agent).

    Adds what the hashicorp hook lacks: the address judged by the parser that connects, no environment
    proxies and no redirects (the token stays with its origin), bounded retries of 5xx and resets, a hard
    deadline per call, a read cache that lasts a batch, token renewal, one re-login on 403, and errors that
    name the path but never a value or a reply body. Prefer :func:`vault_for` to building one.
    """

    def __init__(self, vault_conn_id: str = "vault_default", *, cache_ttl: float | None = None) -> None:
        super().__init__(vault_conn_id)
        self.cache_ttl = None if cache_ttl is None else float(cache_ttl)
        """Seconds a read is reused; None = the connection's extra ``cache_ttl``, else DEFAULT_CACHE_TTL."""

    # -- KV -----------------------------------------------------------------------------------
    def read(
        self,
        path: str,
        *,
        mount: str = "secret",
        kv_version: int = 2,
        version: int | None = None,
        fresh: bool = False,
        setting: str | None = None,
        fields: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Read one KV secret, masked, from the cache unless ``fresh`` (after a 535: a rotated password).

        ``setting`` (the option that gave ``path``, e.g. ``vault_path``) and ``fields`` (the ones the caller
        needs) only shape the error when nothing is stored there: which option to fix, what to write.
        """
        path = path.strip("/")
        if kv_version == 1 and version is not None:
            raise ConfigurationError("vault_version needs KV v2; KV v1 has no versions.")
        where = f"{mount}/{path}"
        found = _reads.get(
            (self.vault_conn_id, mount, path, kv_version, version),
            lambda: self._read_kv(where, path, mount, kv_version, version),
            fresh=fresh or self.cache_ttl == 0,
            wait=call_budget(),
        )
        if isinstance(found, Absent):
            raise kv_missing_error(path, mount, setting=setting, fields=fields)
        return found

    def read_field(self, ref: str, *, mount: str = "secret", kv_version: int = 2) -> str:
        """Resolve a ``vault:<path>#<field>`` reference to its value."""
        path, field = parse_vault_ref(ref)
        data = self.read(path, mount=mount, kv_version=kv_version)
        if field not in data:
            raise VaultSecretError(f"Vault path {mount}/{path!s} has no field {field!r}.", path=f"{mount}/{path}")
        return str(data[field])

    def _read_kv(self, where: str, path: str, mount: str, kv_version: int, version: int | None) -> Loaded:
        """One KV read from Vault, its reply's shape checked: (fields or None if absent, seconds to keep)."""

        def op(client: hvac.Client) -> Any:
            if kv_version == 1:
                return client.secrets.kv.v1.read_secret(path=path, mount_point=mount)
            return client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, version=version, raise_on_deleted_version=True
            )

        error: VaultSecretError | None = None
        try:
            response = as_dict(self._call(where, op), where, "the reply")
        except PathMissing as exc:
            if not exc.no_mount:
                return None, self._keep_for(None)
            error = kv_mount_missing_error(path, mount)  # configuration, not an absent secret: never cached
        if error is not None:
            raise error
        data = as_dict(response.get("data"), where, "data")
        if kv_version == 2:
            data = as_dict(data.get("data"), where, "data.data")
        mask(data)
        return data, self._keep_for(response.get("lease_duration"))

    def _keep_for(self, lease: Any) -> float:
        """How long to reuse a read: our TTL, or the lease Vault gave if shorter (KV v1's ``ttl`` field)."""
        ttl = self.cache_ttl
        if ttl is None:
            ttl = login_for(self.vault_conn_id).cache_ttl
        if ttl is None:
            ttl = DEFAULT_CACHE_TTL
        if isinstance(lease, int) and lease > 0:
            ttl = min(ttl, float(lease))
        return ttl

    def secret_written_at(self, path: str, *, mount: str = "secret") -> tuple[datetime, int]:
        """When the current version of a KV v2 secret was written, and its number (never its value).

        For credential age: reads ``<mount>/metadata/<path>``, which needs the ``read`` capability there."""
        path = path.strip("/")
        where = f"{mount}/metadata/{path}"

        def op(client: hvac.Client) -> Any:
            return client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)

        error: VaultSecretError | None = None
        try:
            data = as_dict(as_dict(self._call(where, op), where, "the reply").get("data"), where, "data")
        except PathMissing:
            error = VaultSecretError(f"no secret at Vault path {mount}/{path}.", path=f"{mount}/{path}", missing=True)
        if error is not None:
            raise error
        current = data.get("current_version")
        version = as_dict(as_dict(data.get("versions"), where, "data.versions").get(str(current)), where, "version")
        try:
            written = datetime.fromisoformat(str(version.get("created_time")).replace("Z", "+00:00"))
        except ValueError:
            raise unexpected(where, "no created_time in the current version") from None
        return written, int(current)  # type: ignore[arg-type]

    # -- Transit ------------------------------------------------------------------------------
    def transit_data_key(self, key_name: str, *, mount: str = "transit") -> tuple[bytes, str]:
        """A fresh 256-bit data key: (plaintext bytes, wrapped ciphertext to store beside the data)."""
        where = f"{mount}/datakey/{key_name}"

        def op(client: hvac.Client) -> Any:
            return client.secrets.transit.generate_data_key(
                name=key_name, key_type="plaintext", bits=256, mount_point=mount
            )

        error: VaultSecretError | None = None
        try:
            reply = self._call(where, op)
        except (PathMissing, RequestRefused) as exc:
            if isinstance(exc, RequestRefused) and exc.reason != "key_missing":
                raise
            error = transit_missing_error(where, mount, key_name, no_mount=isinstance(exc, PathMissing))
        if error is not None:
            raise error  # how to create the engine or key, instead of "write a secret at transit/datakey/..."
        data = as_dict(as_dict(reply, where, "the reply").get("data"), where, "data")
        wrapped = data.get("ciphertext")
        if not isinstance(wrapped, str) or not wrapped.startswith("vault:"):
            raise unexpected(where, "no wrapped key in data.ciphertext")
        return b64_key(data.get("plaintext"), where), wrapped

    def transit_unwrap(self, key_name: str, wrapped: str, *, mount: str = "transit") -> bytes:
        """Decrypt a data key wrapped by :meth:`transit_data_key` (works across key rotations)."""
        where = f"{mount}/decrypt/{key_name}"

        def op(client: hvac.Client) -> Any:
            return client.secrets.transit.decrypt_data(name=key_name, ciphertext=wrapped, mount_point=mount)

        error: VaultSecretError | None = None
        try:
            reply = self._call(where, op)
        except PathMissing:
            error = transit_unwrap_mount_error(where, mount, key_name)
        if error is not None:
            raise error  # a key missing under a mounted engine stays RequestRefused: the archive words it
        data = as_dict(as_dict(reply, where, "the reply").get("data"), where, "data")
        return b64_key(data.get("plaintext"), where)
