"""One line a human reads about a session: TLS, certificate and its expiry, AUTH, SIZE."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow_secure_mail.transport.smtp import SessionInfo

RENEW_WARNING_DAYS = 14


def describe_session(info: SessionInfo) -> str:
    """One line a human can read in the connection test dialog."""
    parts = [f"{info.tls_version or 'no TLS'} {info.cipher or ''}".strip()]
    if info.cert_subject:
        parts.append(f"cert {info.cert_subject} issued by {info.cert_issuer}")
    if info.cert_not_after:
        days = (info.cert_not_after - datetime.now(UTC)).days
        parts.append(f"expires in {days} days" + (" (WARNING: renew soon)" if days < RENEW_WARNING_DAYS else ""))
    parts.append("AUTH " + (",".join(info.auth_mechanisms) or "none offered"))
    if info.authenticated_as:
        parts.append("authenticated")
    if info.size_limit:
        parts.append(f"SIZE {info.size_limit}")
    return "; ".join(parts)
