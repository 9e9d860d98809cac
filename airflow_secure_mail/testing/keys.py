"""Throwaway PGP keys (gpg) and S/MIME certificates (cryptography) for tests and the demo; never committed."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PgpIdentity:
    address: str
    public_key: str
    private_key: str = field(repr=False)
    passphrase: str = field(repr=False)
    fingerprint: str = ""


def make_pgp_identity(address: str, *, algo: str = "ed25519", expire: str = "1y", passphrase: str = "") -> PgpIdentity:
    """A fresh key pair made by ``gpg --quick-gen-key`` in a temporary home (``algo``: ed25519 → cv25519 subkey,
    or rsa3072)."""
    import secrets

    passphrase = passphrase or "pp-" + secrets.token_urlsafe(12)  # never starts with "-" (an option to gpg)
    home = tempfile.mkdtemp(prefix="asm-keygen-")
    os.chmod(home, 0o700)
    write_fast_agent_conf(home)
    base = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", passphrase]
    try:
        sign_algo, enc_algo = ("ed25519", "cv25519") if algo == "ed25519" else (algo, algo)
        subprocess.run(
            [*base, "--quick-gen-key", f"Test <{address}>", sign_algo, "sign", expire], check=True, capture_output=True
        )
        fpr = _fingerprint(home, address)
        subprocess.run([*base, "--quick-add-key", fpr, enc_algo, "encr", expire], check=True, capture_output=True)
        public = subprocess.run(
            ["gpg", "--homedir", home, "--armor", "--export", fpr], check=True, capture_output=True
        ).stdout
        private = subprocess.run(
            [*base, "--armor", "--export-secret-keys", fpr], check=True, capture_output=True
        ).stdout
        return PgpIdentity(address, public.decode(), private.decode(), passphrase, fpr)
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def write_fast_agent_conf(home: str) -> None:
    """Protect test keys with the fewest S2K rounds gpg allows: by default gpg-agent calibrates the passphrase
    hash to take ~100 ms of CPU, which on a busy machine is seconds per key generated, imported or unlocked
    (and the exported key carries the count, so every later unlock by the code under test pays it too)."""
    Path(home, "gpg-agent.conf").write_text("s2k-count 65536\n")


def _fingerprint(home: str, address: str) -> str:
    out = subprocess.run(
        ["gpg", "--homedir", home, "--with-colons", "--list-keys", address], check=True, capture_output=True, text=True
    ).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


@dataclass
class SmimeIdentity:
    address: str
    certificate: str
    private_key: str = field(repr=False)


class SmimeCA:
    """A throwaway CA issuing RSA S/MIME certificates with the address in subjectAltName."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airflow-secure-mail test S/MIME CA")])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.pem = self._cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, address: str, *, days: int = 365, expired: bool = False) -> SmimeIdentity:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=30), now - dt.timedelta(days=1))
            if expired
            else (
                now - dt.timedelta(days=1),
                now + dt.timedelta(days=days),
            )
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, address)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        return SmimeIdentity(
            address,
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        )

    def write(self, path: str | Path) -> str:
        Path(path).write_text(self.pem)
        return str(path)


@dataclass
class SeededKeys:
    """What :func:`seed_vault_keys` generated: keep the private halves to decrypt in tests."""

    recipient_pgp: PgpIdentity
    signer_pgp: PgpIdentity
    ca: SmimeCA
    recipient_smime: SmimeIdentity
    signer_smime: SmimeIdentity


def seed_vault_keys(
    vault_client: Any, recipient: str, signer: str, *, keys_path: str = "mail-keys", signing_path: str = "mail-signing"
) -> SeededKeys:
    """Generate PGP and S/MIME identities and store them where ``Protection`` looks by default.

    ``<keys_path>/<recipient>`` gets ``pgp_public_key`` and ``smime_certificate``; ``<signing_path>`` gets
    the signer's ``pgp_private_key``, ``pgp_passphrase``, ``smime_private_key`` and ``smime_certificate``.
    """
    ca = SmimeCA()
    seeded = SeededKeys(
        make_pgp_identity(recipient), make_pgp_identity(signer), ca, ca.issue(recipient), ca.issue(signer)
    )
    kv = vault_client.secrets.kv.v2
    kv.create_or_update_secret(
        path=f"{keys_path}/{recipient}",
        secret={
            "pgp_public_key": seeded.recipient_pgp.public_key,
            "smime_certificate": seeded.recipient_smime.certificate,
        },
    )
    kv.create_or_update_secret(
        path=signing_path,
        secret={
            "pgp_private_key": seeded.signer_pgp.private_key,
            "pgp_passphrase": seeded.signer_pgp.passphrase,
            "smime_private_key": seeded.signer_smime.private_key,
            "smime_certificate": seeded.signer_smime.certificate,
        },
    )
    return seeded
