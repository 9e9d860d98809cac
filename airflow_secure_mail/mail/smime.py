"""S/MIME (RFC 8551) with ``cryptography``: detached SHA-256 signatures and AES-256 enveloped data.

Certificates and the signing key are loaded once per process and reused (loading an RSA key validates
it, which costs ~50 ms; signing costs ~1 ms).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airflow_secure_mail.errors import ConfigurationError, EncryptionKeyMissing
from airflow_secure_mail.mail._encryption_keys import encryption_keys


@dataclass(frozen=True)
class SmimeSigner:
    certificate: str
    private_key: str = field(repr=False)
    passphrase: str | None = field(default=None, repr=False)


@functools.lru_cache(maxsize=256)
def _load_cert(pem: str) -> object:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode())


def _recipient_cert(address: str, pem: str, *, check_identity: bool = True) -> object:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        cert: x509.Certificate = _load_cert(pem)  # type: ignore[assignment]
    except ValueError:
        raise EncryptionKeyMissing(f"the S/MIME certificate for {address} is not PEM.", recipient=address) from None
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise EncryptionKeyMissing(
            f"the S/MIME certificate for {address} is expired or not yet valid.", recipient=address
        )
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise EncryptionKeyMissing(f"the S/MIME certificate for {address} is not RSA (required).", recipient=address)
    if check_identity:
        try:
            emails = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.RFC822Name
            )
        except x509.ExtensionNotFound:
            emails = []
        if address.lower() not in (e.lower() for e in emails):
            raise EncryptionKeyMissing(
                f"the S/MIME certificate stored for {address} is issued to another address.", recipient=address
            )
    return cert


def encrypt(data: bytes, recipient_certs: Mapping[str, str], *, extra_certs: Sequence[str] = ()) -> bytes:
    """DER CMS EnvelopedData (AES-256-CBC) for every recipient's certificate and every ``extra_certs`` one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.serialization import pkcs7

    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(data).set_content_encryption_algorithm(algorithms.AES256)
    for key in encryption_keys(recipient_certs, extra_certs, "certificate"):
        cert = _recipient_cert(key.label, key.material, check_identity=key.is_recipient)
        builder = builder.add_recipient(cert)  # type: ignore[arg-type]
    return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


@functools.lru_cache(maxsize=16)
def _load_signer(certificate: str, private_key: str, passphrase: str | None) -> tuple[object, object]:
    """The signer's certificate and unlocked key, kept in memory for the process (a rotation is a new entry)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(certificate.encode())
        key = serialization.load_pem_private_key(
            private_key.encode(), password=passphrase.encode() if passphrase else None
        )
    except (ValueError, TypeError):
        raise ConfigurationError(
            "the S/MIME signing certificate or key could not be loaded (PEM, passphrase)."
        ) from None
    return cert, key


def sign_detached(data: bytes, signer: SmimeSigner) -> bytes:
    """DER detached CMS SignedData over the exact bytes (SHA-256)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    cert, key = _load_signer(signer.certificate, signer.private_key, signer.passphrase)
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(data)
        .add_signer(cert, key, hashes.SHA256())  # type: ignore[arg-type]
        .sign(
            serialization.Encoding.DER,
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
    )
