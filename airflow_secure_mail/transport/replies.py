"""What SMTP replies and socket failures mean for us: our error family, transient or not, throttling or not."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Literal

from airflow_secure_mail.errors import DeliveryError, TransportSecurityError
from airflow_secure_mail.transport.tls import TLSPolicy

TRANSIENT_CODES = frozenset({421, 432, 450, 451, 452, 454})
_BUSY_GREETINGS = frozenset({421, 432, 450, 451, 452})
"""A greeting with one of these refuses the connection for now (too many connections, busy): a throttling signal."""
Stage = Literal["MAIL", "RCPT", "DATA"]

QUOTA_REPLIES: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (554, "5.2.0", ()),  # Microsoft 365: "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"
    (550, "5.4.5", ()),  # Gmail / Google Workspace: "Daily user sending limit exceeded"
    (421, "4.7.", ("daily", "quota")),  # a deferral that names a daily limit or a quota
    (550, "5.7.", ("daily", "quota")),
)
"""The replies that say the relay's daily quota is used up: (code, enhanced status prefix, words one of which
the text must hold; none: any text). The one list, kept here."""
TOO_MANY_CONNECTIONS = (432, "4.3.2")
"""The greeting (or reply) that says we hold too many connections: the shared connection cap is lowered."""


def _enhanced(text: str) -> str:
    return text.split(maxsplit=1)[0] if text.strip() else ""


def is_quota_exhausted(code: int, text: str) -> bool:
    """The relay refused for a quota that lasts (its daily sending limit): not worth retrying today."""
    enhanced, lowered = _enhanced(text), text.lower()
    for quota_code, prefix, words in QUOTA_REPLIES:
        if code == quota_code and enhanced.startswith(prefix) and (not words or any(w in lowered for w in words)):
            return True
    return False


def is_too_many_connections(code: int, text: str) -> bool:
    """``432 4.3.2``: too many connections from us."""
    return (code, _enhanced(text)) == TOO_MANY_CONNECTIONS


def quota_error(where: str, stage: str, code: int, text: str) -> DeliveryError:
    """The relay's daily quota is used up (``exhausted``): bulk mail stops until the next UTC day."""
    shown = _enhanced(text) if stage == "RCPT" else text[:120]
    return DeliveryError(
        f"{where} refused for its daily quota at {stage} ({code} {shown}); bulk mail through it stops until "
        "00:00 UTC (alert mail goes through extra fallback_conn_ids if set).",
        code=code,
        exhausted=True,
    )


def is_throttling(code: int, text: str) -> bool:
    """A relay asking us to slow down: ``421 4.7.x``, ``432 4.3.2``, ``450 4.2.1``, or ``454`` saying Throttling.

    A daily-quota reply (:func:`is_quota_exhausted`) is not throttling: slowing down does not help today.
    """
    if is_quota_exhausted(code, text):
        return False
    enhanced = _enhanced(text)
    if code == 421:
        return enhanced.startswith("4.7.")
    if code == 432:
        return enhanced == "4.3.2"
    if code == 450:
        return enhanced == "4.2.1"
    return code == 454 and "throttl" in text.lower()


def reply_error(where: str, stage: str, code: int, text: str) -> DeliveryError:
    """A whole-message refusal at ``stage``; throttling is named as such (it is retried, not failed).

    At RCPT only the enhanced status code is kept: the reply may name a recipient, perhaps a Bcc one.
    """
    if is_quota_exhausted(code, text):
        return quota_error(where, stage, code, text)
    shown = (text.split(maxsplit=1) or [""])[0] if stage == "RCPT" else text[:120]
    if is_throttling(code, text):
        return DeliveryError(f"{where} is throttling us at {stage} ({code} {shown}).", code=code, throttled=True)
    transient = code in TRANSIENT_CODES
    return DeliveryError(
        f"{where} answered {code} {shown!r} at {stage}" + ("; try again later." if transient else "."),
        code=code,
        transient=transient,
    )


def greeting_error(where: str, code: int, text: str) -> DeliveryError:
    """A greeting other than 220; a busy one (4xx) is throttling, with or without an enhanced status code.

    Relays say "too many connections" in many ways (``432 4.3.2``, ``421 Service not available``, ``450``);
    each means: come back later, slower. Treated as throttling, every session backs off before connecting.
    A greeting that names the daily quota is that instead.
    """
    if is_quota_exhausted(code, text):
        return quota_error(where, "the greeting", code, text)
    if code in _BUSY_GREETINGS:
        return DeliveryError(
            f"{where} is throttling us at the greeting ({code} {text[:120]}).", code=code, throttled=True
        )
    return reply_error(where, "the greeting", code, text)


def recipients_error(refused: Mapping[str, tuple[int, str]]) -> DeliveryError:
    """Every recipient refused; the text has counts and codes only (the envelope may hold Bcc recipients).

    Who was refused, with each reply, stays on the error's ``refused`` attribute.
    """
    codes = sorted({code for code, _ in refused.values()})
    if all(is_quota_exhausted(code, text) for code, text in refused.values()):
        return DeliveryError(
            f"every recipient was refused for the relay's daily quota: {len(refused)} recipient(s), SMTP code(s) "
            f"{', '.join(map(str, codes))}; bulk mail through this relay stops until 00:00 UTC.",
            refused=refused,
            exhausted=True,
        )
    throttled = all(is_throttling(code, text) for code, text in refused.values())
    return DeliveryError(
        f"every recipient was refused: {len(refused)} recipient(s), SMTP code(s) {', '.join(map(str, codes))}"
        + ("; the server is throttling us at RCPT" if throttled else ""),
        refused=refused,
        transient=all(code in TRANSIENT_CODES for code, _ in refused.values()),
        throttled=throttled,
    )


def lost_error(where: str, stage: str, exc: BaseException) -> DeliveryError:
    """The connection dropped mid-transaction; after DATA started the server may have the message."""
    return DeliveryError(
        f"connection to {where} lost at {stage} ({type(exc).__name__}).",
        transient=True,
        maybe_delivered=stage == "DATA",
    )


def connect_error(exc: BaseException, policy: TLSPolicy) -> Exception:
    """Turn what aiosmtplib and ssl raise while connecting into our family."""
    import aiosmtplib

    where = f"{policy.host}:{policy.port}"
    tls_failure = _tls_failure(exc, policy)
    if tls_failure is not None:
        return tls_failure
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return greeting_error(where, exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return reply_error(where, "connect", exc.code, exc.message)
    return DeliveryError(
        f"cannot connect to {where} ({type(exc).__name__}): check host, port and network.", transient=True
    )


def _tls_failure(exc: BaseException, policy: TLSPolicy) -> TransportSecurityError | None:
    """A certificate or handshake failure anywhere in the exception chain, else None."""
    where = f"{policy.host}:{policy.port}"
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 6:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            return TransportSecurityError(
                f"certificate of {where} failed verification ({item.verify_message}): "
                "set ca_cert to the CA that issued it, or fix the server's certificate/host name."
            )
        if isinstance(item, ssl.SSLError):
            return TransportSecurityError(
                f"TLS handshake with {where} failed ({item.reason or type(item).__name__}); "
                f"the server must support {policy.min_tls_version} or newer."
            )
    if policy.security == "tls" and any(isinstance(i, ConnectionResetError | ssl.SSLEOFError) for i in chain):
        # With implicit TLS the reset comes during the handshake: a server that will not speak our TLS.
        return TransportSecurityError(
            f"TLS handshake with {where} was aborted by the server; it must support {policy.min_tls_version} or newer."
        )
    return None
