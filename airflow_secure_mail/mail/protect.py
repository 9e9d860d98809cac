"""Protect: sign and/or encrypt a composed message as PGP/MIME (RFC 3156) or S/MIME (RFC 8551).

Pure: keys arrive as :class:`KeyMaterial` (fetched by :mod:`airflow_secure_mail.pipeline.keys`). The signed
entity is serialized once with ``policy.SMTP`` (7-bit: quoted-printable/base64 only) and its bytes are
placed verbatim in the output, so no re-folding can break a signature.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from airflow_secure_mail.errors import ConfigurationError, EncryptionKeyMissing, SecureMailError
from airflow_secure_mail.mail.outgoing import Dropped, Outgoing
from airflow_secure_mail.mail.pgp import PgpSigner, default_backend
from airflow_secure_mail.mail.smime import SmimeSigner
from airflow_secure_mail.mail.wire import field_name, join, split_fields

_OUTER_DROP = ("content-", "mime-version")
_PROTECTED = ("from", "to", "cc", "reply-to", "subject", "date", "message-id")


@dataclass(frozen=True)
class Protection:
    """End-to-end protection; with ``encrypt`` set, a recipient without a usable key is never sent plaintext."""

    encrypt: Literal["pgp", "smime"] | None = None
    sign: bool = False
    keys_vault_path: str = "mail-keys"
    signing_vault_path: str | None = None
    recipient_keys: Mapping[str, str] | None = field(default=None, repr=False)
    signing_key: str | None = field(default=None, repr=False)
    signing_passphrase: str | None = field(default=None, repr=False)
    signing_certificate: str | None = None
    encrypt_to: tuple[str, ...] = ()
    missing_key: Literal["fail", "drop_recipient"] = "fail"
    protect_headers: bool = False
    scheme: Literal["pgp", "smime"] | None = None
    vault_mount: str = "secret"
    pgp_backend: str = "auto"
    """``auto`` (pysequoia where installed, else gpg), ``sequoia`` (the pysequoia extra) or ``gnupg`` (gpg binary)."""

    def __post_init__(self) -> None:
        if self.encrypt not in (None, "pgp", "smime"):
            raise ConfigurationError(f"Protection.encrypt {self.encrypt!r} is unknown: use 'pgp', 'smime' or None.")
        if self.missing_key not in ("fail", "drop_recipient"):
            raise ConfigurationError("Protection.missing_key must be 'fail' or 'drop_recipient'.")
        if isinstance(self.encrypt_to, str):
            object.__setattr__(self, "encrypt_to", (self.encrypt_to,))
        if self.scheme is None:
            object.__setattr__(self, "scheme", self.encrypt or "pgp")
        if self.encrypt and self.scheme != self.encrypt:
            raise ConfigurationError("Protection.scheme must match encrypt (one standard per message).")
        if self.sign and not (self.signing_vault_path or self.signing_key):
            raise ConfigurationError("Protection.sign needs signing_vault_path or an inline signing_key.")

    @property
    def active(self) -> bool:
        return bool(self.encrypt or self.sign)

    def describe(self) -> str:
        parts = []
        if self.sign:
            parts.append(f"signed ({self.scheme})")
        if self.encrypt:
            parts.append(f"encrypted ({self.encrypt})")
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class KeyMaterial:
    """Keys for one send: recipient address → armored PGP key or PEM certificate; who had none."""

    recipients: Mapping[str, str] = field(default_factory=dict, repr=False)
    encrypt_to: tuple[str, ...] = field(default=(), repr=False)
    pgp_signer: PgpSigner | None = None
    smime_signer: SmimeSigner | None = None


def _boundary(*parts: bytes) -> str:
    while True:
        candidate = "=_asm_" + secrets.token_hex(12)
        if not any(candidate.encode() in p for p in parts):
            return candidate


def inner_entity(wire: bytes, *, protect_headers: bool) -> bytes:
    """The MIME entity to sign/encrypt: content header fields and body of the serialized message, as bytes.

    With ``protect_headers`` (draft-ietf-lamps-header-protection) the visible header fields ride inside too,
    marked ``protected-headers="v1"`` on the Content-Type.
    """
    fields, body = split_fields(wire)
    kept = []
    for f in fields:
        name = field_name(f)
        if name == "content-type" and protect_headers:
            f += b';\r\n protected-headers="v1"'
        if name.startswith("content-") or (protect_headers and name in _PROTECTED):
            kept.append(f)
    data = join(kept, body)
    if not data.isascii():
        raise SecureMailError("the message body is not 7-bit after encoding; cannot sign it safely.")
    return data


def _outer_headers(wire: bytes, *, protect_headers: bool) -> bytes:
    fields, _ = split_fields(wire)
    out = []
    for f in fields:
        name = field_name(f)
        if name.startswith(_OUTER_DROP):
            continue
        if protect_headers and name == "subject":
            f = b"Subject: ..."
        out.append(f)
    out.append(b"MIME-Version: 1.0")
    return b"\r\n".join(out) + b"\r\n"


def _crlf(text: bytes) -> bytes:
    return b"\r\n".join(text.replace(b"\r\n", b"\n").split(b"\n"))


def _b64(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"


def _pgp_signed(inner: bytes, signature: bytes, micalg: str) -> bytes:
    b = _boundary(inner, signature)
    return (
        (
            f'Content-Type: multipart/signed; boundary="{b}"; micalg="{micalg}";\r\n'
            f' protocol="application/pgp-signature"\r\n\r\n'
            f"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n--{b}\r\n"
        ).encode()
        + inner
        + (
            f"\r\n--{b}\r\n"
            'Content-Type: application/pgp-signature; name="signature.asc"\r\n'
            "Content-Description: OpenPGP digital signature\r\n"
            'Content-Disposition: attachment; filename="signature.asc"\r\n\r\n'
        ).encode()
        + _crlf(signature).rstrip(b"\r\n")
        + f"\r\n\r\n--{b}--\r\n".encode()
    )


def _pgp_encrypted(armored: bytes) -> bytes:
    b = _boundary(armored)
    return (
        (
            f'Content-Type: multipart/encrypted; boundary="{b}";\r\n protocol="application/pgp-encrypted"\r\n\r\n'
            f"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n--{b}\r\n"
            "Content-Type: application/pgp-encrypted\r\n"
            "Content-Description: PGP/MIME version identification\r\n\r\n"
            f"Version: 1\r\n\r\n--{b}\r\n"
            'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
            "Content-Description: OpenPGP encrypted message\r\n"
            'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
        ).encode()
        + _crlf(armored).rstrip(b"\r\n")
        + f"\r\n\r\n--{b}--\r\n".encode()
    )


def _smime_signed(inner: bytes, der: bytes) -> bytes:
    b = _boundary(inner)
    return (
        (
            f'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
            f' micalg="sha-256"; boundary="{b}"\r\n\r\n'
            f"This is an S/MIME signed message\r\n--{b}\r\n"
        ).encode()
        + inner
        + (
            f"\r\n--{b}\r\n"
            'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
        ).encode()
        + _b64(der)
        + f"\r\n--{b}--\r\n".encode()
    )


def _smime_enveloped(der: bytes) -> bytes:
    return (
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
    ) + _b64(der)


def _entity(protection: Protection, inner: bytes, keys: KeyMaterial, recipients: tuple[str, ...]) -> bytes:
    """The protected body entity (headers + body) for one group of recipients."""
    if protection.scheme == "pgp":
        backend = default_backend(protection.pgp_backend)
        if protection.encrypt:
            signer = keys.pgp_signer if protection.sign else None
            chosen = {r: keys.recipients[r] for r in recipients}
            return _pgp_encrypted(backend.encrypt(inner, chosen, signer, extra_keys=keys.encrypt_to))
        assert keys.pgp_signer is not None
        signature, micalg = backend.sign_detached(inner, keys.pgp_signer)
        return _pgp_signed(inner, signature, micalg)
    from airflow_secure_mail.mail import smime

    entity = inner
    if protection.sign:
        assert keys.smime_signer is not None
        entity = _smime_signed(inner, smime.sign_detached(inner, keys.smime_signer))
    if protection.encrypt:
        chosen = {r: keys.recipients[r] for r in recipients}
        entity = _smime_enveloped(smime.encrypt(entity, chosen, extra_certs=keys.encrypt_to))
    return entity


def protect(item: Outgoing, protection: Protection, keys: KeyMaterial) -> list[Outgoing]:
    """Protected copies of a plain ``item``; Bcc (``hidden``) recipients each get their own when encrypting.

    A recipient without a key fails the whole send (``EncryptionKeyMissing``) unless
    ``missing_key='drop_recipient'``, which drops and reports them; never a plaintext copy.
    """
    _check_signer(protection, keys)
    recipients, dropped = item.recipients, item.dropped
    if protection.encrypt:
        recipients, missing = _keep_recipients_with_keys(protection, keys, item.recipients)
        dropped += missing
    inner = inner_entity(item.data, protect_headers=protection.protect_headers)
    outer = _outer_headers(item.data, protect_headers=protection.protect_headers)
    if protection.encrypt:
        visible = tuple(r for r in recipients if r not in item.hidden)
        groups = ([visible] if visible else []) + [(r,) for r in recipients if r in item.hidden]
    else:
        groups = [recipients]
    return [
        replace(
            item,
            recipients=group,
            data=outer + _entity(protection, inner, keys, group),
            dropped=dropped,
            hidden=tuple(r for r in group if r in item.hidden),
        )
        for group in groups
    ]


def _check_signer(protection: Protection, keys: KeyMaterial) -> None:
    if protection.sign and protection.scheme == "pgp" and keys.pgp_signer is None:
        raise ConfigurationError("signing requested but no PGP signing key was found.")
    if protection.sign and protection.scheme == "smime" and keys.smime_signer is None:
        raise ConfigurationError("signing requested but no S/MIME signing certificate/key was found.")


_KEY_FIELD = {"pgp": "pgp_public_key", "smime": "smime_certificate"}
"""The Vault field a recipient's key is read from (pipeline/keys.py reads the same names)."""


def _keep_recipients_with_keys(
    protection: Protection, keys: KeyMaterial, recipients: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[Dropped, ...]]:
    """The recipients that have a key, and the dropped others; EncryptionKeyMissing when dropping is not allowed."""
    missing = tuple(r for r in recipients if r not in keys.recipients)
    if missing and protection.missing_key == "fail":
        field = _KEY_FIELD[protection.encrypt or "pgp"]
        raise EncryptionKeyMissing(
            f"no {protection.encrypt} key for {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f": store field {field} at '{protection.keys_vault_path}/{missing[0]}' under mount "
            f"'{protection.vault_mount}', or drop the recipient; nothing was sent.",
            recipient=missing[0],
        )
    kept = tuple(r for r in recipients if r not in missing)
    if not kept:
        raise EncryptionKeyMissing(
            f"no recipient has a {protection.encrypt} key; nothing was sent.", recipient=missing[0]
        )
    return kept, tuple(Dropped(r, f"no {protection.encrypt} key") for r in missing)
