"""OpenPGP operations behind a small interface: pysequoia (in-process, the default where installed) or
GnuPG via python-gnupg.

Keys are parsed and signing keys unlocked once per process, then reused: pysequoia holds them in memory;
GnuPG imports them into one private GNUPGHOME per process (mode 0700, on tmpfs where there is one),
whose agent is stopped and directory removed at exit, so no key ever lands in a user's keyring.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_secure_mail.errors import ConfigurationError, EncryptionKeyMissing, SecureMailError
from airflow_secure_mail.mail._encryption_keys import encryption_keys

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

    def encrypt(
        self,
        data: bytes,
        recipient_keys: Mapping[str, str],
        signer: PgpSigner | None = None,
        *,
        extra_keys: Sequence[str] = (),
    ) -> bytes:
        """Armored OpenPGP message for every key in ``recipient_keys`` (address → armored public key)."""


class _GpgHome:
    """One private GNUPGHOME per process: keys are imported once (by content digest) and reused."""

    def __init__(self) -> None:
        import logging

        import gnupg

        # python-gnupg logs the bytes it feeds gpg (secret keys included) at DEBUG: never let that through
        logging.getLogger("gnupg").setLevel(logging.WARNING)
        shm = "/dev/shm"  # noqa: S108 (mkdtemp creates a fresh 0700 directory there)
        self.path = tempfile.mkdtemp(prefix="asm-gnupg-", dir=shm if os.access(shm, os.W_OK) else None)
        os.chmod(self.path, 0o700)
        # the agent re-protects imported secret keys with this S2K count; the home is private, on tmpfs where
        # possible and gone at exit, so a minimal count costs nothing in safety and saves ~0.4 s per signature
        with open(os.path.join(self.path, "gpg-agent.conf"), "w") as conf:
            conf.write("s2k-count 65536\nallow-loopback-pinentry\n")
        self.gpg = gnupg.GPG(gnupghome=self.path)
        self._imported: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        atexit.register(self.close)

    def import_key(self, armored: str) -> list[str]:
        """Fingerprints in ``armored``; gpg runs only the first time this exact text is seen."""
        digest = hashlib.sha256(armored.encode()).hexdigest()
        with self._lock:
            if digest not in self._imported:
                self._imported[digest] = [str(f) for f in self.gpg.import_keys(armored).fingerprints]
            return self._imported[digest]

    def close(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--homedir", self.path, "--kill", "all"], capture_output=True, timeout=10, check=False
            )
        shutil.rmtree(self.path, ignore_errors=True)


@functools.cache
def _gpg_home() -> _GpgHome:
    return _GpgHome()


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
    """python-gnupg (BSD) driving the system ``gpg`` in the process's private home."""

    def _import_signer(self, home: _GpgHome, signer: PgpSigner) -> str:
        secret = [f for f in home.import_key(signer.private_key) if home.gpg.list_keys(True, keys=[f])]
        if not secret:
            raise ConfigurationError("the PGP signing key is not a usable secret key (armored, unexpired).")
        return secret[0]

    def sign_detached(self, data: bytes, signer: PgpSigner) -> tuple[bytes, str]:
        home = _gpg_home()
        sig = home.gpg.sign(
            data,
            keyid=self._import_signer(home, signer),
            passphrase=signer.passphrase,
            detach=True,
            binary=False,
            clearsign=False,
            extra_args=["--digest-algo", "SHA256"],
        )
        if not sig.data:
            raise SecureMailError("PGP signing failed: check the signing key's passphrase in Vault.")
        return bytes(sig.data), "pgp-" + _HASH_NAMES.get(str(sig.hash_algo), "sha256")

    def encrypt(
        self,
        data: bytes,
        recipient_keys: Mapping[str, str],
        signer: PgpSigner | None = None,
        *,
        extra_keys: Sequence[str] = (),
    ) -> bytes:
        """Encrypt to each recipient's key (checked: usable, theirs) and to ``extra_keys`` (e.g. an archive key)."""
        home = _gpg_home()
        fingerprints = []
        for key in encryption_keys(recipient_keys, extra_keys):
            address, armored, is_recipient = key.label, key.material, key.is_recipient
            imported = home.import_key(armored)
            if not imported:
                raise EncryptionKeyMissing(f"the PGP key for {address} could not be read.", recipient=address)
            if is_recipient:
                _usable_encryption_key(home.gpg, imported[0], address)
            fingerprints.append(imported[0])
        kwargs: dict[str, Any] = {"always_trust": True, "armor": True}
        if signer is not None:
            kwargs.update(sign=self._import_signer(home, signer), passphrase=signer.passphrase)
            kwargs["extra_args"] = ["--digest-algo", "SHA256"]
        result = home.gpg.encrypt(data, fingerprints, **kwargs)
        if not result.ok:
            raise SecureMailError(f"PGP encryption failed ({result.status}); check the recipients' keys.")
        return bytes(result.data)


@functools.lru_cache(maxsize=16)
def _sequoia_signer(private_key: str, passphrase: str | None) -> Any:
    """An unlocked signer, kept in memory for the process: unlocking (S2K) costs ~0.2 s, signing ~0.2 ms.

    Keyed by the key material, so a rotated key in Vault is a new entry and the old one ages out.
    """
    import pysequoia

    try:
        return pysequoia.Tsk.from_bytes(private_key.encode()).signer(passphrase)
    except Exception:
        raise ConfigurationError(
            "the PGP signing key could not be unlocked: check the armored key and its passphrase in Vault."
        ) from None


@functools.lru_cache(maxsize=256)
def _sequoia_cert(armored: str) -> tuple[Any, bool]:
    """A parsed recipient certificate and whether it has an encryption-capable subkey."""
    import pysequoia

    cert = pysequoia.Cert.from_bytes(armored.encode())
    try:
        pysequoia.encrypt(b"", [cert])
    except Exception:
        return cert, False
    return cert, True


class SequoiaBackend:
    """pysequoia (Sequoia-PGP, in-process, LGPL; the optional ``sequoia`` extra): no gpg process, no keyring.

    Same interface and the same key checks as :class:`GnuPGBackend`; pysequoia's 0.1.x API is young,
    so every error it raises is mapped to ours here.
    """

    def _signer(self, signer: PgpSigner) -> Any:
        return _sequoia_signer(signer.private_key, signer.passphrase)

    def sign_detached(self, data: bytes, signer: PgpSigner) -> tuple[bytes, str]:
        import pysequoia

        sig = bytes(pysequoia.sign(self._signer(signer), data, mode=pysequoia.SignatureMode.DETACHED))
        [packet] = list(pysequoia.packet.PacketPile.from_bytes(sig))
        return sig, "pgp-" + str(packet.hash_algorithm).rsplit(".", 1)[-1].lower().replace("_", "-")

    def encrypt(
        self,
        data: bytes,
        recipient_keys: Mapping[str, str],
        signer: PgpSigner | None = None,
        *,
        extra_keys: Sequence[str] = (),
    ) -> bytes:
        import pysequoia

        certs = []
        for key in encryption_keys(recipient_keys, extra_keys):
            address, armored, is_recipient = key.label, key.material, key.is_recipient
            try:
                cert, can_encrypt = _sequoia_cert(armored)
            except Exception:
                raise EncryptionKeyMissing(f"the PGP key for {address} could not be read.", recipient=address) from None
            if is_recipient:
                self._check(cert, can_encrypt, address)
            certs.append(cert)
        try:
            return bytes(pysequoia.encrypt(data, certs, signer=self._signer(signer) if signer else None))
        except ConfigurationError:
            raise
        except Exception:
            raise SecureMailError("PGP encryption failed; check the recipients' keys.") from None

    @staticmethod
    def _check(cert: Any, can_encrypt: bool, address: str) -> None:
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
        if not can_encrypt:
            raise EncryptionKeyMissing(f"the PGP key for {address} has no usable encryption subkey.", recipient=address)


def default_backend(name: str = "auto") -> PgpBackend:
    """``auto`` (pysequoia where installed, else gpg), ``sequoia`` (the pysequoia extra) or ``gnupg`` (gpg binary).

    Both pass the same gpg cross-checks in the tests; pysequoia runs in-process and is the faster.
    """
    if name in ("auto", "sequoia"):
        try:
            import pysequoia  # noqa: F401
        except ImportError:
            if name == "sequoia":
                raise ConfigurationError(
                    "pgp_backend='sequoia' needs the extra: pip install 'airflow-secure-mail[sequoia]'."
                ) from None
        else:
            return SequoiaBackend()
    elif name != "gnupg":
        raise ConfigurationError(f"PGP backend {name!r} is unknown; use 'auto', 'sequoia' or 'gnupg'.")
    if shutil.which("gpg") is None:
        raise ConfigurationError("PGP needs the gpg binary on the worker: install GnuPG (Debian: gnupg).")
    return GnuPGBackend()
