"""Encryption at rest: AES-256-GCM under data keys generated and wrapped by Vault Transit.

One data key serves many records for a bounded time and count, so a burst of archiving costs one
Transit call; unwrapped keys are kept for reads, so opening a batch unwraps its key once. Records stay
readable after a Transit key rotation because Transit decrypts with the key version in the wrapped key.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.errors import ArchiveIntegrityError

if TYPE_CHECKING:
    from airflow_secure_mail.vault import VaultSecrets

MAGIC = b"ASM-AESGCM-1\n"
_NONCE = 12


@dataclass
class _DataKey:
    plaintext: bytes = field(repr=False)
    wrapped: str
    created: float
    uses: int = 0


class TransitSealer:
    """Seal and open archive objects with a Vault Transit data key; ``vault`` is ``vault_for(conn_id)``.

    The current data key of each (connection, mount, Transit key) is shared by every sealer in the process
    and replaced after ``max_age`` seconds or ``max_uses`` seals.
    """

    _lock = threading.Lock()
    _current: dict[tuple[str, str, str], _DataKey] = {}
    _unwrapped: dict[tuple[str, str, str], bytes] = {}

    def __init__(
        self,
        vault: VaultSecrets,
        transit_key: str,
        *,
        mount: str = "transit",
        max_age: float = 300.0,
        max_uses: int = 1000,
    ) -> None:
        self.vault = vault
        self.transit_key = transit_key
        self.mount = mount
        self.max_age = max_age
        self.max_uses = max_uses

    def seal(self, data: bytes, aad: bytes) -> tuple[bytes, dict[str, Any]]:
        """``data`` encrypted and bound to ``aad``, and the metadata that opens it (wrapped key, no secret)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self._data_key()
        nonce = os.urandom(_NONCE)
        sealed = MAGIC + nonce + AESGCM(key.plaintext).encrypt(nonce, data, aad)
        version = key.wrapped.split(":")[1] if key.wrapped.count(":") >= 2 else None
        return sealed, {
            "algorithm": "AES-256-GCM",
            "transit_key": self.transit_key,
            "transit_mount": self.mount,
            "wrapped_key": key.wrapped,
            "key_version": version,
        }

    def open(self, sealed: bytes, info: dict[str, Any], aad: bytes, *, name: str) -> bytes:
        """The plaintext of a sealed object; ArchiveIntegrityError if it is not one or was altered."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not sealed.startswith(MAGIC):
            raise ArchiveIntegrityError(f"archive object {name} is not an encrypted record.", key=name)
        plaintext = self._unwrap(str(info.get("transit_key") or self.transit_key), str(info["wrapped_key"]))
        body = sealed[len(MAGIC) :]
        try:
            return AESGCM(plaintext).decrypt(body[:_NONCE], body[_NONCE:], aad)
        except InvalidTag:
            error = ArchiveIntegrityError(
                f"archive object {name} failed AES-GCM authentication: it was altered.", key=name
            )
        raise error

    @classmethod
    def forget_keys(cls) -> None:
        """Drop every data key held in memory (tests; after a suspected leak of process memory)."""
        with cls._lock:
            cls._current.clear()
            cls._unwrapped.clear()

    def _data_key(self) -> _DataKey:
        """The current data key, replaced when too old or used up; one Transit call however many threads seal."""
        ident = (self.vault.vault_conn_id, self.mount, self.transit_key)
        with self._lock:
            key = self._current.get(ident)
            if key is None or key.uses >= self.max_uses or time.monotonic() - key.created > self.max_age:
                plaintext, wrapped = self.vault.transit_data_key(self.transit_key, mount=self.mount)
                key = _DataKey(plaintext, wrapped, time.monotonic())
                self._current[ident] = key
                self._unwrapped[(self.vault.vault_conn_id, self.mount, wrapped)] = plaintext
            key.uses += 1
            return key

    def _unwrap(self, transit_key: str, wrapped: str) -> bytes:
        """The data key in ``wrapped``: asked of Transit once per process, however many threads open records."""
        ident = (self.vault.vault_conn_id, self.mount, wrapped)
        with self._lock:
            plaintext = self._unwrapped.get(ident)
            if plaintext is None:
                plaintext = self._unwrapped[ident] = self.vault.transit_unwrap(transit_key, wrapped, mount=self.mount)
            return plaintext


def __getattr__(name: str) -> Any:
    if name == "TransitEnvelope":
        warnings.warn(
            "airflow_secure_mail.archive.crypto.TransitEnvelope is deprecated: use TransitSealer.",
            DeprecationWarning,
            stacklevel=2,
        )
        return TransitSealer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
