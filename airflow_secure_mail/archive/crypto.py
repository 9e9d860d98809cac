"""Encryption at rest: AES-256-GCM under data keys generated and wrapped by Vault Transit.

One data key serves many records for a bounded time and count, so a burst of archiving costs a
handful of Vault calls; unwrapped keys are cached for reads. Records stay readable after a Transit
key rotation because Transit decrypts with the key version recorded in the wrapped key.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_secure_mail.errors import ArchiveIntegrityError

MAGIC = b"ASM-AESGCM-1\n"


@dataclass
class _DataKey:
    plaintext: bytes = field(repr=False)
    wrapped: str
    created: float
    uses: int = 0


class TransitEnvelope:
    """Seal and open archive objects; ``vault`` is a VaultSecrets."""

    _lock = threading.Lock()
    _current: dict[tuple[str, str], _DataKey] = {}
    _unwrapped: dict[str, bytes] = {}

    def __init__(
        self, vault: Any, transit_key: str, *, mount: str = "transit", max_age: float = 300.0, max_uses: int = 1000
    ) -> None:
        self.vault = vault
        self.transit_key = transit_key
        self.mount = mount
        self.max_age = max_age
        self.max_uses = max_uses

    def _data_key(self) -> _DataKey:
        ident = (self.vault.vault_conn_id, self.transit_key)
        with self._lock:
            key = self._current.get(ident)
            if key is None or key.uses >= self.max_uses or time.monotonic() - key.created > self.max_age:
                plaintext, wrapped = self.vault.transit_data_key(self.transit_key, mount=self.mount)
                key = _DataKey(plaintext, wrapped, time.monotonic())
                self._current[ident] = key
                self._unwrapped[wrapped] = plaintext
            key.uses += 1
            return key

    def seal(self, data: bytes, aad: bytes) -> tuple[bytes, dict[str, Any]]:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self._data_key()
        nonce = os.urandom(12)
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
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not sealed.startswith(MAGIC):
            raise ArchiveIntegrityError(f"archive object {name} is not an encrypted record.", key=name)
        wrapped = str(info["wrapped_key"])
        with self._lock:
            plaintext = self._unwrapped.get(wrapped)
        if plaintext is None:
            plaintext = self.vault.transit_unwrap(info.get("transit_key", self.transit_key), wrapped, mount=self.mount)
            with self._lock:
                self._unwrapped[wrapped] = plaintext
        body = sealed[len(MAGIC) :]
        try:
            return AESGCM(plaintext).decrypt(body[:12], body[12:], aad)
        except InvalidTag:
            raise ArchiveIntegrityError(
                f"archive object {name} failed AES-GCM authentication: it was altered.", key=name
            ) from None

    @classmethod
    def forget_keys(cls) -> None:
        with cls._lock:
            cls._current.clear()
            cls._unwrapped.clear()


TransitSealer = TransitEnvelope
