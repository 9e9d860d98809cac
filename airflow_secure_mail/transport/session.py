"""One SMTP session on aiosmtplib: connect, TLS (implicit or mandatory STARTTLS), AUTH, send raw bytes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from airflow_secure_mail import _metrics
from airflow_secure_mail.errors import DeliveryError, SecureMailError, TransportSecurityError, detached
from airflow_secure_mail.transport.auth import AuthMechanism, CredentialSource, SmtpCredentials, authenticate
from airflow_secure_mail.transport.describe import certificate_expiry
from airflow_secure_mail.transport.handshake import check_tls, start_tls
from airflow_secure_mail.transport.probe import security_mismatch
from airflow_secure_mail.transport.receipt import SendReceipt, SessionInfo
from airflow_secure_mail.transport.replies import TRANSIENT_CODES, connect_error
from airflow_secure_mail.transport.tls import TLSPolicy
from airflow_secure_mail.transport.transaction import transact

if TYPE_CHECKING:
    import ssl

    import aiosmtplib

log = logging.getLogger(__name__)


class SmtpSession:
    """An open, protected and authenticated SMTP session: :meth:`open`, then :meth:`send` many, then :meth:`close`."""

    def __init__(
        self,
        policy: TLSPolicy,
        credentials: CredentialSource,
        *,
        timeout: float = 30.0,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """``tls_context``: one the caller built from ``policy`` and shares between sessions; else built here."""
        self.policy = policy
        self._tls_context = tls_context
        self._credentials = credentials
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._smtp: aiosmtplib.SMTP | None = None
        self.info = SessionInfo()

    @property
    def is_open(self) -> bool:
        """Connected and not closed: it can carry another message."""
        return self._smtp is not None and self._smtp.is_connected

    @property
    def where(self) -> str:
        return f"{self.policy.host}:{self.policy.port}"

    async def open(self) -> None:
        """Read credentials first (a sealed Vault opens no SMTP connection), then connect, TLS, AUTH.

        Errors are raised outside ``except`` blocks and detached: what aiosmtplib raised (server replies)
        never rides along as ``__context__``.
        """
        import aiosmtplib

        creds = await self._credentials(False)
        policy = self.policy
        smtp = aiosmtplib.SMTP(
            hostname=policy.host,
            port=policy.port,
            use_tls=policy.security == "tls",
            start_tls=False,
            tls_context=(self._tls_context or policy.ssl_context()) if policy.uses_tls else None,
            timeout=self.timeout,
            local_hostname=self.local_hostname,
        )
        self._smtp = smtp
        error: Exception | None = None
        failure: Exception | None = None
        try:
            await self._connect(smtp)
            await self._authenticate(smtp, creds)
        except SecureMailError as exc:
            error = exc
        except Exception as exc:
            failure = exc
        if failure is not None:  # a wrong ``security`` for the port is said at once, not retried as the network
            mismatch = await security_mismatch(failure, policy, self._tls_context, self.timeout)
            error = mismatch or connect_error(failure, policy)
        if error is not None:
            await self.close()
            raise detached(error)
        self._report_certificate()

    def _report_certificate(self) -> None:
        """Gauge ``relay_cert_days_left`` (tagged and named by host): days until the relay's certificate expires."""
        expiry = certificate_expiry(self.info)
        if expiry is not None:
            _metrics.gauge("relay_cert_days_left", expiry.days_left, host=self.policy.host)

    async def _connect(self, smtp: aiosmtplib.SMTP) -> None:
        await smtp.connect()
        await smtp.ehlo()
        if self.policy.security == "starttls":
            await start_tls(smtp, self.policy)
            await smtp.ehlo()
        check_tls(smtp, self.policy, self.info)
        self.info.auth_mechanisms = tuple(m.upper() for m in smtp.server_auth_methods)
        size = smtp.esmtp_extensions.get("size", "")
        self.info.size_limit = int(size) if size.strip().isdigit() and int(size) > 0 else None

    async def _authenticate(self, smtp: aiosmtplib.SMTP, creds: SmtpCredentials) -> None:
        if creds.mechanism == "none":
            return
        if self.policy.uses_tls and smtp.get_transport_info("ssl_object") is None:
            raise TransportSecurityError("refusing to send AUTH over an unencrypted connection.")
        offered = set(self.info.auth_mechanisms)
        used = await authenticate(smtp, creds, self._credentials, host=self.policy.host, offered=offered)
        self.info.authenticated_as = used.username

    async def send(
        self, sender: str, recipients: Sequence[str], data: bytes, *, message_id: str | None = None
    ) -> SendReceipt:
        """Send the exact bytes; refusals are reported in the receipt, whole-message failures raised."""
        smtp = self._smtp
        if smtp is None:
            raise DeliveryError("the SMTP session is not open.", transient=True)
        limit = self.info.size_limit
        if limit and len(data) > limit:
            raise DeliveryError(
                f"message is {len(data)} bytes but {self.policy.host} accepts at most {limit} (SIZE); "
                "shrink it or its attachments.",
                code=552,
            )
        started = datetime.now(UTC)
        refused, reply = await transact(smtp, self.where, sender, recipients, data)
        return SendReceipt(
            message_id=message_id,
            sender=sender,
            accepted=tuple(r for r in recipients if r not in refused),
            refused=refused,
            reply=reply,
            tls_version=self.info.tls_version,
            cipher=self.info.cipher,
            started_at=started,
            finished_at=datetime.now(UTC),
            size=len(data),
        )

    async def close(self, timeout: float = 5.0) -> None:
        """QUIT, waiting at most ``timeout`` for the server; the connection is closed however that ends."""
        smtp, self._smtp = self._smtp, None
        if smtp is None or not smtp.is_connected:
            return
        try:
            with contextlib.suppress(Exception):  # a relay that does not answer QUIT is closed all the same
                await asyncio.wait_for(smtp.quit(), timeout=max(timeout, 0.0))
        finally:  # cancelled too: never leave the socket open
            smtp.close()

    def abort(self) -> None:
        """Close the connection now, without QUIT: a deadline ran out and the server's answer cannot be waited for."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


__all__ = [
    "TRANSIENT_CODES",
    "AuthMechanism",
    "CredentialSource",
    "SendReceipt",
    "SessionInfo",
    "SmtpCredentials",
    "SmtpSession",
]
