"""SecureSmtpHook: reads the ``securesmtp`` connection, fetches credentials from Vault, sends over TLS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from airflow.sdk import BaseHook

from airflow_secure_mail._sync import run_sync
from airflow_secure_mail.errors import ConfigurationError, DeliveryError, SecureMailError
from airflow_secure_mail.hooks.connection_fields import CONN_TYPE
from airflow_secure_mail.hooks.settings import SmtpSettings
from airflow_secure_mail.transport.smtp import (
    SendReceipt,
    SessionInfo,
    SmtpCredentials,
    SmtpSession,
)
from airflow_secure_mail.transport.tls import TLSPolicy

log = logging.getLogger(__name__)


def envelope_of(message: EmailMessage) -> tuple[str | None, list[str]]:
    """Envelope sender and recipients from headers we composed (To, Cc, Bcc), as addr-specs."""
    recipients: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for header in message.get_all(name) or ():
            recipients.extend(a.addr_spec for a in getattr(header, "addresses", ()) if a.addr_spec)
    sender_header = message.get("From")
    addrs = getattr(sender_header, "addresses", ()) if sender_header is not None else ()
    return (addrs[0].addr_spec if addrs else None), list(dict.fromkeys(recipients))


def message_bytes(message: EmailMessage | bytes) -> bytes:
    """Wire bytes with CRLF line endings; Bcc left out so it never reaches a header (the caller's copy keeps it)."""
    if isinstance(message, bytes):
        return message
    import copy
    from email import policy

    if "Bcc" in message:
        message = copy.copy(message)
        del message["Bcc"]
    return message.as_bytes(policy=policy.SMTP)


class SecureSmtpHook(BaseHook):
    """Sends mail over verified TLS with credentials read from Vault at send time.

    One async core (:meth:`asend`); :meth:`send` runs it for sync callers.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "secure_smtp_default"
    conn_type = CONN_TYPE
    hook_name = "Secure SMTP"

    def __init__(self, conn_id: str = default_conn_name, *, vault: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self._vault = vault
        self._settings: SmtpSettings | None = None

    # -- configuration -------------------------------------------------------------------------
    @property
    def settings(self) -> SmtpSettings:
        if self._settings is None:
            self._settings = SmtpSettings.from_connection(self.get_connection(self.conn_id))
        return self._settings

    @property
    def vault(self) -> Any:
        if self._vault is None:
            from airflow_secure_mail.vault import VaultSecrets

            self._vault = VaultSecrets(self.settings.vault_conn_id)
        return self._vault

    def sender(self, explicit: str | None = None) -> str:
        """The envelope sender: ``explicit`` if given, else the connection's ``from_email``."""
        sender = explicit or self.settings.from_email
        if not sender:
            raise ConfigurationError(
                f"no sender: pass sender= (or From) or set extra from_email on connection {self.conn_id!r}."
            )
        return sender

    def _resolve(self, value: str | None) -> str | None:
        if value and value.startswith("vault:"):
            return str(self.vault.read_field(value, mount=self.settings.vault_mount))
        return value

    def tls_policy(self) -> TLSPolicy:
        """The connection's TLSPolicy, with ``vault:`` certificate references resolved."""
        s = self.settings
        return TLSPolicy(
            host=s.host,
            port=s.port,
            security=s.security,  # type: ignore[arg-type]
            min_tls_version=s.min_tls_version,
            ca_cert=self._resolve(s.ca_cert),
            client_cert=self._resolve(s.client_cert),
            client_key=self._resolve(s.client_key),
        )

    async def _credentials(self, fresh: bool) -> SmtpCredentials:
        s = self.settings
        if s.auth == "none":
            return SmtpCredentials(mechanism="none")
        assert s.vault_path
        data = await asyncio.to_thread(
            self.vault.read,
            s.vault_path,
            mount=s.vault_mount,
            kv_version=s.vault_kv_version,
            version=s.vault_version,
            fresh=fresh,
        )
        if s.oauth_endpoint:
            from airflow_secure_mail.transport.oauth import OAuthClient, access_token

            client = OAuthClient(
                token_url=s.oauth_endpoint,
                client_id=str(data.get("client_id") or ""),
                client_secret=data.get("client_secret"),
                refresh_token=data.get("refresh_token"),
                scope=s.oauth_scope,
            )
            token = await asyncio.to_thread(access_token, client, fresh=fresh)
            return SmtpCredentials(mechanism=s.auth, username=data.get("username"), secret=token)
        secret_field = "password" if s.auth == "password" else "access_token"
        return SmtpCredentials(mechanism=s.auth, username=data.get("username"), secret=data.get(secret_field))

    async def _open(self) -> SmtpSession:
        policy = await asyncio.to_thread(self.tls_policy)
        session = SmtpSession(policy, self._credentials, timeout=self.settings.timeout)
        await session.open()
        return session

    # -- sending ---------------------------------------------------------------------------------
    def _prepare(
        self, message: EmailMessage | bytes, sender: str | None, recipients: Sequence[str] | None
    ) -> tuple[str, list[str], bytes, str | None]:
        message_id: str | None = None
        if isinstance(message, EmailMessage):
            header_sender, header_rcpts = envelope_of(message)
            sender = sender or header_sender
            recipients = list(recipients) if recipients is not None else header_rcpts
            message_id = message.get("Message-ID")
        sender = self.sender(sender)
        if not recipients:
            raise ConfigurationError("no recipients: pass recipients= or set To/Cc/Bcc.")
        return sender, list(recipients), message_bytes(message), message_id

    async def asend(
        self,
        message: EmailMessage | bytes,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        allow_partial: bool = False,
    ) -> SendReceipt:
        """Send one message, retrying transient failures on a fresh connection."""
        envelope = self._prepare(message, sender, recipients)
        return check_outcomes(await self.adeliver_each([envelope]), allow_partial)[0]

    def send(
        self,
        message: EmailMessage | bytes,
        *,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        allow_partial: bool = False,
    ) -> SendReceipt:
        """Sync facade over :meth:`asend`."""
        return run_sync(self.asend(message, sender=sender, recipients=recipients, allow_partial=allow_partial))

    async def asend_many(
        self,
        messages: Iterable[EmailMessage | bytes | tuple[str, Sequence[str], bytes]],
        *,
        concurrency: int = 4,
        allow_partial: bool = False,
    ) -> list[SendReceipt]:
        """Send many messages over up to ``concurrency`` reused sessions; raises if any failed."""
        prepared: list[tuple[str, list[str], bytes, str | None]] = []
        for m in messages:
            if isinstance(m, tuple):
                prepared.append((m[0], list(m[1]), m[2], None))
            else:
                prepared.append(self._prepare(m, None, None))
        return check_outcomes(await self.adeliver_each(prepared, concurrency=concurrency), allow_partial)

    def send_many(
        self,
        messages: Iterable[EmailMessage | bytes | tuple[str, Sequence[str], bytes]],
        *,
        concurrency: int = 4,
        allow_partial: bool = False,
    ) -> list[SendReceipt]:
        """Sync facade over :meth:`asend_many`."""
        return run_sync(self.asend_many(messages, concurrency=concurrency, allow_partial=allow_partial))

    async def adeliver_each(
        self, envelopes: list[tuple[str, list[str], bytes, str | None]], *, concurrency: int = 1
    ) -> list[SendReceipt | SecureMailError]:
        """One outcome per message, in order, never raising for a single message's failure.

        Up to ``concurrency`` sessions are opened and reused; the whole batch is bounded by extra ``deadline``.
        """
        s = self.settings
        results: list[SendReceipt | SecureMailError | None] = [None] * len(envelopes)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(envelopes)):
            queue.put_nowait(index)

        async def worker() -> None:
            session: SmtpSession | None = None
            try:
                while not queue.empty():
                    index = queue.get_nowait()
                    try:
                        session, results[index] = await self._send_with_retries(session, envelopes[index])
                    except SecureMailError as exc:
                        results[index] = exc
                        session = None
            finally:
                if session is not None:
                    await session.close()

        workers = max(1, min(concurrency, len(envelopes)))
        try:
            async with asyncio.timeout(s.deadline):
                await asyncio.gather(*(worker() for _ in range(workers)))
        except TimeoutError:
            timeout = DeliveryError(
                f"sending did not finish within {s.deadline:.0f}s; raise extra deadline or check the server.",
                transient=True,
            )
            results = [timeout if r is None else r for r in results]
        return [r for r in results if r is not None]

    async def _send_with_retries(
        self, session: SmtpSession | None, envelope: tuple[str, list[str], bytes, str | None]
    ) -> tuple[SmtpSession | None, SendReceipt]:
        """Transient failures get a fresh connection with jittered exponential backoff (tenacity)."""
        from tenacity import (
            AsyncRetrying,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential_jitter,
        )

        s = self.settings
        sender, recipients, data, message_id = envelope
        attempts = 0
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(s.retries + 1),
            wait=wait_exponential_jitter(initial=s.retry_backoff, max=max(s.retry_backoff, 30.0)),
            retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.transient),
            reraise=True,
        ):
            with attempt:
                attempts += 1
                if session is None:
                    session = await self._open()
                try:
                    receipt = await session.send(sender, recipients, data, message_id=message_id)
                except DeliveryError as exc:
                    if exc.transient:
                        log.warning("transient SMTP failure (attempt %d): %s", attempts, exc)
                    await session.close()
                    session = None
                    raise
        return session, _with_attempts(receipt, attempts)

    # -- connection test -------------------------------------------------------------------------
    async def atest_connection(self) -> tuple[bool, str]:
        """Connect, negotiate TLS and authenticate; send nothing. Returns (ok, one-line detail)."""
        try:
            session = await self._open()
        except SecureMailError as exc:
            return False, str(exc)
        info = session.info
        await session.close()
        return True, describe_session(info)

    def test_connection(self) -> tuple[bool, str]:
        return run_sync(self.atest_connection())

    async def aconnection_info(self) -> SessionInfo:
        session = await self._open()
        await session.close()
        return session.info


def check_outcomes(
    outcomes: list[SendReceipt | SecureMailError], allow_partial: bool, hidden: Collection[str] = ()
) -> list[SendReceipt]:
    """Raise the first failure (or a partial refusal unless allowed); else the receipts.

    The message names refused recipients, except those in ``hidden`` (Bcc): it ends up in the task log.
    """
    receipts: list[SendReceipt] = []
    for result in outcomes:
        if isinstance(result, BaseException):
            raise result
        if result.refused and not allow_partial:
            refused = ", ".join(f"{_shown(r, hidden)} ({c})" for r, (c, _) in result.refused.items())
            raise DeliveryError(
                f"{len(result.refused)} of {len(result.refused) + len(result.accepted)} recipients "
                f"refused: {refused}; the others received it.",
                refused=result.refused,
                receipt=result,
            )
        receipts.append(result)
    return receipts


def _shown(address: str, hidden: Collection[str]) -> str:
    """The address, unless it is one of ``hidden`` (as given, display name or case aside)."""
    needle = address.lower()
    return "a Bcc recipient" if any(needle in h.lower() for h in hidden) else address


def _with_attempts(receipt: SendReceipt, attempts: int) -> SendReceipt:
    from dataclasses import replace

    return replace(receipt, attempts=attempts)


def describe_session(info: SessionInfo) -> str:
    """One line a human can read in the connection test dialog."""
    parts = [f"{info.tls_version or 'no TLS'} {info.cipher or ''}".strip()]
    if info.cert_subject:
        parts.append(f"cert {info.cert_subject} issued by {info.cert_issuer}")
    if info.cert_not_after:
        days = (info.cert_not_after - datetime.now(UTC)).days
        parts.append(f"expires in {days} days" + (" (WARNING: renew soon)" if days < 14 else ""))
    parts.append("AUTH " + (",".join(info.auth_mechanisms) or "none offered"))
    if info.authenticated_as:
        parts.append("authenticated")
    if info.size_limit:
        parts.append(f"SIZE {info.size_limit}")
    return "; ".join(parts)
