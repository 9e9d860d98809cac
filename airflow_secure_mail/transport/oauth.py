"""OAuth2 access tokens for XOAUTH2/OAUTHBEARER relays (Microsoft 365, Google Workspace style).

Client-credentials or refresh-token grant against the provider's token endpoint; client secrets come
from Vault; a token is cached until shortly before it expires.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow_secure_mail._masking import mask
from airflow_secure_mail.errors import ConfigurationError, SmtpAuthError
from airflow_secure_mail.transport.tls import is_loopback, judge_url

_EXPIRY_MARGIN = 60.0
_tokens: dict[tuple[str, str, str], tuple[float, str]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class OAuthClient:
    """Where and how to get a token; ``client_secret`` and ``refresh_token`` never show in a repr."""

    token_url: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None

    def __post_init__(self) -> None:
        scheme, host, _ = judge_url(self.token_url, "oauth_endpoint")
        if scheme != "https" and not (scheme == "http" and is_loopback(host)):
            raise ConfigurationError(f"oauth_endpoint {scheme}://{host} must use https (http only on loopback).")
        if not self.client_id:
            raise ConfigurationError("the OAuth Vault secret needs a client_id field.")

    @property
    def grant(self) -> str:
        return "refresh_token" if self.refresh_token else "client_credentials"


def clear_tokens() -> None:
    with _lock:
        _tokens.clear()


def access_token(client: OAuthClient, *, fresh: bool = False) -> str:
    """A valid access token, from the cache unless ``fresh`` or about to expire."""
    import requests

    key = (client.token_url, client.client_id, client.scope or "")
    now = time.monotonic()
    with _lock:
        hit = _tokens.get(key)
    if hit and not fresh and hit[0] > now:
        return hit[1]
    form = {"grant_type": client.grant, "client_id": client.client_id}
    if client.client_secret:
        form["client_secret"] = client.client_secret
    if client.refresh_token:
        form["refresh_token"] = client.refresh_token
    if client.scope:
        form["scope"] = client.scope
    try:
        response = requests.post(client.token_url, data=form, timeout=30, allow_redirects=False)
    except requests.RequestException as exc:
        raise SmtpAuthError(
            f"OAuth token endpoint {urlsplit(client.token_url).netloc} unreachable ({type(exc).__name__})."
        ) from None
    if response.status_code != 200:
        raise SmtpAuthError(
            f"OAuth token endpoint answered {response.status_code} for grant {client.grant}: "
            "check client_id/client_secret/refresh_token in Vault.",
            code=response.status_code,
        )
    try:
        body = response.json()
        token = str(body["access_token"])
    except (ValueError, KeyError):
        raise SmtpAuthError("OAuth token endpoint returned no access_token.") from None
    mask(token, "access_token")
    lifetime = float(body.get("expires_in") or 300)
    with _lock:
        _tokens[key] = (now + max(0.0, lifetime - _EXPIRY_MARGIN), token)
    return token
