"""What Vault said, as our errors: failures mapped to ``VaultSecretError``, reply shapes checked.

Nothing here keeps hvac's or requests' text: it may echo a reply body, and a body may echo a token.
"""

from __future__ import annotations

import base64
from typing import Any

from airflow_secure_mail import _metrics
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


UNREACHABLE, DENIED, MISSING, OTHER = "unreachable", "denied", "missing", "other"
"""The kinds of counter ``secure_mail.vault_errors.<kind>``."""


def count(kind: str) -> None:
    """One Vault failure that reaches the caller as an error (an absent secret read as "none stored" is not one)."""
    _metrics.incr("vault_errors", kind=kind)


def kind_of(exc: BaseException) -> str | None:
    """The metric kind of what hvac/requests raised; None for a 403 (retried after a new login, then counted
    as denied) and a 404 (its caller decides whether absence is an error)."""
    import hvac.exceptions
    import requests

    if isinstance(exc, Forbidden | hvac.exceptions.Forbidden | hvac.exceptions.InvalidPath):
        return None
    if isinstance(exc, SecureMailError):  # ours already (a connection set up wrong): missing is its caller's call
        return None if getattr(exc, "missing", False) else OTHER
    if isinstance(exc, hvac.exceptions.VaultDown | requests.exceptions.RequestException | OSError):
        return UNREACHABLE
    return OTHER


def _errors_text(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None) or []
    return " ".join(str(e) for e in errors) if isinstance(errors, list) else ""


def _refusal(exc: BaseException) -> str | None:
    text = _errors_text(exc)
    return next((reason for phrase, reason in _REFUSALS.items() if phrase in text), None)


def _no_route(exc: BaseException) -> bool:
    """A 404 because nothing is mounted at the path (as opposed to nothing stored under a mounted engine)."""
    return "no handler for route" in _errors_text(exc)


class PathMissing(VaultSecretError):
    """A 404: nothing is stored at ``path``. ``no_mount``: no engine is mounted there at all (Vault's "no handler
    for route"), so the fix is to enable the engine or name another mount, not to write a secret."""

    def __init__(self, message: str, *, path: str, no_mount: bool = False) -> None:
        super().__init__(message, path=path, missing=True)
        self.no_mount = no_mount


def missing_error(what: str, *, no_mount: bool = False) -> PathMissing:
    """Nothing is stored at ``what`` (a 404), as opposed to Vault being down or denying access.

    The callers that know what ``what`` is (a KV secret, a Transit key) replace this text with one that says
    how to create it.
    """
    if no_mount:
        return PathMissing(f"no secrets engine is mounted at Vault path {what!r}.", path=what, no_mount=True)
    return PathMissing(f"no secret at Vault path {what!r}: write it there first.", path=what)


def kv_missing_error(path: str, mount: str, *, setting: str | None, fields: tuple[str, ...]) -> PathMissing:
    """Nothing at KV ``path`` under ``mount``: say how to write it, or that the path was given with its mount."""
    where = f"{mount}/{path}"
    rest = _relative(path, mount)
    if rest is not None:
        return PathMissing(
            f"no secret at {path!r} under mount {mount!r}: {setting or 'the path'} is relative to the mount: "
            f"use {rest!r}.",
            path=where,
        )
    given = " ".join(f"{name}=…" for name in fields) or "<field>=…"
    return PathMissing(
        f"no secret at {path!r} under mount {mount!r}: write it there first "
        f"(`bao kv put -mount={mount} {path} {given}`).",
        path=where,
    )


def _relative(path: str, mount: str) -> str | None:
    """``path`` without a leading ``<mount>/`` (and KV v2's API ``data/``), if it was written with one."""
    head = f"{mount.strip('/')}/"
    if not path.startswith(head):
        return None
    rest = path[len(head) :]
    rest = rest[len("data/") :] if rest.startswith("data/") and len(rest) > len("data/") else rest
    return rest or None


def kv_mount_missing_error(path: str, mount: str) -> VaultSecretError:
    """No KV engine at ``mount``: enabling it, or naming the mount that holds the secret, is the fix.

    Not ``missing``: a reader that treats an absent secret as "none stored" (a recipient without a key) must
    not take a wrong mount for that.
    """
    count(MISSING)
    return VaultSecretError(
        f"Vault has no secrets engine mounted at {mount + '/'!r} (reading {path!r}): set vault_mount to the "
        f"KV mount that holds it, or enable one (`bao secrets enable -path={mount} kv-v2`).",
        path=f"{mount}/{path}",
    )


def _transit_commands(mount: str, key_name: str, *, enable: bool) -> str:
    enable_cmd = "bao secrets enable transit" if mount == "transit" else f"bao secrets enable -path={mount} transit"
    create = f"`bao write -f {mount}/keys/{key_name} type=aes256-gcm96`"
    return (f"run `{enable_cmd}` and " if enable else "run ") + create + ", or `airflow-secure-mail setup`"


def transit_missing_error(where: str, mount: str, key_name: str, *, no_mount: bool) -> RequestRefused:
    """The Transit engine is not enabled at ``mount``, or has no key ``key_name``: say how to create them."""
    if no_mount:
        message = (
            f"Vault Transit engine is not enabled at {mount + '/'!r} (needed for key {key_name!r}): "
            f"{_transit_commands(mount, key_name, enable=True)}."
        )
    else:
        message = (
            f"Vault Transit key {key_name!r} not found at {mount + '/'!r}: "
            f"{_transit_commands(mount, key_name, enable=False)}."
        )
    count(MISSING)
    return RequestRefused(message, path=where, reason="key_missing")


def transit_unwrap_mount_error(where: str, mount: str, key_name: str) -> VaultSecretError:
    """No Transit engine where a record says its key lives: a new key would not open it, the right Vault would."""
    count(MISSING)
    return VaultSecretError(
        f"Vault Transit engine is not enabled at {mount + '/'!r}, so key {key_name!r} cannot unwrap this record: "
        "point the archive's vault connection at the Vault that holds the key (or restore that key there).",
        path=where,
    )


def plain_http_error(where: str, conn_id: str) -> VaultSecretError:
    return VaultSecretError(
        f"Vault at {where} answered plain HTTP to a TLS handshake: the vault connection {conn_id!r} has use_tls "
        "on; untick it (only on loopback) or give Vault a certificate.",
        path=where,
    )


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


def map_error(what: str, exc: BaseException, conn_id: str, *, probe_budget: float = 0.0) -> BaseException:
    """Our error for what hvac/requests raised during ``what``; anything else is returned unchanged.

    ``probe_budget``: seconds one diagnostic connection may take (to tell a plain-HTTP Vault behind a failed
    TLS handshake); 0 = none.
    """
    if isinstance(exc, SecureMailError):
        return exc
    mapped = _hvac_error(what, exc, conn_id)
    if mapped is None:
        mapped = _transport_error(what, exc, conn_id, probe_budget)
    return exc if mapped is None else mapped


def _hvac_error(what: str, exc: BaseException, conn_id: str) -> BaseException | None:
    import hvac.exceptions

    if isinstance(exc, hvac.exceptions.Forbidden):
        return Forbidden()
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return missing_error(what, no_mount=_no_route(exc))
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


def _transport_error(what: str, exc: BaseException, conn_id: str, probe_budget: float) -> BaseException | None:
    import requests

    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return _redirect(what)
    if isinstance(exc, requests.exceptions.SSLError):
        plain = _plain_http_endpoint(exc, probe_budget)
        if plain is not None:
            return plain_http_error(plain, conn_id)
    if isinstance(exc, requests.exceptions.RequestException):
        return VaultSecretError(
            f"cannot reach Vault for {what!r} ({type(exc).__name__}, after retries): check the vault "
            "connection's host and that Vault is up.",
            path=what,
        )
    if isinstance(exc, KeyError | TypeError | ValueError | AttributeError):
        return unexpected(what, f"{type(exc).__name__} while reading it")
    return None


_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "UNKNOWN_PROTOCOL")
"""OpenSSL's reasons for bytes that are not a TLS record where the server's hello should be."""


def _plain_http_endpoint(exc: BaseException, budget: float) -> str | None:
    """``host:port`` if the handshake read something that was not TLS and that port answers plain HTTP.

    Only OpenSSL's reason is looked for in the text (requests nests it in MaxRetryError); none of it is kept.
    """
    from urllib3.util import parse_url

    if budget <= 0 or not any(reason in str(exc) for reason in _NOT_TLS):
        return None
    url = parse_url(str(getattr(getattr(exc, "request", None), "url", "") or ""))
    if not url.host:
        return None
    from airflow_secure_mail.vault._http import answers_plain_http

    port = url.port or 443
    return f"{url.host}:{port}" if answers_plain_http(url.host, port, budget) else None


def _redirect(what: str) -> VaultSecretError:
    return VaultSecretError(
        f"Vault answered {what!r} with a redirect; refused so the token stays with its origin. "
        "Point the connection at the active node.",
        path=what,
    )
