"""One SMTP session on aiosmtplib: connect, TLS (implicit or mandatory STARTTLS), AUTH, send raw bytes."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from airflow_secure_mail.errors import DeliveryError, SmtpAuthError, TransportSecurityError, detached
from airflow_secure_mail.transport.tls import TLSPolicy

if TYPE_CHECKING:
    import aiosmtplib

log = logging.getLogger(__name__)

AuthMechanism = Literal["password", "xoauth2", "oauthbearer", "none"]
TRANSIENT_CODES = frozenset({421, 450, 451, 452, 454})
_TLS_ORDER = {"TLSv1": 10, "TLSv1.1": 11, "TLSv1.2": 12, "TLSv1.3": 13}


@dataclass(frozen=True)
class SmtpCredentials:
    """What AUTH needs; ``secret`` (password or access token) is never shown in a repr."""

    mechanism: AuthMechanism = "password"
    username: str | None = None
    secret: str | None = field(default=None, repr=False)


CredentialSource = Callable[[bool], Awaitable[SmtpCredentials]]
"""Called with ``fresh=True`` after a 535, so a rotated secret is read past any cache."""


@dataclass(frozen=True)
class SendReceipt:
    """What the server said about one message: who was accepted or refused, over which TLS."""

    message_id: str | None
    sender: str
    accepted: tuple[str, ...]
    refused: dict[str, tuple[int, str]]
    reply: str
    tls_version: str | None
    cipher: str | None
    started_at: datetime
    finished_at: datetime
    size: int = 0
    attempts: int = 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SendReceipt:
        """Rebuild a receipt stored by :meth:`to_dict` (archive records)."""
        return cls(
            message_id=data.get("message_id"),
            sender=data.get("sender", ""),
            accepted=tuple(data.get("accepted") or ()),
            refused={k: (int(v[0]), str(v[1])) for k, v in (data.get("refused") or {}).items()},
            reply=data.get("reply", ""),
            tls_version=data.get("tls_version"),
            cipher=data.get("cipher"),
            started_at=datetime.fromisoformat(data["started_at"]),
            finished_at=datetime.fromisoformat(data["finished_at"]),
            size=int(data.get("size") or 0),
            attempts=int(data.get("attempts") or 1),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (for XCom and the archive); never the message body."""
        return {
            "message_id": self.message_id,
            "sender": self.sender,
            "accepted": list(self.accepted),
            "refused": {rcpt: [code, text] for rcpt, (code, text) in self.refused.items()},
            "reply": self.reply,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "size": self.size,
            "attempts": self.attempts,
        }


@dataclass
class SessionInfo:
    """What a connection test reports: negotiated TLS, the server certificate, offered extensions."""

    tls_version: str | None = None
    cipher: str | None = None
    cert_subject: str | None = None
    cert_issuer: str | None = None
    cert_not_after: datetime | None = None
    auth_mechanisms: tuple[str, ...] = ()
    size_limit: int | None = None
    authenticated_as: str | None = None


def _name(parts: Any) -> str:
    return ", ".join("=".join(item) for rdn in parts or () for item in rdn)


class SmtpSession:
    """An open, protected and authenticated SMTP session; use as ``async with``."""

    def __init__(
        self,
        policy: TLSPolicy,
        credentials: CredentialSource,
        *,
        timeout: float = 30.0,
        local_hostname: str | None = None,
    ) -> None:
        self.policy = policy
        self._credentials = credentials
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._smtp: aiosmtplib.SMTP | None = None
        self.info = SessionInfo()

    async def __aenter__(self) -> SmtpSession:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Read credentials first (a sealed Vault opens no SMTP connection), then connect, TLS, AUTH.

        Errors are raised outside ``except`` blocks and detached: what aiosmtplib raised (server replies)
        never rides along as ``__context__``.
        """
        import aiosmtplib

        creds = await self._credentials(False)
        policy = self.policy
        ctx = policy.ssl_context() if policy.uses_tls else None
        smtp = aiosmtplib.SMTP(
            hostname=policy.host,
            port=policy.port,
            use_tls=policy.security == "tls",
            start_tls=False,
            tls_context=ctx,
            timeout=self.timeout,
            local_hostname=self.local_hostname,
        )
        self._smtp = smtp
        error: Exception | None = None
        try:
            await self._connect(smtp)
        except (TransportSecurityError, DeliveryError) as exc:
            error = exc
        except Exception as exc:
            error = _map_connect_error(exc, policy)
        if error is not None:
            await self.close()
            raise detached(error)
        await self._authenticate(creds)

    async def _connect(self, smtp: aiosmtplib.SMTP) -> None:
        import aiosmtplib

        policy = self.policy
        await smtp.connect()
        await smtp.ehlo()
        if policy.security == "starttls":
            if not smtp.supports_extension("starttls"):
                raise TransportSecurityError(
                    f"{policy.host}:{policy.port} does not offer STARTTLS, and TLS is required: "
                    "fix the server, or use security='tls' on its implicit-TLS port (465)."
                )
            error: Exception | None = None
            try:
                await smtp.starttls()
            except aiosmtplib.SMTPResponseException as exc:
                error = TransportSecurityError(
                    f"{policy.host}:{policy.port} refused STARTTLS ({exc.code}); TLS is required, nothing was sent."
                )
            except Exception as exc:
                mapped = _map_connect_error(exc, policy)
                error = (
                    mapped
                    if isinstance(mapped, TransportSecurityError)
                    else TransportSecurityError(
                        f"TLS handshake with {policy.host}:{policy.port} failed ({type(exc).__name__}); the "
                        f"server must support {policy.min_tls_version} or newer with a certificate we trust."
                    )
                )
            if error is not None:
                raise detached(error)
            await smtp.ehlo()
        self._check_tls()

    def _check_tls(self) -> None:
        smtp = self._smtp
        assert smtp is not None
        if not self.policy.uses_tls:
            log.warning("SMTP to %s without TLS (loopback only)", self.policy.host)
            return
        sslobj: ssl.SSLObject | None = smtp.get_transport_info("ssl_object")
        if sslobj is None:
            raise TransportSecurityError(
                f"the connection to {self.policy.host} is not encrypted; refusing to authenticate."
            )
        version = sslobj.version() or ""
        if _TLS_ORDER.get(version, 0) < _TLS_ORDER[self.policy.min_tls_version]:
            raise TransportSecurityError(
                f"{self.policy.host} negotiated {version}, below the minimum {self.policy.min_tls_version}."
            )
        cipher = sslobj.cipher()
        cert = sslobj.getpeercert() or {}
        not_after = cert.get("notAfter")
        self.info.tls_version = version
        self.info.cipher = cipher[0] if cipher else None
        self.info.cert_subject = _name(cert.get("subject"))
        self.info.cert_issuer = _name(cert.get("issuer"))
        if isinstance(not_after, str):
            self.info.cert_not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)

    def _record_extensions(self) -> None:
        smtp = self._smtp
        assert smtp is not None
        self.info.auth_mechanisms = tuple(m.upper() for m in smtp.server_auth_methods)
        size = smtp.esmtp_extensions.get("size", "")
        self.info.size_limit = int(size) if size.strip().isdigit() and int(size) > 0 else None

    async def _authenticate(self, creds: SmtpCredentials) -> None:
        """AUTH; after a 535 the secret is read again past the cache (rotation) and tried once more."""
        self._record_extensions()
        if creds.mechanism == "none":
            return
        error = await self._try(self._auth_once(creds))
        if isinstance(error, SmtpAuthError) and error.code == 535:
            log.info("SMTP AUTH rejected (535); re-reading the credentials from Vault once (rotation)")
            fresh: list[SmtpCredentials] = []
            error = await self._try(self._fresh_credentials(fresh))
            if error is None:
                creds = fresh[0]
                error = await self._try(self._auth_once(creds))
        if error is not None:
            await self.close()
            raise detached(error)
        self.info.authenticated_as = creds.username

    async def _fresh_credentials(self, out: list[SmtpCredentials]) -> None:
        out.append(await self._credentials(True))

    @staticmethod
    async def _try(step: Awaitable[None]) -> Exception | None:
        try:
            await step
        except Exception as exc:
            return exc
        return None

    async def _auth_once(self, creds: SmtpCredentials) -> None:
        """One AUTH exchange; a dropped connection is a transient DeliveryError (retried on a fresh one)."""
        import aiosmtplib

        smtp = self._smtp
        assert smtp is not None
        if self.policy.uses_tls and smtp.get_transport_info("ssl_object") is None:
            raise TransportSecurityError("refusing to send AUTH over an unencrypted connection.")
        if not creds.username or not creds.secret:
            raise SmtpAuthError("the Vault secret lacks 'username' and 'password'/'access_token': write both fields.")
        host = self.policy.host
        error: Exception | None = None
        try:
            await self._auth_exchange(smtp, creds)
        except aiosmtplib.SMTPAuthenticationError as exc:
            error = SmtpAuthError(
                f"{host} rejected the credentials ({exc.code}): check the secret in Vault.", code=exc.code
            )
        except aiosmtplib.SMTPResponseException as exc:
            error = SmtpAuthError(
                f"{host} refused AUTH ({exc.code}): check the secret and auth mechanism.", code=exc.code
            )
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, ConnectionError, OSError) as exc:
            error = DeliveryError(
                f"connection to {host} lost during AUTH ({type(exc).__name__}); nothing was sent.", transient=True
            )
        if error is not None:
            raise detached(error)

    async def _auth_exchange(self, smtp: aiosmtplib.SMTP, creds: SmtpCredentials) -> None:
        assert creds.username and creds.secret
        offered = set(self.info.auth_mechanisms)
        if creds.mechanism == "password":
            if "PLAIN" in offered:
                await smtp.auth_plain(creds.username, creds.secret)
            elif "LOGIN" in offered:
                await smtp.auth_login(creds.username, creds.secret)
            else:
                raise SmtpAuthError(
                    f"{self.policy.host} offers no PLAIN or LOGIN over TLS (offers: "
                    f"{', '.join(sorted(offered)) or 'none'}); set auth to match the server."
                )
        elif creds.mechanism == "xoauth2":
            if "XOAUTH2" not in offered:
                raise SmtpAuthError(f"{self.policy.host} does not offer XOAUTH2; set auth accordingly.")
            await smtp.auth_xoauth2(creds.username, creds.secret)
        elif creds.mechanism == "oauthbearer":
            if "OAUTHBEARER" not in offered:
                raise SmtpAuthError(f"{self.policy.host} does not offer OAUTHBEARER; set auth accordingly.")
            payload = f"n,a={creds.username},\x01auth=Bearer {creds.secret}\x01\x01".encode()
            response = await smtp.execute_command(b"AUTH", b"OAUTHBEARER", base64.b64encode(payload))
            if response.code == 334:
                response = await smtp.execute_command(b"\x01")
            if response.code != 235:
                raise SmtpAuthError(f"{self.policy.host} rejected OAUTHBEARER ({response.code}).", code=response.code)

    async def send(
        self, sender: str, recipients: Sequence[str], data: bytes, *, message_id: str | None = None
    ) -> SendReceipt:
        """Send the exact bytes; refusals are reported in the receipt, whole-message failures raised."""
        import aiosmtplib

        smtp = self._smtp
        if smtp is None:
            raise DeliveryError("the SMTP session is not open.", transient=True)
        started = datetime.now(UTC)
        limit = self.info.size_limit
        if limit and len(data) > limit:
            raise DeliveryError(
                f"message is {len(data)} bytes but {self.policy.host} accepts at most {limit} (SIZE); "
                "shrink it or its attachments.",
                code=552,
            )
        error: DeliveryError | None = None
        try:
            errors, reply = await smtp.sendmail(sender, list(recipients), data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = {e.recipient: (e.code, e.message) for e in exc.recipients}
            transient = all(code in TRANSIENT_CODES for code, _ in refused.values())
            error = DeliveryError(
                "every recipient was refused: " + _describe(refused), refused=refused, transient=transient
            )
        except aiosmtplib.SMTPResponseException as exc:
            error = DeliveryError(
                f"{self.policy.host} refused the message ({exc.code} {exc.message[:120]}).",
                code=exc.code,
                transient=exc.code in TRANSIENT_CODES,
            )
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, ConnectionError) as exc:
            error = DeliveryError(
                f"connection to {self.policy.host} lost while sending ({type(exc).__name__}).", transient=True
            )
            error.maybe_delivered = True
        if error is not None:
            raise detached(error)
        refused = {rcpt: (resp.code, resp.message) for rcpt, resp in errors.items()}
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

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None or not smtp.is_connected:
            return
        try:
            await asyncio.wait_for(smtp.quit(), timeout=5)
        except Exception:
            smtp.close()


def _describe(refused: dict[str, tuple[int, str]]) -> str:
    """Counts and codes only: the text reaches task logs, and the envelope may hold Bcc recipients.

    Who was refused, with each reply, stays on the error's ``refused`` attribute.
    """
    codes = sorted({code for code, _ in refused.values()})
    return f"{len(refused)} recipient(s), SMTP code(s) {', '.join(map(str, codes))}"


def _map_connect_error(exc: BaseException, policy: TLSPolicy) -> Exception:
    """Turn what aiosmtplib and ssl raise while connecting into our family."""
    import aiosmtplib

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
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return DeliveryError(
            f"{where} greeted with {exc.code}; try again later.",
            code=exc.code,
            transient=exc.code in TRANSIENT_CODES,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(
            f"{where} answered {exc.code} while connecting.",
            code=exc.code,
            transient=exc.code in TRANSIENT_CODES,
        )
    return DeliveryError(
        f"cannot connect to {where} ({type(exc).__name__}): check host, port and network.", transient=True
    )
