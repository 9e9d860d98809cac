"""Fetch the key material a Protection needs, from Vault or inline; every private value is masked.

Reads go through the Vault read cache, so a batch to the same recipients asks Vault once per key (and
once per recipient who has none).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_secure_mail._masking import mask
from airflow_secure_mail.errors import ConfigurationError, VaultSecretError
from airflow_secure_mail.mail.pgp import PgpSigner
from airflow_secure_mail.mail.protect import KeyMaterial, Protection
from airflow_secure_mail.mail.smime import SmimeSigner

if TYPE_CHECKING:
    from airflow_secure_mail.vault import VaultSecrets

_RECIPIENT_FIELD = {"pgp": "pgp_public_key", "smime": "smime_certificate"}
_PASSPHRASE_FIELDS = {"pgp": ("pgp_passphrase", "passphrase"), "smime": ("smime_passphrase",)}


def resolve_keys(protection: Protection, recipients: Iterable[str], vault: VaultSecrets) -> KeyMaterial:
    """The keys ``protection`` needs for ``recipients``; a recipient without one is left out (protect decides)."""
    pgp_signer, smime_signer = _signers(protection, vault)
    return KeyMaterial(
        recipients=_recipient_keys(protection, recipients, vault),
        encrypt_to=_extra_keys(protection, vault),
        pgp_signer=pgp_signer,
        smime_signer=smime_signer,
    )


def _recipient_keys(protection: Protection, recipients: Iterable[str], vault: VaultSecrets) -> dict[str, str]:
    """Address → public key or certificate, inline first, else ``<keys_vault_path>/<address>`` in Vault."""
    if not protection.encrypt:
        return {}
    field = _RECIPIENT_FIELD[protection.encrypt]
    inline = {k.lower(): v for k, v in (protection.recipient_keys or {}).items()}
    found: dict[str, str] = {}
    for address in recipients:
        key = inline[address.lower()] if address.lower() in inline else _stored_key(protection, address, field, vault)
        if key is not None:
            found[address] = key
    return found


def _stored_key(protection: Protection, address: str, field: str, vault: VaultSecrets) -> str | None:
    """The recipient's key from Vault; None when nothing (or no such field) is stored for the address."""
    try:
        data = vault.read(f"{protection.keys_vault_path}/{address}", mount=protection.vault_mount)
    except VaultSecretError as exc:
        if not exc.missing:
            raise
        return None
    value = data.get(field)
    return str(value) if value else None


def _extra_keys(protection: Protection, vault: VaultSecrets) -> tuple[str, ...]:
    """The ``encrypt_to`` keys (e.g. an archive key): inline, or ``vault:<path>#<field>`` references."""
    return tuple(
        vault.read_field(ref, mount=protection.vault_mount) if ref.startswith("vault:") else ref
        for ref in protection.encrypt_to
    )


def _signers(protection: Protection, vault: VaultSecrets) -> tuple[PgpSigner | None, SmimeSigner | None]:
    """The signer of ``protection.scheme``, inline values first, else from ``signing_vault_path``."""
    if not protection.sign:
        return None, None
    scheme = protection.scheme or "pgp"
    signing: dict[str, Any] = {}
    if protection.signing_vault_path:
        needed = (f"{scheme}_private_key", _PASSPHRASE_FIELDS[scheme][0])
        signing = vault.read(
            protection.signing_vault_path,
            mount=protection.vault_mount,
            setting="signing_vault_path",
            fields=needed + (("smime_certificate",) if scheme == "smime" else ()),
        )
    key = protection.signing_key or signing.get(f"{scheme}_private_key")
    passphrase = protection.signing_passphrase or next(
        (signing[f] for f in _PASSPHRASE_FIELDS[scheme] if signing.get(f)), None
    )
    mask(protection.signing_key, "signing_key")  # values read from Vault were masked when read
    mask(protection.signing_passphrase, "signing_passphrase")
    if not key:
        raise ConfigurationError(f"no {scheme} signing key at {protection.signing_vault_path or 'signing_key'}.")
    if scheme == "pgp":
        return PgpSigner(private_key=str(key), passphrase=passphrase), None
    cert = protection.signing_certificate or signing.get("smime_certificate")
    if not cert:
        raise ConfigurationError("S/MIME signing needs smime_certificate beside smime_private_key.")
    return None, SmimeSigner(certificate=str(cert), private_key=str(key), passphrase=passphrase)
