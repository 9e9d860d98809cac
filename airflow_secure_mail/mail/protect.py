"""Protect: sign and/or encrypt a composed message as PGP/MIME (RFC 3156) or S/MIME (RFC 8551).

Pure: keys arrive as :class:`KeyMaterial` (fetched by :mod:`airflow_secure_mail.keys`). The signed
entity is serialized once with ``policy.SMTP`` (7-bit: quoted-printable/base64 only) and its bytes are
placed verbatim in the output, so no re-folding can break a signature.
"""

from __future__ import annotations

import base64
import copy
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email import policy as email_policy
from email.message import EmailMessage
from typing import Literal

from airflow_secure_mail.errors import ConfigurationError, EncryptionKeyMissing, SecureMailError
from airflow_secure_mail.mail.compose import Envelope
from airflow_secure_mail.mail.pgp import PgpSigner, default_backend
from airflow_secure_mail.mail.smime import SmimeSigner

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
    missing: tuple[str, ...] = ()
    encrypt_to: tuple[str, ...] = field(default=(), repr=False)
    pgp_signer: PgpSigner | None = None
    smime_signer: SmimeSigner | None = None


@dataclass(frozen=True)
class Protected:
    """One outgoing message: the exact bytes and who receives them."""

    data: bytes
    envelope: Envelope
    dropped: tuple[str, ...] = ()


def _boundary(*parts: bytes) -> str:
    while True:
        candidate = "=_asm_" + secrets.token_hex(12)
        if not any(candidate.encode() in p for p in parts):
            return candidate


def _split_headers(data: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded continuation lines) and the body."""
    head, _, body = data.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, body


def _name(field_bytes: bytes) -> str:
    return field_bytes.split(b":", 1)[0].strip().decode("ascii").lower()


def inner_entity(message: EmailMessage, *, protect_headers: bool, wire: bytes | None = None) -> bytes:
    """The MIME entity to sign/encrypt: content headers and body, 7-bit, CRLF, serialized exactly once.

    ``wire`` is the message already serialized with ``policy.SMTP``; its content header fields and body
    are cut out as bytes (a deep copy of the MIME tree costs more than the signature itself).
    """
    if protect_headers:
        inner = copy.deepcopy(message)
        for key in set(inner.keys()):
            lowered = key.lower()
            if not lowered.startswith("content-") and lowered not in _PROTECTED:
                del inner[key]
        inner.set_param("protected-headers", "v1")
        data = inner.as_bytes(policy=email_policy.SMTP)
    else:
        fields, body = _split_headers(wire if wire is not None else message.as_bytes(policy=email_policy.SMTP))
        data = b"\r\n".join(f for f in fields if _name(f).startswith("content-")) + b"\r\n\r\n" + body
    if not data.isascii():
        raise SecureMailError("the message body is not 7-bit after encoding; cannot sign it safely.")
    return data


def _outer_headers(wire: bytes, *, protect_headers: bool) -> bytes:
    fields, _ = _split_headers(wire)
    out = []
    for f in fields:
        name = _name(f)
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


def _encryption_keys(keys: KeyMaterial, recipients: tuple[str, ...]) -> dict[str, str]:
    """The group's keys plus the ``encrypt_to`` extras (labelled so no identity check applies to them)."""
    chosen = {r: keys.recipients[r] for r in recipients}
    chosen.update({f"encrypt_to:{i}": k for i, k in enumerate(keys.encrypt_to)})
    return chosen


def _entity(protection: Protection, inner: bytes, keys: KeyMaterial, recipients: tuple[str, ...]) -> bytes:
    """The protected body entity (headers + body) for one group of recipients."""
    if protection.scheme == "pgp":
        backend = default_backend(protection.pgp_backend)
        if protection.encrypt:
            signer = keys.pgp_signer if protection.sign else None
            return _pgp_encrypted(backend.encrypt(inner, _encryption_keys(keys, recipients), signer))
        assert keys.pgp_signer is not None
        signature, micalg = backend.sign_detached(inner, keys.pgp_signer)
        return _pgp_signed(inner, signature, micalg)
    from airflow_secure_mail.mail import smime

    entity = inner
    if protection.sign:
        assert keys.smime_signer is not None
        entity = _smime_signed(inner, smime.sign_detached(inner, keys.smime_signer))
    if protection.encrypt:
        entity = _smime_enveloped(smime.encrypt(entity, _encryption_keys(keys, recipients)))
    return entity


def protect(
    message: EmailMessage, envelope: Envelope, protection: Protection, keys: KeyMaterial, *, wire: bytes | None = None
) -> list[Protected]:
    """Protected copies of ``message``; Bcc recipients each get their own when encrypting.

    ``wire``: ``message`` already serialized with ``policy.SMTP`` (the pipeline has it), saving a second pass.

    A recipient without a key fails the whole send (``EncryptionKeyMissing``) unless
    ``missing_key='drop_recipient'``, which drops and reports them; never a plaintext copy.
    """
    if wire is None:
        wire = message.as_bytes(policy=email_policy.SMTP)
    if not protection.active:
        return [Protected(wire, envelope)]
    if protection.sign and protection.scheme == "pgp" and keys.pgp_signer is None:
        raise ConfigurationError("signing requested but no PGP signing key was found.")
    if protection.sign and protection.scheme == "smime" and keys.smime_signer is None:
        raise ConfigurationError("signing requested but no S/MIME signing certificate/key was found.")
    dropped: tuple[str, ...] = ()
    if protection.encrypt:
        missing = tuple(r for r in envelope.recipients if r not in keys.recipients)
        if missing and protection.missing_key == "fail":
            raise EncryptionKeyMissing(
                f"no {protection.encrypt} key for {missing[0]}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + f": store it at {protection.keys_vault_path}/<address> or drop the recipient; nothing was sent.",
                recipient=missing[0],
            )
        dropped = missing
        kept = tuple(r for r in envelope.recipients if r not in missing)
        if not kept:
            raise EncryptionKeyMissing(
                f"no recipient has a {protection.encrypt} key; nothing was sent.", recipient=missing[0]
            )
        envelope = replace(envelope, recipients=kept, bcc=tuple(r for r in envelope.bcc if r in kept))
    inner = inner_entity(message, protect_headers=protection.protect_headers, wire=wire)
    outer = _outer_headers(wire, protect_headers=protection.protect_headers)
    if protection.encrypt:
        visible = tuple(r for r in envelope.recipients if r not in envelope.bcc)
        groups = ([visible] if visible else []) + [(b,) for b in envelope.bcc]
    else:
        groups = [envelope.recipients]
    out = []
    for group in groups:
        entity = _entity(protection, inner, keys, group)
        out.append(Protected(outer + entity, replace(envelope, recipients=group, bcc=()), dropped))
    return out
