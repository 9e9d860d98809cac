"""A relay's sending rate, shared by every session of a process that sends through one connection.

Slots are booked under a ``threading.Lock`` (``run_sync`` may run batches on other threads and event loops);
the wait for a slot is an ``asyncio.sleep`` on whichever loop asks.
"""

from __future__ import annotations

import asyncio
import threading
import time

_MAX_INTERVAL = 60.0
_RECOVERY = 0.8
"""After each accepted message, the extra spacing that throttling added shrinks to this fraction."""


class RateLimiter:
    """Spaces message starts ``60 / per_minute`` seconds apart; throttling replies widen the spacing for a while."""

    def __init__(self, per_minute: float | None = None) -> None:
        self._lock = threading.Lock()
        self._base = 0.0
        self._interval = 0.0
        self._next = 0.0
        self.configure(per_minute)

    def configure(self, per_minute: float | None) -> None:
        """Set the relay's rate (``None``: no limit of our own; throttling still slows us)."""
        base = 60.0 / per_minute if per_minute else 0.0
        with self._lock:
            self._interval = base + max(self._interval - self._base, 0.0)
            self._base = base

    @property
    def interval(self) -> float:
        """Seconds between message starts right now."""
        with self._lock:
            return self._interval

    async def acquire(self) -> None:
        """Wait for this message's slot; slots are booked in call order across threads."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def throttled(self, pause: float) -> None:
        """The relay asked us to slow down: nothing starts for ``pause`` seconds, and the spacing widens."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + pause)
            self._interval = min(max(2 * self._interval, pause, self._base), max(_MAX_INTERVAL, self._base))

    def accepted(self) -> None:
        """A message went through: the spacing recovers towards the configured rate."""
        with self._lock:
            extra = (self._interval - self._base) * _RECOVERY
            self._interval = self._base + (extra if extra > 0.001 else 0.0)


_registry: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()


def rate_limiter(key: str, per_minute: float | None) -> RateLimiter:
    """The process-wide limiter for ``key`` (a connection id), set to ``per_minute``."""
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = RateLimiter(per_minute)
            return limiter
    limiter.configure(per_minute)
    return limiter


def forget_rate_limits() -> None:
    """Drop every limiter (tests; a process that re-reads its connections)."""
    with _registry_lock:
        _registry.clear()
