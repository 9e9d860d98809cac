"""One relay's budget, shared by every process that sends through it: messages per minute, recipients per day,
concurrent connections; a share of each minute kept for alert mail; a daily quota the relay says is used up.

The budget is keyed by the relay (host, port and the login's Vault path), so two connection ids to one relay
share it. Where it lives is ``budget_url``: ``redis://…`` (atomic Lua scripts), an object store (``file://``,
``s3://``; write-once claims, registered from ``pipeline/budget_store.py``, which may import the archive's
``ObjectStore``), or nowhere (this process only, in memory, as before).

**Slots.** A minute of ``N`` messages is ``N`` slots of ``60/N`` seconds on the wall clock; slot ``k`` starts at
``k * 60/N``. A sender claims the earliest free slot atomically (Redis ``SET NX`` in one script; a write-once
claim object) and waits for its start, so a relay that counts per second sees the messages evenly spaced (at
most two close together: the end of one slot and the start of the next). With ``alert_reserve`` r, slot ``k``
is reserved when ``floor((k+1)r) > floor(kr)`` (r = 0.2: every fifth slot): bulk mail takes only the others,
alert mail the earliest free slot of any kind, so it never waits behind bulk for more than ``1/r`` slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from airflow_secure_mail.errors import ConfigurationError, DeliveryError

log = logging.getLogger(__name__)

Priority = Literal["alert", "bulk"]
PRIORITIES: tuple[Priority, ...] = ("alert", "bulk")
LEASE_TTL = 120.0
"""Seconds a connection lease lives unless renewed (each message renews it): a killed worker's comes back."""
LOWERED_CAP_FOR = 600.0
"""Seconds a connection cap lowered by a ``432 4.3.2`` greeting holds before ``max_connections`` applies again."""
_EXHAUSTED_CHECK = 5.0
"""Seconds a batch trusts that the relay is not exhausted before asking the shared budget again."""
_LEASE_POLL = (0.05, 1.0)
"""First and longest wait between tries for a free connection lease."""

_priority: contextvars.ContextVar[Priority | None] = contextvars.ContextVar("asm_send_priority", default=None)


def check_priority(priority: str) -> Priority:
    """``priority`` as a Priority, or a ConfigurationError saying what to pass."""
    if priority not in PRIORITIES:
        raise ConfigurationError(f"priority must be 'alert' or 'bulk', not {priority!r}.")
    return priority


@contextlib.contextmanager
def send_priority(priority: str) -> Iterator[None]:
    """Every batch delivered inside (this task and the tasks it starts) sends at ``priority``."""
    token = _priority.set(check_priority(priority))
    try:
        yield
    finally:
        _priority.reset(token)


def current_priority() -> Priority:
    """The priority of the send under way; ``bulk`` when none was set (a direct ``SmtpClient.adeliver``)."""
    return _priority.get() or "bulk"


def utc_day(now: float | None = None) -> str:
    """The UTC day a daily quota counts in, ``YYYYMMDD``."""
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%d")


def next_utc_day(now: float | None = None) -> float:
    """When the next UTC day starts (epoch seconds)."""
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    return datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp() + 86400.0


def is_reserved(k: int, reserve: float) -> bool:
    """Slot ``k`` is kept for alert mail (a share ``reserve`` of the slots, evenly spread)."""
    return reserve > 0 and math.floor((k + 1) * reserve) > math.floor(k * reserve)


def relay_key(host: str, port: int, login_path: str | None) -> str:
    """The budget's key: the relay and the login sending through it (two conn ids to one relay share it)."""
    raw = f"{host.lower()}_{port}_{(login_path or '').strip('/')}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)


@dataclass(frozen=True)
class BudgetLimits:
    """One relay's limits as the connection sets them; ``None`` is no limit of our own."""

    relay: str
    per_minute: float | None = None
    recipients_per_day: int | None = None
    max_connections: int | None = None
    reserve: float = 0.2
    url: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.reserve < 1:
            raise ConfigurationError(f"alert_reserve must be at least 0 and below 1, not {self.reserve}.")

    @property
    def slot_length(self) -> float:
        return 60.0 / self.per_minute if self.per_minute else 0.0

    def describe(self) -> str:
        return f"{self.per_minute:g}/min, {self.reserve:.0%} kept for alerts" if self.per_minute else "no rate"


class BudgetBackend(Protocol):
    """Where a budget's shared state lives. Every call is blocking (run off the event loop) and atomic."""

    shared: bool
    """False for this process's memory: the log says once that the limits are per process."""

    def claim_slot(self, relay: str, first: int, last: int, reserve: float, bulk: bool, ttl: float) -> int | None:
        """Claim the earliest free slot in ``first..last`` (bulk: not a reserved one); None when all are taken."""

    def add_recipients(self, relay: str, day: str, count: int, quota: int) -> bool:
        """Count ``count`` recipients on ``day`` unless that would pass ``quota`` (then count nothing)."""

    def lease(self, relay: str, holder: str, cap: int | None, ttl: float) -> bool:
        """Take a connection lease for ``holder`` if fewer than the cap (the lowered one if lower) are held."""

    def renew(self, relay: str, holder: str, ttl: float) -> bool:
        """Extend ``holder``'s lease; False when it had expired (another may hold the place now)."""

    def release(self, relay: str, holder: str) -> None:
        """Give ``holder``'s lease back."""

    def lower_cap(self, relay: str, cap: int, seconds: float) -> None:
        """Allow at most ``cap`` connections for ``seconds`` (a lower cap already set stays)."""

    def held(self, relay: str) -> int:
        """Leases held right now."""

    def mark_exhausted(self, relay: str, day: str, until: float) -> None:
        """The relay refused for its daily quota: bulk mail stops until ``until`` (the next UTC day)."""

    def is_exhausted(self, relay: str, day: str) -> bool:
        """True when the relay was found exhausted on ``day``."""


class MemoryBackend:
    """This process's budgets, in memory (no ``budget_url``): the same rules, per process."""

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, dict[int, float]] = {}
        self._recipients: dict[tuple[str, str], int] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._caps: dict[str, tuple[int, float]] = {}
        self._exhausted: set[tuple[str, str]] = set()

    def claim_slot(self, relay: str, first: int, last: int, reserve: float, bulk: bool, ttl: float) -> int | None:
        now = time.time()
        with self._lock:
            taken = self._slots.setdefault(relay, {})
            for k in [k for k, expiry in taken.items() if expiry < now]:
                del taken[k]
            for k in range(first, last + 1):
                if k not in taken and not (bulk and is_reserved(k, reserve)):
                    taken[k] = now + ttl
                    return k
        return None

    def add_recipients(self, relay: str, day: str, count: int, quota: int) -> bool:
        with self._lock:
            used = self._recipients.get((relay, day), 0)
            if used + count > quota:
                return False
            self._recipients[(relay, day)] = used + count
            return True

    def _cap(self, relay: str, cap: int | None, now: float) -> int | None:
        lowered = self._caps.get(relay)
        if lowered is None or lowered[1] < now:
            return cap
        return lowered[0] if cap is None else min(cap, lowered[0])

    def lease(self, relay: str, holder: str, cap: int | None, ttl: float) -> bool:
        now = time.time()
        with self._lock:
            held = self._leases.setdefault(relay, {})
            for who in [w for w, expiry in held.items() if expiry < now]:
                del held[who]
            limit = self._cap(relay, cap, now)
            if limit is not None and len(held) >= limit:
                return False
            held[holder] = now + ttl
            return True

    def renew(self, relay: str, holder: str, ttl: float) -> bool:
        with self._lock:
            held = self._leases.setdefault(relay, {})
            if held.get(holder, 0.0) < time.time():
                held.pop(holder, None)
                return False
            held[holder] = time.time() + ttl
            return True

    def release(self, relay: str, holder: str) -> None:
        with self._lock:
            self._leases.get(relay, {}).pop(holder, None)

    def lower_cap(self, relay: str, cap: int, seconds: float) -> None:
        now = time.time()
        with self._lock:
            current = self._cap(relay, None, now)
            self._caps[relay] = (min(cap, current) if current is not None else cap, now + seconds)

    def held(self, relay: str) -> int:
        with self._lock:
            return sum(1 for expiry in self._leases.get(relay, {}).values() if expiry >= time.time())

    def mark_exhausted(self, relay: str, day: str, until: float) -> None:
        with self._lock:
            self._exhausted.add((relay, day))

    def is_exhausted(self, relay: str, day: str) -> bool:
        with self._lock:
            return (relay, day) in self._exhausted


# -- Redis ------------------------------------------------------------------------------------------------------

_CLAIM_SLOT = """
local first, last, reserve, bulk, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1',
  tonumber(ARGV[5])
for k = first, last do
  local reserved = reserve > 0 and math.floor((k + 1) * reserve) > math.floor(k * reserve)
  if not (bulk and reserved) then
    if redis.call('SET', KEYS[1] .. string.format('%d', k), '1', 'NX', 'PX', ttl) then
      return string.format('%d', k)
    end
  end
end
return false
"""
_ADD_RECIPIENTS = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local count, quota = tonumber(ARGV[1]), tonumber(ARGV[2])
if used + count > quota then return 0 end
redis.call('INCRBY', KEYS[1], count)
redis.call('EXPIRE', KEYS[1], 172800)
return 1
"""
_LEASE = """
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[4])
local lowered = tonumber(redis.call('GET', KEYS[2]) or '-1')
if lowered >= 0 and (cap < 0 or lowered < cap) then cap = lowered end
if cap >= 0 and redis.call('ZCARD', KEYS[1]) >= cap and not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 2000))
return 1
"""
_RENEW = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]))
return redis.call('ZADD', KEYS[1], 'XX', 'CH', tonumber(ARGV[1]) + tonumber(ARGV[3]), ARGV[2])
"""
_LOWER_CAP = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local cap = tonumber(ARGV[1])
if current >= 0 and current < cap then cap = current end
redis.call('SET', KEYS[1], cap, 'PX', tonumber(ARGV[2]))
return cap
"""


class RedisBackend:
    """Budgets in Redis (``redis://``, ``rediss://``): each step is one Lua script, atomic across processes.

    Keys under ``asm:budget:<relay>:``; every key expires (slots after their minute, counts after two days,
    leases with their holders). Keys are named inside the scripts: a single Redis, not a cluster.
    """

    shared = True

    def __init__(self, url: str) -> None:
        import redis

        from airflow_secure_mail._masking import mask

        password = urlsplit(url).password
        if password:  # a password in budget_url never reaches a task log
            mask(password, "budget_url")

        self._client: Any = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self._scripts = {
            name: self._client.register_script(text)
            for name, text in (
                ("slot", _CLAIM_SLOT),
                ("rcpt", _ADD_RECIPIENTS),
                ("lease", _LEASE),
                ("renew", _RENEW),
                ("cap", _LOWER_CAP),
            )
        }

    @staticmethod
    def _key(relay: str, what: str) -> str:
        return f"asm:budget:{relay}:{what}"

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        import redis

        try:
            return self._scripts[name](keys=keys, args=args)
        except redis.RedisError as exc:
            raise DeliveryError(
                f"relay budget: Redis did not answer ({type(exc).__name__}); check budget_url and that Redis runs.",
                transient=True,
            ) from None

    def claim_slot(self, relay: str, first: int, last: int, reserve: float, bulk: bool, ttl: float) -> int | None:
        args = [first, last, repr(reserve), "1" if bulk else "0", math.ceil(ttl * 1000)]
        found = self._run("slot", [self._key(relay, "slot:")], args)
        return None if found is None else int(found)

    def add_recipients(self, relay: str, day: str, count: int, quota: int) -> bool:
        return bool(self._run("rcpt", [self._key(relay, f"rcpt:{day}")], [count, quota]))

    def lease(self, relay: str, holder: str, cap: int | None, ttl: float) -> bool:
        keys = [self._key(relay, "leases"), self._key(relay, "cap")]
        return bool(self._run("lease", keys, [repr(time.time()), holder, repr(ttl), -1 if cap is None else cap]))

    def renew(self, relay: str, holder: str, ttl: float) -> bool:
        return bool(self._run("renew", [self._key(relay, "leases")], [repr(time.time()), holder, repr(ttl)]))

    def release(self, relay: str, holder: str) -> None:
        with contextlib.suppress(Exception):  # it expires anyway
            self._client.zrem(self._key(relay, "leases"), holder)

    def lower_cap(self, relay: str, cap: int, seconds: float) -> None:
        self._run("cap", [self._key(relay, "cap")], [cap, math.ceil(seconds * 1000)])

    def held(self, relay: str) -> int:
        return int(self._client.zcount(self._key(relay, "leases"), time.time(), "+inf"))

    def mark_exhausted(self, relay: str, day: str, until: float) -> None:
        with contextlib.suppress(Exception):
            self._client.set(self._key(relay, f"exhausted:{day}"), "1", exat=math.ceil(until))

    def is_exhausted(self, relay: str, day: str) -> bool:
        try:
            return bool(self._client.exists(self._key(relay, f"exhausted:{day}")))
        except Exception:
            return False  # the relay will say so itself


# -- the budget a batch uses ------------------------------------------------------------------------------------

BackendFactory = Callable[[str], BudgetBackend]
_factories: dict[str, BackendFactory] = {"redis": RedisBackend, "rediss": RedisBackend}
_backends: dict[str, BudgetBackend] = {}
_memory = MemoryBackend()
_registry_lock = threading.Lock()
_said_per_process: set[str] = set()


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Let ``budget_url``s of ``scheme`` keep their budget in ``factory(url)`` (the object-store backend)."""
    with _registry_lock:
        _factories[scheme] = factory


def backend_for(url: str | None) -> BudgetBackend:
    """The process's one backend for ``url`` (memory when None)."""
    if not url:
        return _memory
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    with _registry_lock:
        backend = _backends.get(url)
        if backend is not None:
            return backend
        factory = _factories.get(scheme)
        if factory is None:
            raise ConfigurationError(
                f"budget_url scheme {scheme or url!r} is not known: use redis://host:port/db, file:///path or "
                "s3://bucket/prefix (the object-store budget is loaded with airflow_secure_mail.pipeline)."
            )
        backend = _backends[url] = factory(url)
        return backend


def forget_budgets() -> None:
    """Drop this process's budgets and backends (tests)."""
    global _memory
    with _registry_lock:
        _backends.clear()
        _said_per_process.clear()
        _memory = MemoryBackend()


def shown_url(url: str) -> str:
    """``url`` without a password, for logs and errors."""
    return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)


class RelayBudget:
    """What one batch asks of its relay's budget; the blocking backend calls run off the event loop."""

    def __init__(self, limits: BudgetLimits, backend: BudgetBackend | None = None) -> None:
        self.limits = limits
        self.backend = backend or backend_for(limits.url)
        self.relay = limits.relay
        self._renewed: dict[str, float] = {}
        """holder → when its lease was last renewed (``time.monotonic``)."""
        self._checked = -_EXHAUSTED_CHECK
        """When the relay was last found not exhausted (``time.monotonic``)."""
        if not self.backend.shared and (limits.per_minute or limits.recipients_per_day or limits.max_connections):
            with _registry_lock:
                first = limits.relay not in _said_per_process
                _said_per_process.add(limits.relay)
            if first:
                log.info(
                    "relay limits are honoured per process only: set extra budget_url (redis://… or an object "
                    "store) to share them across workers"
                )

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self.backend.shared:
            return fn(*args)  # memory: no I/O
        return await asyncio.to_thread(fn, *args)

    def _bulk_error(self, what: str) -> DeliveryError:
        return DeliveryError(
            f"relay budget: no {what} for bulk mail within the deadline ({self.limits.describe()}); "
            "raise extra deadline, lower the fan-out or raise max_messages_per_minute if the relay allows it.",
            transient=True,
        )

    async def slot(self, priority: Priority, until: float) -> float | None:
        """Claim this message's slot (``until``: epoch seconds) and return when it starts; None when no slot
        of this priority is free by ``until``. No rate: now."""
        length = self.limits.slot_length
        now = time.time()
        if not length:
            return now
        first, last = math.floor(now / length), math.floor(until / length)
        if last < first:
            return None
        ttl = (last + 2) * length - now + 60.0
        bulk = priority == "bulk"
        k = await self._call(self.backend.claim_slot, self.relay, first, last, self.limits.reserve, bulk, ttl)
        return None if k is None else max(k * length, now)

    def no_slot(self, priority: Priority) -> DeliveryError:
        if priority == "bulk":
            return self._bulk_error("slot")
        return DeliveryError(
            f"relay budget: no slot for alert mail within the deadline ({self.limits.describe()}); "
            "raise extra deadline or max_messages_per_minute.",
            transient=True,
        )

    async def count_recipients(self, count: int) -> None:
        """Count a message's recipients against the daily quota; over it, a DeliveryError (``exhausted``)."""
        quota = self.limits.recipients_per_day
        if not quota or count <= 0:
            return
        if await self._call(self.backend.add_recipients, self.relay, utc_day(), count, quota):
            return
        raise DeliveryError(
            f"relay budget: the daily quota of {quota} recipients for this relay is used up; this message "
            f"({count} recipient(s)) waits for 00:00 UTC; raise max_recipients_per_day only if the relay allows it.",
            exhausted=True,
        )

    async def check_not_exhausted(self, priority: Priority) -> None:
        """Bulk mail stops at once while the relay is exhausted for today; alert mail is still tried."""
        if priority != "bulk":
            return
        now = time.monotonic()
        if now - self._checked < _EXHAUSTED_CHECK:  # a round trip per message saved; the relay would say so too
            return
        if not await self._call(self.backend.is_exhausted, self.relay, utc_day()):
            self._checked = now
        else:
            raise DeliveryError(
                "relay budget: the relay refused for its daily quota today; bulk mail stops until 00:00 UTC "
                "(alert mail is still tried).",
                exhausted=True,
            )

    async def mark_exhausted(self) -> None:
        self._checked = -_EXHAUSTED_CHECK
        try:
            await self._call(self.backend.mark_exhausted, self.relay, utc_day(), next_utc_day())
        except Exception as exc:  # the relay will refuse again: the next send finds out
            log.warning("relay budget: could not record the exhausted quota (%s)", type(exc).__name__)

    async def lease(self, until: float) -> str | None:
        """A connection lease (its holder id), waiting for one until ``until`` (epoch seconds); None if none."""
        holder = uuid.uuid4().hex
        wait = _LEASE_POLL[0]
        while True:
            if await self._call(self.backend.lease, self.relay, holder, self.limits.max_connections, LEASE_TTL):
                return holder
            left = until - time.time()
            if left <= 0:
                return None
            await asyncio.sleep(min(wait, left))
            wait = min(wait * 2, _LEASE_POLL[1])

    def no_lease(self) -> DeliveryError:
        return DeliveryError(
            f"relay budget: no free connection within the deadline (max_connections "
            f"{self.limits.max_connections or 'lowered by the relay'}); raise extra deadline.",
            transient=True,
        )

    async def keep(self, holder: str) -> bool:
        """Renew ``holder``'s lease before a message (not more often than every quarter of its life: a round
        trip saved per message); one that expired is taken again if a place is free."""
        now = time.monotonic()
        if now - self._renewed.get(holder, -LEASE_TTL) < LEASE_TTL / 4:
            return True
        kept = await self._call(self.backend.renew, self.relay, holder, LEASE_TTL) or await self._call(
            self.backend.lease, self.relay, holder, self.limits.max_connections, LEASE_TTL
        )
        if kept:
            self._renewed[holder] = now
        return bool(kept)

    def lease_lost(self) -> DeliveryError:
        return DeliveryError(
            "relay budget: this session's connection lease expired and every place is taken; reconnecting.",
            transient=True,
        )

    async def release(self, holder: str) -> None:
        self._renewed.pop(holder, None)
        try:
            await self._call(self.backend.release, self.relay, holder)
        except Exception as exc:  # the lease expires by itself
            log.debug("relay budget: lease not released (%s)", type(exc).__name__)

    async def too_many_connections(self) -> int:
        """The relay refused a connection (``432 4.3.2``) while we held some: fewer for a while. The new cap."""
        held = await self._call(self.backend.held, self.relay)
        cap = max(1, int(held) - 1)
        await self._call(self.backend.lower_cap, self.relay, cap, LOWERED_CAP_FOR)
        log.warning(
            "relay refused a connection with %d open: at most %d for %.0f minutes", held, cap, LOWERED_CAP_FOR / 60
        )
        return cap


def wall_until(monotonic_end: float) -> float:
    """A ``time.monotonic`` deadline on the wall clock (the shared budget's clock)."""
    return time.time() + (monotonic_end - time.monotonic())
