"""A relay's sending rate, shared by every session of a process that sends through one connection.

Slots are booked under a ``threading.Lock`` (``run_sync`` may run batches on other threads and event loops);
the wait for a slot is an ``asyncio.sleep`` on whichever loop asks, never past the caller's deadline.
New connections pass a gate too: no session connects during a throttling pause, and after a refused
greeting (``432 4.3.2`` too many connections) one connect per pause probes the relay, the pause doubling.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

_MAX_INTERVAL = 60.0
_RECOVERY = 0.8
"""After each accepted message, the extra spacing that throttling added shrinks to this fraction."""
_MIN_REFUSAL_PAUSE = 1.0
"""The first pause after a refused greeting, at least: a relay short of connections is not asked again at once."""


class RateLimiter:
    """Spaces message starts ``60 / per_minute`` seconds apart; throttling replies widen the spacing for a while."""

    def __init__(self, per_minute: float | None = None) -> None:
        self._lock = threading.Lock()
        self._base = 0.0
        self._interval = 0.0
        self._next = 0.0
        self._paused_until = 0.0
        """No session connects before this (a throttling reply or a refused greeting)."""
        self._connect_next = 0.0
        self._connect_gap = 0.0
        """After refused greetings: seconds between connects of any session (0 once a session opens)."""
        self._refusals = 0
        self._last_refusal = -1.0
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

    async def acquire(self, until: float = float("inf")) -> bool:
        """Wait for this message's slot; slots are booked in call order across threads.

        False (after waiting out what is left) when the slot lies past ``until`` (``time.monotonic``): nothing
        is booked, so a batch that runs out of time takes no slot from the others.
        """
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            if slot <= until:
                self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(min(slot, until) - now)
        return slot <= until

    async def before_connect(self, until: float = float("inf")) -> bool:
        """Wait until a new session may connect; False (after waiting out what is left) if not before ``until``.

        Not during a throttling pause; after refused greetings, one connect per pause across every session.
        The time is taken, not booked: a refusal while waiting moves it, and every waiter sees that.
        """
        while True:
            with self._lock:
                now = time.monotonic()
                start = max(self._paused_until, self._connect_next)
                if start <= now:
                    self._connect_next = now + self._connect_gap
                    return True
            if start > until:
                await asyncio.sleep(max(until - now, 0.0))
                return False
            await asyncio.sleep(start - now)

    def refused(self, started: float, backoff: float) -> float:
        """A greeting refused a connect made at ``started``: every session waits; returns the pause.

        The pause doubles (capped, with jitter) for each connect that is refused after the last refusal was
        known; sessions refused together, having connected at once, count once.
        """
        base = max(backoff, _MIN_REFUSAL_PAUSE)
        with self._lock:
            now = time.monotonic()
            if started < self._last_refusal:
                return self._connect_gap
            self._refusals += 1
            self._last_refusal = now
            pause = min(base * 2.0 ** (self._refusals - 1), _MAX_INTERVAL) + random.uniform(0, base)
            self._connect_gap = pause
            self._paused_until = max(self._paused_until, now + pause)
            return pause

    def connected(self) -> None:
        """A session opened: the relay takes connections again, so the refusal backoff starts over."""
        with self._lock:
            self._refusals = 0
            self._connect_gap = 0.0
            self._connect_next = 0.0  # the probe's spacing no longer holds the others back

    def throttled(self, pause: float) -> None:
        """The relay asked us to slow down: nothing starts (no message, no connect) for ``pause`` seconds,
        and the spacing widens."""
        with self._lock:
            until = time.monotonic() + pause
            self._next = max(self._next, until)
            self._paused_until = max(self._paused_until, until)
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
