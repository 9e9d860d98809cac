"""OpenPGP operations behind a small interface: GnuPG via python-gnupg (default) or pysequoia (optional).

GnuPG calls run in a throwaway GNUPGHOME (mode 0700) whose agent is stopped afterwards, so no key
ever lands in a user's keyring; pysequoia works in memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_secure_mail.errors import ConfigurationError, EncryptionKeyMissing, SecureMailError

_HASH_NAMES = {"2": "sha1", "8": "sha256", "9": "sha384", "10": "sha512", "11": "sha224"}


@dataclass(frozen=True)
class PgpSigner:
    """An armored secret key and its passphrase (never shown in a repr)."""

    private_key: str = field(repr=False)
    passphrase: str | None = field(default=None, repr=False)


class PgpBackend(Protocol):
    """What PGP/MIME needs: sign detached, encrypt (optionally signing in the same pass)."""

    def sign_detached(self, data: bytes, signer: PgpSigner) -> tuple[bytes, str]:
        """Armored detached signature and the RFC 3156 micalg (``pgp-sha256``)."""

    def encrypt(self, data: bytes, recipient_keys: Mapping[str, str], signer: PgpSigner | None = None) -> bytes:
        """Armored OpenPGP message for every key in ``recipient_keys`` (address → armored public key)."""


@contextlib.contextmanager
def _gpg_home() -> Iterator[Any]:
    import logging

    import gnupg

    # python-gnupg logs the bytes it feeds gpg (secret keys included) at DEBUG: never let that through
    logging.getLogger("gnupg").setLevel(logging.WARNING)
    home = tempfile.mkdtemp(prefix="asm-gnupg-")
    os.chmod(home, 0o700)
    try:
        yield gnupg.GPG(gnupghome=home)
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, timeout=10, check=False
            )
        shutil.rmtree(home, ignore_errors=True)


def _usable_encryption_key(gpg: Any, fingerprint: str, address: str) -> None:
    """Refuse expired, revoked or sign-only keys and keys that do not carry the recipient's address."""
    [info] = gpg.list_keys(keys=[fingerprint]) or [None]
    if info is None:
        raise EncryptionKeyMissing(f"no public key imported for {address}.", recipient=address)
    if info.get("trust") in ("r", "e") or (info.get("expires") and float(info["expires"]) < time.time()):
        raise EncryptionKeyMissing(
            f"the PGP key for {address} is expired or revoked: publish a new one.", recipient=address
        )
    if "E" not in (info.get("cap") or ""):
        raise EncryptionKeyMissing(f"the PGP key for {address} has no usable encryption subkey.", recipient=address)
    uids = " ".join(info.get("uids") or ()).lower()
    if f"<{address.lower()}>" not in uids and address.lower() not in uids.split():
        raise EncryptionKeyMissing(
            f"the PGP key stored for {address} belongs to another identity ({fingerprint[-16:]}).", recipient=address
        )


class GnuPGBackend:
    """python-gnupg (BSD) driving the system ``gpg``."""

    def _import_signer(self, gpg: Any, signer: PgpSigner) -> str:
        result = gpg.import_keys(signer.private_key)
        secret = [f for f in result.fingerprints if gpg.list_keys(True, keys=[f])]
        if not secret:
            raise ConfigurationError("the PGP signing key is not a usable secret key (armored, unexpired).")
        return str(secret[0])

    def sign_detached(self, data: bytes, signer: PgpSigner) -> tuple[bytes, str]:
        with _gpg_home() as gpg:
            fpr = self._import_signer(gpg, signer)
            sig = gpg.sign(
                data,
                keyid=fpr,
                passphrase=signer.passphrase,
                detach=True,
                binary=False,
                clearsign=False,
                extra_args=["--digest-algo", "SHA256"],
            )
            if not sig.data:
                raise SecureMailError("PGP signing failed: check the signing key's passphrase in Vault.")
            return bytes(sig.data), "pgp-" + _HASH_NAMES.get(str(sig.hash_algo), "sha256")

    def encrypt(self, data: bytes, recipient_keys: Mapping[str, str], signer: PgpSigner | None = None) -> bytes:
        with _gpg_home() as gpg:
            fingerprints = []
            for address, armored in recipient_keys.items():
                imported = gpg.import_keys(armored)
                if not imported.fingerprints:
                    raise EncryptionKeyMissing(f"the PGP key for {address} could not be read.", recipient=address)
                fpr = imported.fingerprints[0]
                if not address.startswith("encrypt_to:"):
                    _usable_encryption_key(gpg, fpr, address)
                fingerprints.append(fpr)
            kwargs: dict[str, Any] = {"always_trust": True, "armor": True}
            if signer is not None:
                kwargs.update(sign=self._import_signer(gpg, signer), passphrase=signer.passphrase)
                kwargs["extra_args"] = ["--digest-algo", "SHA256"]
            result = gpg.encrypt(data, fingerprints, **kwargs)
            if not result.ok:
                raise SecureMailError(f"PGP encryption failed ({result.status}); check the recipients' keys.")
            return bytes(result.data)


class SequoiaBackend:
    """pysequoia (Sequoia-PGP, in-process, LGPL; the optional ``sequoia`` extra): no gpg process, no keyring.

    Same interface and the same key checks as :class:`GnuPGBackend`; pysequoia's 0.1.x API is young,
    so every error it raises is mapped to ours here.
    """

    def _signer(self, signer: PgpSigner) -> Any:
        import pysequoia

        try:
            return pysequoia.Tsk.from_bytes(signer.private_key.encode()).signer(signer.passphrase)
        except Exception:
            raise ConfigurationError(
                "the PGP signing key could not be unlocked: check the armored key and its passphrase in Vault."
            ) from None

    def sign_detached(self, data: bytes, signer: PgpSigner) -> tuple[bytes, str]:
        import pysequoia

        sig = bytes(pysequoia.sign(self._signer(signer), data, mode=pysequoia.SignatureMode.DETACHED))
        [packet] = list(pysequoia.packet.PacketPile.from_bytes(sig))
        return sig, "pgp-" + str(packet.hash_algorithm).rsplit(".", 1)[-1].lower().replace("_", "-")

    def encrypt(self, data: bytes, recipient_keys: Mapping[str, str], signer: PgpSigner | None = None) -> bytes:
        import pysequoia

        certs = []
        for address, armored in recipient_keys.items():
            try:
                cert = pysequoia.Cert.from_bytes(armored.encode())
            except Exception:
                raise EncryptionKeyMissing(f"the PGP key for {address} could not be read.", recipient=address) from None
            if not address.startswith("encrypt_to:"):
                self._check(pysequoia, cert, address)
            certs.append(cert)
        try:
            return bytes(pysequoia.encrypt(data, certs, signer=self._signer(signer) if signer else None))
        except ConfigurationError:
            raise
        except Exception:
            raise SecureMailError("PGP encryption failed; check the recipients' keys.") from None

    @staticmethod
    def _check(pysequoia: Any, cert: Any, address: str) -> None:
        """Refuse expired, revoked or sign-only keys and keys that do not carry the recipient's address."""
        import datetime as dt

        expires = cert.expiration
        if cert.is_revoked or (expires is not None and expires < dt.datetime.now(dt.UTC)):
            raise EncryptionKeyMissing(
                f"the PGP key for {address} is expired or revoked: publish a new one.", recipient=address
            )
        uids = " ".join(str(u) for u in cert.user_ids).lower()
        if f"<{address.lower()}>" not in uids and address.lower() not in uids.split():
            raise EncryptionKeyMissing(
                f"the PGP key stored for {address} belongs to another identity ({str(cert.fingerprint)[-16:]}).",
                recipient=address,
            )
        try:
            pysequoia.encrypt(b"", [cert])
        except Exception:
            raise EncryptionKeyMissing(
                f"the PGP key for {address} has no usable encryption subkey.", recipient=address
            ) from None


def default_backend(name: str = "gnupg") -> PgpBackend:
    """``gnupg`` (default; needs the gpg binary) or ``sequoia`` (the optional pysequoia extra)."""
    if name == "sequoia":
        try:
            import pysequoia  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "pgp_backend='sequoia' needs the extra: pip install 'airflow-secure-mail[sequoia]'."
            ) from None
        return SequoiaBackend()
    if name != "gnupg":
        raise ConfigurationError(f"PGP backend {name!r} is unknown; use 'gnupg' or 'sequoia'.")
    if shutil.which("gpg") is None:
        raise ConfigurationError("PGP needs the gpg binary on the worker: install GnuPG (Debian: gnupg).")
    return GnuPGBackend()
