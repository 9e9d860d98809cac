"""OpenPGP operations behind a small interface; the default backend is GnuPG via python-gnupg.

Every call runs in a throwaway GNUPGHOME (mode 0700) whose agent is stopped afterwards, so no key
ever lands in a user's keyring.
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


def default_backend(name: str = "gnupg") -> PgpBackend:
    if name != "gnupg":
        raise ConfigurationError(f"PGP backend {name!r} is not available; use 'gnupg'.")
    if shutil.which("gpg") is None:
        raise ConfigurationError("PGP needs the gpg binary on the worker: install GnuPG (Debian: gnupg).")
    return GnuPGBackend()
