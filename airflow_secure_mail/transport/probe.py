"""What a port speaks, asked once after a connect failed: implicit TLS where STARTTLS was set, or the reverse.

A client set to STARTTLS on an implicit-TLS port connects and then waits for a greeting the server will never
send (it waits for our TLS hello); the reverse reads ``220 …`` where a TLS record should be. Both are a wrong
``security`` setting, not a network fault: one probe bounded by the session's timeout tells which, and the send
fails at once with the setting to change instead of retrying a connection that cannot work.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING

from airflow_secure_mail.errors import TransportSecurityError

if TYPE_CHECKING:
    from airflow_secure_mail.transport.tls import TLSPolicy

PROBE_TIMEOUT = 5.0
"""Longest one probe may take (a TLS server answers a hello, an SMTP server greets, within milliseconds)."""

_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST")
"""OpenSSL's reasons for bytes that are not a TLS record where the server's hello should be."""


async def security_mismatch(
    exc: BaseException, policy: TLSPolicy, context: ssl.SSLContext | None, timeout: float
) -> TransportSecurityError | None:
    """The error to raise if ``exc`` came from a ``security`` setting that does not match what the port speaks."""
    where = f"{policy.host}:{policy.port}"
    budget = max(0.05, min(timeout, PROBE_TIMEOUT))
    host, port = policy.host, policy.port
    if policy.security != "tls" and _no_greeting(exc):
        if not await speaks_tls(host, port, context or policy.ssl_context(), budget):
            return None
        return TransportSecurityError(
            f"{where} sent no SMTP greeting: port {port} speaks implicit TLS: set security=tls "
            "(or use the STARTTLS port, usually 587)."
        )
    if policy.security == "tls" and _not_tls(exc):
        if not await speaks_plain_smtp(host, port, budget):
            return None
        return TransportSecurityError(
            f"{where} answered the TLS handshake in plain text: the port speaks plain SMTP first: set "
            "security=starttls (or use the implicit-TLS port, usually 465)."
        )
    return None


def _no_greeting(exc: BaseException) -> bool:
    """TCP connected but the greeting timed out (aiosmtplib: a connect timeout caused by a read timeout)."""
    import aiosmtplib

    return isinstance(exc, aiosmtplib.SMTPConnectTimeoutError) and isinstance(
        exc.__cause__, aiosmtplib.SMTPTimeoutError
    )


def _not_tls(exc: BaseException) -> bool:
    """The TLS handshake read bytes that are not TLS."""
    cur: BaseException | None = exc
    for _ in range(6):
        if cur is None:
            return False
        if isinstance(cur, ssl.SSLError) and (cur.reason or "") in _NOT_TLS:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


async def speaks_tls(host: str, port: int, context: ssl.SSLContext, timeout: float) -> bool:
    """Whether the port answers a TLS hello with TLS: a handshake, a certificate we do not trust, or a TLS alert.

    Our verifying context is used: nothing is sent after the handshake, and a certificate error still proves TLS.
    """
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host, ssl_handshake_timeout=timeout),
            timeout,
        )
    except ssl.SSLCertVerificationError:
        return True
    except ssl.SSLError as exc:
        return (exc.reason or "").startswith(("TLSV1_ALERT", "SSLV3_ALERT", "TLSV13_ALERT"))
    except (OSError, TimeoutError):
        return False
    await _close(writer)
    return True


async def speaks_plain_smtp(host: str, port: int, timeout: float) -> bool:
    """Whether the port greets in plain text with ``220`` (an SMTP server expecting STARTTLS, or none)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError, ValueError):
        line = b""
    await _close(writer)
    return line[:4] in (b"220 ", b"220-")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
