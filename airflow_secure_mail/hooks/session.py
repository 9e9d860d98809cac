"""Opening one protected, authenticated SMTP session for a connection: its TLS policy and its Vault credentials."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.transport.smtp import SessionInfo, SmtpCredentials, SmtpSession
from airflow_secure_mail.transport.tls import TLSPolicy

if TYPE_CHECKING:
    from airflow_secure_mail.hooks.settings import SmtpSettings


def tls_policy_for(settings: SmtpSettings, vault: Any) -> TLSPolicy:
    """The connection's TLSPolicy, with ``vault:<path>#<field>`` certificate references read from Vault."""

    def resolve(value: str | None) -> str | None:
        if value and value.startswith("vault:"):
            return str(vault.read_field(value, mount=settings.vault_mount))
        return value

    return TLSPolicy(
        host=settings.host,
        port=settings.port,
        security=settings.security,  # type: ignore[arg-type]
        min_tls_version=settings.min_tls_version,
        ca_cert=resolve(settings.ca_cert),
        client_cert=resolve(settings.client_cert),
        client_key=resolve(settings.client_key),
    )


async def open_session(settings: SmtpSettings, vault: Any) -> SmtpSession:
    """Credentials first (a sealed Vault opens no SMTP connection), then TLS and AUTH, within extra ``deadline``."""
    from airflow_secure_mail.hooks.credentials import read_credentials
    from airflow_secure_mail.vault import deadline

    async def credentials(fresh: bool) -> SmtpCredentials:
        return await read_credentials(settings, vault, fresh)

    with deadline(settings.deadline):
        policy = await asyncio.to_thread(tls_policy_for, settings, vault)
        session = SmtpSession(policy, credentials, timeout=settings.timeout)
        await session.open()
    return session


async def session_info(settings: SmtpSettings, vault: Any) -> SessionInfo:
    """What a session negotiates (TLS, certificate, AUTH, SIZE), from a session opened and closed at once."""
    session = await open_session(settings, vault)
    await session.close()
    return session.info


async def check_connection(settings: SmtpSettings, vault: Any) -> tuple[bool, str]:
    """(ok, one line) for the connection test: connect, TLS, AUTH, within extra ``deadline``; sends nothing."""
    from airflow_secure_mail.errors import SecureMailError
    from airflow_secure_mail.transport.describe import describe_session

    try:
        async with asyncio.timeout(settings.deadline):
            info = await session_info(settings, vault)
    except TimeoutError:
        return False, f"no answer within {settings.deadline:.0f}s (extra deadline)."
    except SecureMailError as exc:
        return False, str(exc)
    return True, describe_session(info)
