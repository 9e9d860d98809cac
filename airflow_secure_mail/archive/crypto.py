"""Encryption at rest: AES-256-GCM under data keys generated and wrapped by Vault Transit.

One data key serves many records for a bounded time and count, so a burst of archiving costs one
Transit call; unwrapped keys are kept for reads, so opening a batch unwraps its key once. An unwrapped key
is kept under the Transit key name that unwrapped it: a record relabelled to another key name is judged by
Transit, never opened from the cache. Records stay
readable after a Transit key rotation because Transit decrypts with the key version in the wrapped key.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_secure_mail.errors import ArchiveIntegrityError, VaultSecretError

if TYPE_CHECKING:
    from airflow_secure_mail.vault import VaultSecrets

MAGIC = b"ASM-AESGCM-1\n"
_NONCE = 12
_T = TypeVar("_T")
_M = TypeVar("_M")


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
    """Guards the tables below; never held during a Vault call (see :meth:`_single_flight`)."""
    _current: dict[tuple[str, str, str], _DataKey] = {}
    _unwrapped: dict[tuple[str, str, str, str], bytes] = {}
    """(connection, mount, Transit key name, wrapped key) -> data key: the name is part of the identity."""
    _flights: dict[tuple[str, ...], Future[None]] = {}

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
        plaintext = self._unwrap_for(str(info.get("transit_key") or self.transit_key), str(info["wrapped_key"]), name)
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

        def take() -> _DataKey | None:
            key = self._current.get(ident)
            if key is None or key.uses >= self.max_uses or time.monotonic() - key.created > self.max_age:
                return None
            key.uses += 1
            return key

        def store(made: tuple[bytes, str]) -> _DataKey:
            key = self._current[ident] = _DataKey(made[0], made[1], time.monotonic(), uses=1)
            self._unwrapped[(self.vault.vault_conn_id, self.mount, self.transit_key, made[1])] = made[0]
            return key

        def generate() -> tuple[bytes, str]:
            return self.vault.transit_data_key(self.transit_key, mount=self.mount)

        return self._single_flight(("datakey", *ident), take, generate, store)

    def _unwrap_for(self, transit_key: str, wrapped: str, name: str) -> bytes:
        """:meth:`_unwrap`; a refusal is told apart by what Transit said: routine key administration (a key
        missing, a version below ``min_decryption_version``) is a VaultSecretError, the rest an integrity alarm."""
        from airflow_secure_mail.vault._errors import RequestRefused

        try:
            return self._unwrap(transit_key, wrapped)
        except RequestRefused as refused:
            error = _unwrap_error(refused.reason, transit_key, name)
        raise error  # outside the except: nothing of Vault's reply in the chain

    def _unwrap(self, transit_key: str, wrapped: str) -> bytes:
        """The data key in ``wrapped``: asked of Transit once per process, however many threads open records."""
        ident = (self.vault.vault_conn_id, self.mount, transit_key, wrapped)

        def store(plaintext: bytes) -> bytes:
            self._unwrapped[ident] = plaintext
            return plaintext

        def unwrap() -> bytes:
            return self.vault.transit_unwrap(transit_key, wrapped, mount=self.mount)

        return self._single_flight(("unwrap", *ident), lambda: self._unwrapped.get(ident), unwrap, store)

    def _single_flight(
        self, flight: tuple[str, ...], take: Callable[[], _T | None], make: Callable[[], _M], store: Callable[[_M], _T]
    ) -> _T:
        """``take()`` if it finds a value, else one thread per ``flight`` runs ``make()`` (a Vault call) and the
        others wait for it (and share its error); ``take`` and ``store`` run under the class lock, ``make`` never.
        """
        while True:
            with self._lock:
                value = take()
                if value is not None:
                    return value
                pending = self._flights.get(flight)
                if pending is None:
                    pending = self._flights[flight] = Future()
                    break
            pending.result()  # the leader finished: look again (its error raises here)
        try:
            made = make()
        except BaseException as exc:
            with self._lock:
                del self._flights[flight]
            pending.set_exception(exc)
            raise
        with self._lock:
            value = store(made)
            del self._flights[flight]
        pending.set_result(None)
        return value


def _unwrap_error(reason: str | None, transit_key: str, name: str) -> VaultSecretError | ArchiveIntegrityError:
    """Our error for Transit refusing to unwrap the data key of archive object ``name``."""
    where = f"archive object {name}: Transit key {transit_key!r}"
    if reason == "key_missing":
        return VaultSecretError(
            f"{where} does not exist on this Vault: create or restore it (or point the archive's vault connection "
            "at the Vault that has it).",
            path=name,
        )
    if reason == "version_too_old":
        return VaultSecretError(
            f"{where} refuses to unwrap its data key: the key version is below the key's min_decryption_version; "
            "lower it to read this record.",
            path=name,
        )
    if reason == "not_this_key":
        return ArchiveIntegrityError(
            f"{where} cannot unwrap its data key: the record was relabelled to another key or altered.", key=name
        )
    return ArchiveIntegrityError(  # a refusal we do not recognise: name every cause it may be
        f"{where} cannot unwrap its data key: the Transit key is missing, the key version is below "
        "min_decryption_version, or the record was relabelled or altered.",
        key=name,
    )


def __getattr__(name: str) -> Any:
    if name == "TransitEnvelope":
        warnings.warn(
            "airflow_secure_mail.archive.crypto.TransitEnvelope is deprecated: use TransitSealer.",
            DeprecationWarning,
            stacklevel=2,
        )
        return TransitSealer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
