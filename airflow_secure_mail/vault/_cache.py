"""The process-wide cache of KV reads: a batch of sends reads each secret (or learns it is absent) once.

Entries expire after their own TTL. A path with nothing stored is cached as absent the same way, so a
thousand messages to a recipient without a key do not ask Vault a thousand times. Loads are single-flight:
threads that miss the same key together wait for one read instead of each sending their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

Loaded = tuple[Mapping[str, Any] | None, float]
"""What a loader returns: the secret's fields (None = nothing stored there) and for how long to keep them."""


@dataclass(frozen=True)
class _Entry:
    expires: float
    data: Mapping[str, Any] | None


class Absent:
    """The cached answer "nothing is stored at this path"."""


ABSENT = Absent()


class ReadCache:
    """Cached KV reads keyed by (connection, mount, path, engine version, secret version)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        self._loading: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(
        self, key: Hashable, load: Callable[[], Loaded], *, fresh: bool = False, wait: float = 60.0
    ) -> dict[str, Any] | Absent:
        """The cached value of ``key``, else ``load()``'s (kept for the TTL it gives); ``fresh`` skips the cache.

        A thread waits at most ``wait`` seconds for another's load of the same key, then loads itself.
        """
        if not fresh and (hit := self._hit(key)) is not None:
            return hit
        lock = self._key_lock(key)
        waited = lock.acquire(timeout=max(0.0, wait))
        try:
            if not fresh and (hit := self._hit(key)) is not None:
                return hit  # another thread read it while this one waited
            now = time.monotonic()
            data, ttl = load()
            if ttl > 0:
                with self._lock:
                    self._entries[key] = _Entry(now + ttl, None if data is None else dict(data))
            return ABSENT if data is None else dict(data)
        finally:
            if waited:
                lock.release()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._loading.clear()

    def _hit(self, key: Hashable) -> dict[str, Any] | Absent | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry.expires <= time.monotonic():
            return None
        return ABSENT if entry.data is None else dict(entry.data)

    def _key_lock(self, key: Hashable) -> threading.Lock:
        with self._lock:
            lock = self._loading.get(key)
            if lock is None:
                lock = self._loading[key] = threading.Lock()
            return lock
