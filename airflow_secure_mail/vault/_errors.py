"""What Vault said, as our errors: failures mapped to ``VaultSecretError``, reply shapes checked.

Nothing here keeps hvac's or requests' text: it may echo a reply body, and a body may echo a token.
"""

from __future__ import annotations

import base64
from typing import Any

from airflow_secure_mail.errors import SecureMailError, VaultSecretError

LOGIN = "login"
"""The ``what`` of a log-in call (errors say "login" instead of a path)."""


class Forbidden(Exception):
    """Internal marker for a 403, so the caller can log in again once."""


class RequestRefused(VaultSecretError):
    """Vault refused a request as invalid (400). ``reason`` names which known refusal it was (None: another),
    so a Transit decrypt can tell key administration from tampering without keeping Vault's text."""

    def __init__(self, message: str, *, path: str | None = None, reason: str | None = None) -> None:
        super().__init__(message, path=path)
        self.reason = reason


_REFUSALS = {
    "encryption key not found": "key_missing",
    "disallowed by policy (too old)": "version_too_old",  # below the key's min_decryption_version
    "message authentication failed": "not_this_key",  # another key's ciphertext, or altered
}
"""Phrases of Vault/OpenBao Transit refusals and what they mean; only the meaning leaves this module."""


def _refusal(exc: BaseException) -> str | None:
    errors = getattr(exc, "errors", None) or []
    text = " ".join(str(e) for e in errors) if isinstance(errors, list) else ""
    return next((reason for phrase, reason in _REFUSALS.items() if phrase in text), None)


def missing_error(what: str) -> VaultSecretError:
    """Nothing is stored at ``what`` (a 404), as opposed to Vault being down or denying access."""
    return VaultSecretError(f"no secret at Vault path {what!r}: write it there first.", path=what, missing=True)


def unexpected(what: str, detail: str) -> VaultSecretError:
    return VaultSecretError(
        f"Vault gave an unexpected reply for {what!r} ({detail}): check that the vault connection points at "
        "Vault itself and not a proxy or maintenance page.",
        path=what,
    )


def as_dict(value: Any, what: str, field: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an "unexpected reply" error naming ``field``'s shape."""
    if not isinstance(value, dict):
        shape = "not JSON" if hasattr(value, "status_code") else f"{field} is {type(value).__name__}, not an object"
        raise unexpected(what, shape)
    return value


def b64_key(value: Any, where: str) -> bytes:
    """A Transit ``plaintext`` field as the 32 bytes of an AES-256 key."""
    if isinstance(value, str):
        try:
            key = base64.b64decode(value, validate=True)
        except ValueError:
            key = b""
        if len(key) == 32:
            return key
    raise unexpected(where, "data.plaintext is not a base64 256-bit key")


def deadline_error(what: str, budget: float) -> VaultSecretError:
    return VaultSecretError(
        f"Vault did not answer {what!r} within {budget:.0f}s (the send's deadline): check that Vault is "
        "up and reachable, or raise extra deadline.",
        path=what,
    )


def map_error(what: str, exc: BaseException, conn_id: str) -> BaseException:
    """Our error for what hvac/requests raised during ``what``; anything else is returned unchanged."""
    if isinstance(exc, SecureMailError):
        return exc
    mapped = _hvac_error(what, exc, conn_id)
    if mapped is None:
        mapped = _transport_error(what, exc)
    return exc if mapped is None else mapped


def _hvac_error(what: str, exc: BaseException, conn_id: str) -> BaseException | None:
    import hvac.exceptions

    if isinstance(exc, hvac.exceptions.Forbidden):
        return Forbidden()
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return missing_error(what)
    if isinstance(exc, hvac.exceptions.VaultDown):
        return VaultSecretError(f"Vault is sealed or down while reading {what!r}: unseal it and retry.", path=what)
    if not isinstance(exc, hvac.exceptions.VaultError):
        return None
    if "redirect" in type(exc).__name__.lower():
        return _redirect(what)
    if what == LOGIN:
        return VaultSecretError(
            f"Vault login for connection {conn_id!r} failed ({type(exc).__name__}): "
            "check its credentials and auth method.",
            path=what,
        )
    message = f"Vault refused {what!r} ({type(exc).__name__}): check the path, mount and policy."
    if isinstance(exc, hvac.exceptions.InvalidRequest):
        return RequestRefused(message, path=what, reason=_refusal(exc))
    return VaultSecretError(message, path=what)


def _transport_error(what: str, exc: BaseException) -> BaseException | None:
    import requests

    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return _redirect(what)
    if isinstance(exc, requests.exceptions.RequestException):
        return VaultSecretError(
            f"cannot reach Vault for {what!r} ({type(exc).__name__}, after retries): check the vault "
            "connection's host and that Vault is up.",
            path=what,
        )
    if isinstance(exc, KeyError | TypeError | ValueError | AttributeError):
        return unexpected(what, f"{type(exc).__name__} while reading it")
    return None


def _redirect(what: str) -> VaultSecretError:
    return VaultSecretError(
        f"Vault answered {what!r} with a redirect; refused so the token stays with its origin. "
        "Point the connection at the active node.",
        path=what,
    )
