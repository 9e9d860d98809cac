"""TLSPolicy: how a connection must be protected, turned into a verifying ``ssl.SSLContext``."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from typing import Literal

from airflow_secure_mail.errors import ConfigurationError

log = logging.getLogger(__name__)

SecurityMode = Literal["tls", "starttls", "none"]
_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals; the only hosts that may skip TLS."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_AMBIGUOUS_URL = re.compile(r"[\\\s\x00-\x1f\x7f]")


def judge_url(url: str, what: str) -> tuple[str, str, str]:
    """(scheme, host, path) of ``url`` as urllib3 reads it — the parser requests connects with.

    Anything two parsers could read differently is refused before a byte is sent: backslashes, whitespace,
    control characters, and userinfo (``user@host``). ``what`` names the setting in the error.
    """
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    ambiguous = ConfigurationError(
        f"{what} is an ambiguous address (a backslash, '@' before the host, whitespace or a control "
        "character): give a plain scheme://host:port address."
    )
    if _AMBIGUOUS_URL.search(url):
        raise ambiguous
    try:
        parts = parse_url(url)
    except LocationParseError:
        parts = None
    if parts is None or parts.auth is not None or not parts.host or not parts.scheme:
        raise ambiguous
    return parts.scheme.lower(), parts.host, parts.path or ""


def default_security(port: int) -> SecurityMode:
    """Implicit TLS on 465, mandatory STARTTLS anywhere else (RFC 8314 prefers 465)."""
    return "tls" if port == 465 else "starttls"


@dataclass(frozen=True)
class TLSPolicy:
    """How the SMTP connection is protected; validated once, when built.

    ``ca_cert`` (PEM text or a file path), when given, replaces the system trust store: a real pin.
    Verification of the certificate and the host name is always on; there is no switch to turn it off.
    """

    host: str
    port: int
    security: SecurityMode | None = None
    min_tls_version: str = "TLSv1.2"
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigurationError("TLSPolicy.host is empty: set the SMTP server's host name.")
        if not 0 < int(self.port) < 65536:
            raise ConfigurationError(f"TLSPolicy.port {self.port!r} is not a TCP port.")
        if self.security is None:
            object.__setattr__(self, "security", default_security(self.port))
        if self.security not in ("tls", "starttls", "none"):
            raise ConfigurationError(
                f"TLSPolicy.security {self.security!r} is unknown: use 'tls' (implicit) or 'starttls'."
            )
        if self.security == "none" and not is_loopback(self.host):
            raise ConfigurationError(
                f"security='none' is refused for {self.host}: plaintext is allowed only on loopback; "
                "use 'tls' or 'starttls'."
            )
        if self.min_tls_version not in _TLS_VERSIONS:
            raise ConfigurationError(
                f"TLSPolicy.min_tls_version {self.min_tls_version!r} is not allowed: use 'TLSv1.2' or 'TLSv1.3'."
            )
        if bool(self.client_cert) != bool(self.client_key):
            raise ConfigurationError("client_cert and client_key go together: set both or neither.")

    @property
    def uses_tls(self) -> bool:
        return self.security != "none"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the chain and host name and refuses anything below the minimum."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.minimum_version = _TLS_VERSIONS[self.min_tls_version]
        if self.ca_cert:
            try:
                if "-----BEGIN" in self.ca_cert:
                    ctx.load_verify_locations(cadata=self.ca_cert)
                else:
                    ctx.load_verify_locations(cafile=self.ca_cert)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    f"ca_cert could not be loaded ({type(exc).__name__}): give PEM text or a readable PEM file."
                ) from None
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if self.client_cert and self.client_key:
            _load_client_chain(ctx, self.client_cert, self.client_key)
        return ctx


def _load_client_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """Load an mTLS pair; PEM text goes through 0600 temp files that are removed at once."""
    paths: list[str] = []
    try:
        files = []
        for pem in (cert, key):
            if "-----BEGIN" in pem:
                fd, path = tempfile.mkstemp(prefix="asm-", suffix=".pem")
                paths.append(path)
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(pem)
                files.append(path)
            else:
                files.append(pem)
        ctx.load_cert_chain(certfile=files[0], keyfile=files[1])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"client certificate/key could not be loaded ({type(exc).__name__}): check the PEM pair."
        ) from None
    finally:
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                log.warning("could not remove a temporary client-key file")
