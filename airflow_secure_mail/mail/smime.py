"""S/MIME (RFC 8551) with ``cryptography``: detached SHA-256 signatures and AES-256 enveloped data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from airflow_secure_mail.errors import ConfigurationError, EncryptionKeyMissing


@dataclass(frozen=True)
class SmimeSigner:
    certificate: str
    private_key: str = field(repr=False)
    passphrase: str | None = field(default=None, repr=False)


def _recipient_cert(address: str, pem: str, *, check_identity: bool = True) -> object:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
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


def encrypt(data: bytes, recipient_certs: Mapping[str, str]) -> bytes:
    """DER CMS EnvelopedData (AES-256-CBC) for every certificate."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.serialization import pkcs7

    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(data).set_content_encryption_algorithm(algorithms.AES256)
    for address, pem in recipient_certs.items():
        cert = _recipient_cert(address, pem, check_identity=not address.startswith("encrypt_to:"))
        builder = builder.add_recipient(cert)  # type: ignore[arg-type]
    return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def sign_detached(data: bytes, signer: SmimeSigner) -> bytes:
    """DER detached CMS SignedData over the exact bytes (SHA-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    try:
        cert = x509.load_pem_x509_certificate(signer.certificate.encode())
        key = serialization.load_pem_private_key(
            signer.private_key.encode(), password=signer.passphrase.encode() if signer.passphrase else None
        )
    except (ValueError, TypeError):
        raise ConfigurationError(
            "the S/MIME signing certificate or key could not be loaded (PEM, passphrase)."
        ) from None
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(data)
        .add_signer(cert, key, hashes.SHA256())  # type: ignore[arg-type]
        .sign(
            serialization.Encoding.DER,
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
    )
