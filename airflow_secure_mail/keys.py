"""Fetch the key material a Protection needs, from Vault or inline; every private value is masked."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow_secure_mail._masking import mask
from airflow_secure_mail.errors import ConfigurationError, VaultSecretError
from airflow_secure_mail.mail.pgp import PgpSigner
from airflow_secure_mail.mail.protect import KeyMaterial, Protection
from airflow_secure_mail.mail.smime import SmimeSigner

_RECIPIENT_FIELD = {"pgp": "pgp_public_key", "smime": "smime_certificate"}


def resolve_keys(protection: Protection, recipients: Iterable[str], vault: Any) -> KeyMaterial:
    """Look up every recipient's key; absent ones are listed in ``missing`` (protect decides what that means)."""
    found: dict[str, str] = {}
    missing: list[str] = []
    inline = {k.lower(): v for k, v in (protection.recipient_keys or {}).items()}
    if protection.encrypt:
        field = _RECIPIENT_FIELD[protection.encrypt]
        for address in recipients:
            if address.lower() in inline:
                found[address] = inline[address.lower()]
                continue
            try:
                data = vault.read(f"{protection.keys_vault_path}/{address}", mount=protection.vault_mount)
            except VaultSecretError as exc:
                if not exc.missing:
                    raise
                missing.append(address)
                continue
            if data.get(field):
                found[address] = str(data[field])
            else:
                missing.append(address)
    encrypt_to = tuple(
        vault.read_field(ref, mount=protection.vault_mount) if ref.startswith("vault:") else ref
        for ref in protection.encrypt_to
    )
    pgp_signer = smime_signer = None
    if protection.sign:
        signing: dict[str, Any] = {}
        if protection.signing_vault_path:
            signing = vault.read(protection.signing_vault_path, mount=protection.vault_mount)
        key = protection.signing_key or signing.get(
            "pgp_private_key" if protection.scheme == "pgp" else "smime_private_key"
        )
        field_names = ("pgp_passphrase", "passphrase") if protection.scheme == "pgp" else ("smime_passphrase",)
        passphrase = protection.signing_passphrase or next((signing[f] for f in field_names if signing.get(f)), None)
        mask(key, "signing_key")
        mask(passphrase, "signing_passphrase")
        if not key:
            raise ConfigurationError(
                f"no {protection.scheme} signing key at {protection.signing_vault_path or 'signing_key'}."
            )
        if protection.scheme == "pgp":
            pgp_signer = PgpSigner(private_key=str(key), passphrase=passphrase)
        else:
            cert = protection.signing_certificate or signing.get("smime_certificate")
            if not cert:
                raise ConfigurationError("S/MIME signing needs smime_certificate beside smime_private_key.")
            smime_signer = SmimeSigner(certificate=str(cert), private_key=str(key), passphrase=passphrase)
    return KeyMaterial(
        recipients=found,
        encrypt_to=encrypt_to,
        pgp_signer=pgp_signer,
        smime_signer=smime_signer,
    )
