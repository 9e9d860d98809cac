"""SmtpClient: one ``securesmtp`` connection's verified sessions (TLS policy, Vault credentials) and delivery.

The pipeline delivers through it; :class:`~airflow_secure_mail.hooks.smtp.SecureSmtpHook` is its Airflow face.

The SSL context is built once per TLS policy and certificate material and shared by every session: loading a
CA bundle costs milliseconds per session otherwise. New material (a rotated ``vault:`` PEM, a rewritten file)
is a new key, hence a new context.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_secure_mail import _metrics
from airflow_secure_mail.errors import SecureMailError, VaultSecretError
from airflow_secure_mail.transport.session import SendReceipt, SessionInfo, SmtpCredentials, SmtpSession
from airflow_secure_mail.transport.tls import TLSPolicy

if TYPE_CHECKING:
    import ssl

    from airflow_secure_mail.connection.settings import SmtpSettings
    from airflow_secure_mail.mail.outgoing import Outgoing
    from airflow_secure_mail.transport.batch import Outcome

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
        try:
            return await read_credentials(settings, vault, fresh)
        except VaultSecretError as exc:
            if exc.missing:  # the SMTP secret is not in Vault: an error here, not "none stored"
                _metrics.incr("vault_errors", kind="missing")
            raise

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
    from airflow_secure_mail.transport.describe import describe_session

    try:
        async with asyncio.timeout(settings.deadline):
            info = await session_info(settings, vault)
    except TimeoutError:
        return False, f"no answer within {settings.deadline:.0f}s (extra deadline)."
    except SecureMailError as exc:
        return False, str(exc)
    return True, describe_session(info)


class SmtpClient:
    """Delivers Outgoing copies over verified TLS with credentials read from Vault when a session opens.

    Built from a connection's settings; knows nothing of screening or the archive (the pipeline does that).
    """

    def __init__(self, conn_id: str, settings: SmtpSettings, *, vault: Any = None) -> None:
        self.conn_id = conn_id
        self.settings = settings
        self._vault = vault

    @classmethod
    def for_conn(cls, conn_id: str = "secure_smtp_default", *, vault: Any = None) -> SmtpClient:
        """The client of connection ``conn_id``, read as Airflow reads connections (secrets backends first)."""
        from airflow.sdk import BaseHook

        from airflow_secure_mail.connection.settings import SmtpSettings

        return cls(conn_id, SmtpSettings.from_connection(BaseHook.get_connection(conn_id)), vault=vault)

    @property
    def vault(self) -> Any:
        """The process's one Vault access object for this connection's Vault (credentials, keys, certificates)."""
        if self._vault is None:
            from airflow_secure_mail.vault import vault_for

            self._vault = vault_for(self.settings.vault_conn_id)
        return self._vault

    def tls_policy(self) -> TLSPolicy:
        """The connection's TLSPolicy, with ``vault:`` certificate references resolved."""
        return tls_policy_for(self.settings, self.vault)

    async def open(self) -> SmtpSession:
        """A new verified, authenticated session."""
        return await open_session(self.settings, self.vault)

    async def adeliver(
        self,
        batch: Sequence[Outgoing] | Any,
        *,
        concurrency: int = 1,
        on_outcome: Callable[[int, Outgoing, Outcome], Awaitable[None]] | None = None,
        opening_failures: list[SecureMailError] | None = None,
    ) -> list[SendReceipt | SecureMailError]:
        """Deliver each copy as is; one outcome per copy, in order, never raising for one copy's failure.

        Up to ``concurrency`` reused sessions, at most ``max_messages_per_minute``; the connection's
        ``deadline`` bounds the whole batch, Vault included. ``on_outcome`` hears of each copy as it ends.
        ``opening_failures`` collects each error raised while a session opened (connect, TLS, AUTH, the
        credentials): a copy whose outcome is one of them never reached DATA, so another relay may send it.
        """
        from airflow_secure_mail.transport.batch import deliver_batch
        from airflow_secure_mail.vault import deadline as vault_deadline

        opener = self.open
        if opening_failures is not None:
            failures = opening_failures

            async def opener() -> SmtpSession:
                try:
                    return await self.open()
                except SecureMailError as exc:
                    failures.append(exc)
                    raise

        limits = self.settings.delivery_limits(self.conn_id, concurrency=concurrency)
        with vault_deadline(self.settings.deadline):
            return await deliver_batch(batch, opener, limits, on_outcome)

    def within(self, seconds: float) -> SmtpClient:
        """This client with its deadline cut to ``seconds`` (a fallback gets what is left of the primary's)."""
        from dataclasses import replace

        if seconds >= self.settings.deadline:
            return self
        return SmtpClient(self.conn_id, replace(self.settings, deadline=max(seconds, 0.001)), vault=self._vault)

    async def check(self) -> tuple[bool, str]:
        """Connect, negotiate TLS and authenticate; send nothing. Returns (ok, one-line detail)."""
        return await check_connection(self.settings, self.vault)

    async def info(self) -> SessionInfo:
        """What a session negotiates, from one opened and closed at once."""
        return await session_info(self.settings, self.vault)
