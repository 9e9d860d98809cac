"""Human-readable session facts: the connection test's one line and the certificate-expiry warning."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from airflow_secure_mail.transport.receipt import SessionInfo

RENEW_WARNING_DAYS = 14
"""A server certificate expiring sooner than this is reported as a warning (connection test, doctor)."""


@dataclass(frozen=True)
class CertificateExpiry:
    """Days until the server certificate expires, and whether that is soon enough to warn."""

    days_left: int

    @property
    def renew_soon(self) -> bool:
        return self.days_left < RENEW_WARNING_DAYS


def certificate_expiry(info: SessionInfo, now: datetime | None = None) -> CertificateExpiry | None:
    """How long the server certificate has left, or None if the session saw no certificate."""
    if info.cert_not_after is None:
        return None
    return CertificateExpiry((info.cert_not_after - (now or datetime.now(UTC))).days)


def describe_session(info: SessionInfo) -> str:
    """One line a human can read in the connection test dialog."""
    parts = [f"{info.tls_version or 'no TLS'} {info.cipher or ''}".strip()]
    if info.cert_subject:
        parts.append(f"cert {info.cert_subject} issued by {info.cert_issuer}")
    expiry = certificate_expiry(info)
    if expiry is not None:
        parts.append(f"expires in {expiry.days_left} days" + (" (WARNING: renew soon)" if expiry.renew_soon else ""))
    parts.append("AUTH " + (",".join(info.auth_mechanisms) or "none offered"))
    if info.authenticated_as:
        parts.append("authenticated")
    if info.size_limit:
        parts.append(f"SIZE {info.size_limit}")
    return "; ".join(parts)
