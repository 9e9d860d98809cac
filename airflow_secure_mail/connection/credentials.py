"""SMTP credentials read from Vault at connect time: username and password, a stored token, or an OAuth2 grant."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import VaultSecretError
from airflow_secure_mail.transport.session import SmtpCredentials

if TYPE_CHECKING:
    from airflow_secure_mail.connection.settings import SmtpSettings


async def read_credentials(settings: SmtpSettings, vault: Any, fresh: bool) -> SmtpCredentials:
    """Read and check the secret's fields; called before any SMTP connection opens (``fresh``: past the cache)."""
    s = settings
    if s.auth == "none":
        return SmtpCredentials(mechanism="none")
    assert s.vault_path
    secret_field = "password" if s.auth == "password" else "access_token"
    needed = ("username", "client_id", "client_secret") if s.oauth_endpoint else ("username", secret_field)
    data = await asyncio.to_thread(
        vault.read, s.vault_path, mount=s.vault_mount, kv_version=s.vault_kv_version, version=s.vault_version,
        fresh=fresh, setting="vault_path", fields=needed,
    )  # fmt: skip
    where = f"{s.vault_mount}/{s.vault_path.strip('/')}"
    if s.oauth_endpoint:
        return await _oauth_credentials(settings, data, where, fresh)
    username, secret = _secret_fields(data, where, ("username", secret_field))
    return SmtpCredentials(mechanism=s.auth, username=username, secret=secret)


async def _oauth_credentials(settings: SmtpSettings, data: dict[str, Any], where: str, fresh: bool) -> SmtpCredentials:
    """A client-credentials or refresh-token grant from Vault, exchanged at the token endpoint."""
    from airflow_secure_mail.transport.oauth import OAuthClient, access_token

    assert settings.oauth_endpoint
    present = tuple(f for f in ("client_secret", "refresh_token") if data.get(f) is not None)
    username, client_id, *grant = _secret_fields(data, where, ("username", "client_id", *present))
    if not grant:
        _secret_fields(data, where, ("client_secret",))  # names the missing field
    given = dict(zip(present, grant, strict=True))
    client = OAuthClient(
        token_url=settings.oauth_endpoint,
        client_id=client_id,
        client_secret=given.get("client_secret"),
        refresh_token=given.get("refresh_token"),
        scope=settings.oauth_scope,
    )
    token = await asyncio.to_thread(access_token, client, fresh=fresh)
    return SmtpCredentials(mechanism=settings.auth, username=username, secret=token)


def _secret_fields(data: dict[str, Any], where: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """The named fields as non-empty strings, or a VaultSecretError naming the field (never its value)."""
    values: list[str] = []
    for name in names:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            what = "missing" if value is None else ("empty" if isinstance(value, str) else f"a {type(value).__name__}")
            raise VaultSecretError(
                f"Vault secret {where!r} field {name!r} must be a non-empty string but is {what}: fix it in Vault.",
                path=where,
            )
        values.append(value)
    return tuple(values)
