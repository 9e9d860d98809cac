"""Opening one protected, authenticated SMTP session for a connection: its TLS policy and its Vault credentials.

The SSL context is built once per TLS policy and certificate material and shared by every session: loading a
CA bundle costs milliseconds per session otherwise. New material (a rotated ``vault:`` PEM, a rewritten file)
is a new key, hence a new context.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.transport.session import SessionInfo, SmtpCredentials, SmtpSession
from airflow_secure_mail.transport.tls import TLSPolicy

if TYPE_CHECKING:
    import ssl

    from airflow_secure_mail.connection.settings import SmtpSettings

_CONTEXTS: OrderedDict[tuple[Any, ...], ssl.SSLContext] = OrderedDict()
_CONTEXTS_LOCK = threading.Lock()
_MAX_CONTEXTS = 8
"""A few connections (and a rotation or two) per process; the oldest context goes first."""


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


def tls_context_for(policy: TLSPolicy) -> ssl.SSLContext | None:
    """The shared SSL context for ``policy`` and its certificate material (None without TLS); built once.

    The system trust store (no ``ca_cert``) is read when the context is first built, not again in this process.
    """
    if not policy.uses_tls:
        return None
    key = (policy, _file_stamps(policy))
    with _CONTEXTS_LOCK:  # single-flight: sessions opening together build one context
        context = _CONTEXTS.get(key)
        if context is None:
            context = _CONTEXTS[key] = policy.ssl_context()
            while len(_CONTEXTS) > _MAX_CONTEXTS:
                _CONTEXTS.popitem(last=False)
        _CONTEXTS.move_to_end(key)
    return context


def _file_stamps(policy: TLSPolicy) -> tuple[tuple[Any, ...], ...]:
    """Identity of each certificate given as a file path: a rewritten file is new material."""
    stamps: list[tuple[Any, ...]] = []
    for value in (policy.ca_cert, policy.client_cert, policy.client_key):
        if value and "-----BEGIN" not in value:
            try:
                st = os.stat(value)
            except OSError:
                stamps.append((value,))  # ssl_context() says what is wrong with it
                continue
            stamps.append((value, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(stamps)


async def open_session(settings: SmtpSettings, vault: Any) -> SmtpSession:
    """Credentials first (a sealed Vault opens no SMTP connection), then TLS and AUTH, within extra ``deadline``."""
    from airflow_secure_mail.connection.credentials import read_credentials
    from airflow_secure_mail.vault import deadline

    async def credentials(fresh: bool) -> SmtpCredentials:
        return await read_credentials(settings, vault, fresh)

    with deadline(settings.deadline):
        policy = await asyncio.to_thread(tls_policy_for, settings, vault)
        context = await asyncio.to_thread(tls_context_for, policy)
        session = SmtpSession(policy, credentials, timeout=settings.timeout, tls_context=context)
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
