"""SMTP AUTH: the one list of mechanisms (read by the form, the settings and the session) and the exchange.

Stdlib only at import time: ``hooks/connection_fields.py`` reads :data:`AUTH_MECHANISMS` while Airflow starts.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from airflow_secure_mail.errors import DeliveryError, SmtpAuthError, detached

if TYPE_CHECKING:
    import aiosmtplib

log = logging.getLogger(__name__)

AuthMechanism = Literal["password", "xoauth2", "oauthbearer", "none"]
AUTH_MECHANISMS: tuple[AuthMechanism, ...] = get_args(AuthMechanism)
OAUTH_MECHANISMS: tuple[AuthMechanism, ...] = ("xoauth2", "oauthbearer")
"""The mechanisms that take an OAuth2 access token (from Vault or a token endpoint)."""


@dataclass(frozen=True)
class SmtpCredentials:
    """What AUTH needs; ``secret`` (password or access token) is never shown in a repr."""

    mechanism: AuthMechanism = "password"
    username: str | None = None
    secret: str | None = field(default=None, repr=False)


CredentialSource = Callable[[bool], Awaitable[SmtpCredentials]]
"""Called with ``fresh=True`` after a 535, so a rotated secret is read past any cache."""


async def auth_exchange(smtp: aiosmtplib.SMTP, creds: SmtpCredentials, offered: set[str], host: str) -> None:
    """One AUTH with the mechanism ``creds`` names, if the server offers it; aiosmtplib's errors pass through."""
    assert creds.username and creds.secret
    if creds.mechanism == "password":
        if "PLAIN" in offered:
            await smtp.auth_plain(creds.username, creds.secret)
        elif "LOGIN" in offered:
            await smtp.auth_login(creds.username, creds.secret)
        else:
            raise SmtpAuthError(
                f"{host} offers no PLAIN or LOGIN over TLS (offers: "
                f"{', '.join(sorted(offered)) or 'none'}); set auth to match the server."
            )
    elif creds.mechanism == "xoauth2":
        if "XOAUTH2" not in offered:
            raise SmtpAuthError(f"{host} does not offer XOAUTH2; set auth accordingly.")
        await smtp.auth_xoauth2(creds.username, creds.secret)
    elif creds.mechanism == "oauthbearer":
        await _oauthbearer(smtp, creds, offered, host)


async def _oauthbearer(smtp: aiosmtplib.SMTP, creds: SmtpCredentials, offered: set[str], host: str) -> None:
    """RFC 7628 OAUTHBEARER, which aiosmtplib lacks: one initial response, an empty reply to a 334 challenge."""
    if "OAUTHBEARER" not in offered:
        raise SmtpAuthError(f"{host} does not offer OAUTHBEARER; set auth accordingly.")
    payload = f"n,a={creds.username},\x01auth=Bearer {creds.secret}\x01\x01".encode()
    response = await smtp.execute_command(b"AUTH", b"OAUTHBEARER", base64.b64encode(payload))
    if response.code == 334:
        response = await smtp.execute_command(b"\x01")
    if response.code != 235:
        raise SmtpAuthError(f"{host} rejected OAUTHBEARER ({response.code}).", code=response.code)


async def authenticate(
    smtp: aiosmtplib.SMTP, creds: SmtpCredentials, source: CredentialSource, *, host: str, offered: set[str]
) -> SmtpCredentials:
    """AUTH; after a 535 the secret is read again past the cache (rotation) and tried once more.

    Returns the credentials that worked. Errors are raised outside ``except`` blocks and detached.
    """
    error = await _attempt(_auth_once(smtp, creds, host, offered))
    if isinstance(error, SmtpAuthError) and error.code == 535:
        log.info("SMTP AUTH rejected (535); re-reading the credentials from Vault once (rotation)")
        fresh: list[SmtpCredentials] = []
        error = await _attempt(_read_fresh(source, fresh))
        if error is None:
            creds = fresh[0]
            error = await _attempt(_auth_once(smtp, creds, host, offered))
    if error is not None:
        raise detached(error)
    return creds


async def _read_fresh(source: CredentialSource, out: list[SmtpCredentials]) -> None:
    out.append(await source(True))


async def _attempt(step: Awaitable[None]) -> Exception | None:
    """The step's exception, returned rather than raised (so nothing chains onto what replaces it)."""
    try:
        await step
    except Exception as exc:
        return exc
    return None


async def _auth_once(smtp: aiosmtplib.SMTP, creds: SmtpCredentials, host: str, offered: set[str]) -> None:
    """One AUTH exchange; a dropped connection is a transient DeliveryError (retried on a fresh one)."""
    import aiosmtplib

    if not creds.username or not creds.secret:
        raise SmtpAuthError("the Vault secret lacks 'username' and 'password'/'access_token': write both fields.")
    error: Exception | None = None
    try:
        await auth_exchange(smtp, creds, offered, host)
    except aiosmtplib.SMTPAuthenticationError as exc:
        error = SmtpAuthError(
            f"{host} rejected the credentials ({exc.code}): check the secret in Vault.", code=exc.code
        )
    except aiosmtplib.SMTPResponseException as exc:
        error = SmtpAuthError(f"{host} refused AUTH ({exc.code}): check the secret and auth mechanism.", code=exc.code)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, ConnectionError, OSError) as exc:
        error = DeliveryError(
            f"connection to {host} lost during AUTH ({type(exc).__name__}); nothing was sent.", transient=True
        )
    if error is not None:
        raise detached(error)
