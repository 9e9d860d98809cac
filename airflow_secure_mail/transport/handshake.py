"""TLS on an SMTP connection: mandatory STARTTLS, then the checks that refuse a weak or missing TLS session."""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import TransportSecurityError, detached
from airflow_secure_mail.transport.receipt import SessionInfo
from airflow_secure_mail.transport.replies import connect_error
from airflow_secure_mail.transport.tls import TLSPolicy

if TYPE_CHECKING:
    import aiosmtplib

log = logging.getLogger(__name__)

_TLS_ORDER = {"TLSv1": 10, "TLSv1.1": 11, "TLSv1.2": 12, "TLSv1.3": 13}


async def start_tls(smtp: aiosmtplib.SMTP, policy: TLSPolicy) -> None:
    """Mandatory STARTTLS: a server that does not offer it, or refuses it, gets nothing from us."""
    import aiosmtplib

    where = f"{policy.host}:{policy.port}"
    if not smtp.supports_extension("starttls"):
        raise TransportSecurityError(
            f"{where} does not offer STARTTLS, and TLS is required: "
            "fix the server, or use security='tls' on its implicit-TLS port (465)."
        )
    error: Exception | None = None
    try:
        await smtp.starttls()
    except aiosmtplib.SMTPResponseException as exc:
        error = TransportSecurityError(f"{where} refused STARTTLS ({exc.code}); TLS is required, nothing was sent.")
    except Exception as exc:
        mapped = connect_error(exc, policy)
        error = (
            mapped
            if isinstance(mapped, TransportSecurityError)
            else TransportSecurityError(
                f"TLS handshake with {where} failed ({type(exc).__name__}); the server must "
                f"support {policy.min_tls_version} or newer with a certificate we trust."
            )
        )
    if error is not None:
        raise detached(error)


def check_tls(smtp: aiosmtplib.SMTP, policy: TLSPolicy, info: SessionInfo) -> None:
    """Refuse an unencrypted or too-old session; record the negotiated TLS and the server certificate in ``info``."""
    if not policy.uses_tls:
        log.warning("SMTP to %s without TLS (loopback only)", policy.host)
        return
    sslobj: ssl.SSLObject | None = smtp.get_transport_info("ssl_object")
    if sslobj is None:
        raise TransportSecurityError(f"the connection to {policy.host} is not encrypted; refusing to go on.")
    version = sslobj.version() or ""
    if _TLS_ORDER.get(version, 0) < _TLS_ORDER[policy.min_tls_version]:
        raise TransportSecurityError(f"{policy.host} negotiated {version}, below the minimum {policy.min_tls_version}.")
    cipher = sslobj.cipher()
    cert = sslobj.getpeercert() or {}
    not_after = cert.get("notAfter")
    info.tls_version = version
    info.cipher = cipher[0] if cipher else None
    info.cert_subject = _name(cert.get("subject"))
    info.cert_issuer = _name(cert.get("issuer"))
    if isinstance(not_after, str):
        info.cert_not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)


def _name(parts: Any) -> str:
    return ", ".join("=".join(item) for rdn in parts or () for item in rdn)
