"""The relay budget on an object store (``budget_url`` ``file://…`` or ``s3://…?conn_id=…``): write-once claims.

It lives here, above the archive, because it uses the archive's write-once :class:`ObjectStore`; the transport's
budget gets it through :func:`~airflow_secure_mail.transport.budget.register_backend` (``register`` below, called
by every send). Every claim is an object created only if absent (a hard link on a local disk, ``If-None-Match:
*`` on S3): two processes can never both create one, so none of the limits can be overshot.

Objects, under ``budget/<relay>/``:

- ``slots/<k>``: slot ``k`` of the minute is taken (one object per message; old ones are swept now and then).
- ``rcpt/<day>/<seq>``: a write-once log of the day's recipient count. Entry ``seq`` holds the total after it;
  a sender writes entry ``seq+1`` = total + its recipients only if that stays within the quota, and only one
  writer can create it, so the count never passes the quota. Cost: one object per message, a re-read when
  another process wrote first, and a listing of the day's entries once per process and day.
- ``leases/<period>/<j>``: connection place ``j`` is held during ``period`` (``LEASE_TTL / 2`` seconds). A
  session takes a free place for this period and the next, and renews it (the period after) with each
  message; released, its objects are deleted. A killed worker's place comes back within two periods.
- ``cap/<window>/<n>``: a ``432`` lowered the connection cap to ``n`` (this 10-minute window and the next).
- ``exhausted/<day>``: the relay refused for its daily quota today.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit, urlunsplit

from airflow_secure_mail.errors import ArchiveError, DeliveryError

if TYPE_CHECKING:
    from airflow_secure_mail.archive.objects import ObjectStore

_SWEEP_EVERY = 200
"""Slot claims between sweeps of this process's old slot objects."""
_registered = False


def register() -> None:
    """Make ``file://`` and ``s3://`` budget URLs known to the transport (once per process)."""
    global _registered
    if _registered:
        return
    from airflow_secure_mail.transport.budget import register_backend

    for scheme in ("file", "s3"):
        register_backend(scheme, ObjectStoreBackend.from_url)
    _registered = True


def _unavailable(error: BaseException) -> DeliveryError:
    return DeliveryError(
        f"relay budget: the budget store did not answer ({type(error).__name__}); check budget_url.", transient=True
    )


class ObjectStoreBackend:
    """A :class:`~airflow_secure_mail.transport.budget.BudgetBackend` on write-once objects."""

    shared = True

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._taken: dict[str, set[int]] = {}
        self._claims = 0
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}
        self._holders: dict[str, tuple[int, int, list[str]]] = {}
        """holder → (place j, last period held, the objects written)."""
        self._exhausted: set[tuple[str, str]] = set()

    @classmethod
    def from_url(cls, url: str) -> ObjectStoreBackend:
        """``s3://bucket/prefix?conn_id=aws_x`` (the connection with the credentials) or ``file:///path``."""
        from airflow_secure_mail.archive.objects import ObjectStore

        parts = urlsplit(url)
        conn_id = next(iter(parse_qs(parts.query).get("conn_id", [])), None)
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return cls(ObjectStore(location, conn_id))

    def _create(self, name: str, data: bytes = b"1") -> bool:
        """True if this call created ``name``; False if it exists.

        Never empty: s3fs writes an empty object without ``If-None-Match``, so two writers would both succeed.
        """
        try:
            self.store.write_once(name, data)
        except ArchiveError as exc:
            if exc.exists:
                return False
            raise _unavailable(exc) from None
        return True

    def _read(self, name: str) -> bytes | None:
        try:
            return self.store.read(name)
        except ArchiveError as exc:
            raise _unavailable(exc) from None

    def _names(self, prefix: str) -> list[str]:
        return [n for n in self.store.list_names(prefix) if not n.startswith(".")]

    # -- slots ------------------------------------------------------------------------------------------------

    def claim_slot(self, relay: str, first: int, last: int, reserve: float, bulk: bool, ttl: float) -> int | None:
        from airflow_secure_mail.transport.budget import is_reserved

        with self._lock:
            taken = self._taken.setdefault(relay, set())
            taken.difference_update({k for k in taken if k < first})
        for k in range(first, last + 1):
            if (bulk and is_reserved(k, reserve)) or k in taken:
                continue
            created = self._create(f"budget/{relay}/slots/{k}")
            with self._lock:
                taken.add(k)
                self._claims += created
                sweep = created and self._claims % _SWEEP_EVERY == 0
            if sweep:
                self._sweep(relay, first - (last - first) - 100)
            if created:
                return k
        return None

    def _sweep(self, relay: str, below: int) -> None:
        for name in self._names(f"budget/{relay}/slots"):
            if name.isdigit() and int(name) < below:
                self.store.delete(f"budget/{relay}/slots/{name}")

    # -- recipients per day -----------------------------------------------------------------------------------

    def add_recipients(self, relay: str, day: str, count: int, quota: int) -> bool:
        prefix = f"budget/{relay}/rcpt/{day}"
        with self._lock:
            known = self._counts.get((relay, day))
        if known is None:
            entries = sorted(int(n) for n in self._names(prefix) if n.isdigit())
            seq = entries[-1] if entries else -1
            total = int(self._read(f"{prefix}/{seq:010d}") or b"0") if seq >= 0 else 0
        else:
            seq, total = known
        while True:
            while (after := self._read(f"{prefix}/{seq + 1:010d}")) is not None:
                seq, total = seq + 1, int(after)
            if total + count > quota:
                with self._lock:
                    self._counts[(relay, day)] = (seq, total)
                return False
            if self._create(f"{prefix}/{seq + 1:010d}", str(total + count).encode()):
                with self._lock:
                    self._counts[(relay, day)] = (seq + 1, total + count)
                return True

    # -- connections ------------------------------------------------------------------------------------------

    @staticmethod
    def _period(ttl: float) -> int:
        return math.floor(time.time() / (ttl / 2))

    def _cap(self, relay: str, cap: int | None) -> int | None:
        from airflow_secure_mail.transport.budget import LOWERED_CAP_FOR

        window = math.floor(time.time() / LOWERED_CAP_FOR)
        lowered = [int(n) for w in (window - 1, window) for n in self._names(f"budget/{relay}/cap/{w}") if n.isdigit()]
        if not lowered:
            return cap
        return min(lowered) if cap is None else min(cap, *lowered)

    def lease(self, relay: str, holder: str, cap: int | None, ttl: float) -> bool:
        limit = self._cap(relay, cap)
        period = self._period(ttl)
        for j in range(limit if limit is not None else 10_000):
            now_name = f"budget/{relay}/leases/{period}/{j}"
            if not self._create(now_name, holder.encode()):
                continue
            next_name = f"budget/{relay}/leases/{period + 1}/{j}"
            if not self._create(next_name, holder.encode()):  # taken at the turn of the period: not this one
                self.store.delete(now_name)
                continue
            with self._lock:
                self._holders[holder] = (j, period + 1, [now_name, next_name])
            return True
        return False

    def renew(self, relay: str, holder: str, ttl: float) -> bool:
        with self._lock:
            held = self._holders.get(holder)
        if held is None:
            return False
        j, through, names = held
        period = self._period(ttl)
        if through > period:
            return True
        if through < period:  # lapsed: the place may be another's now
            self.release(relay, holder)
            return False
        name = f"budget/{relay}/leases/{period + 1}/{j}"
        if not self._create(name, holder.encode()) and self._read(name) != holder.encode():
            self.release(relay, holder)
            return False
        with self._lock:
            self._holders[holder] = (j, period + 1, [*names[-2:], name])
        return True

    def release(self, relay: str, holder: str) -> None:
        with self._lock:
            held = self._holders.pop(holder, None)
        for name in held[2] if held else ():
            if self.store.read(name) == holder.encode():
                self.store.delete(name)

    def lower_cap(self, relay: str, cap: int, seconds: float) -> None:
        self._create(f"budget/{relay}/cap/{math.floor(time.time() / seconds)}/{cap}")

    def held(self, relay: str) -> int:
        from airflow_secure_mail.transport.budget import LEASE_TTL

        return len(self._names(f"budget/{relay}/leases/{self._period(LEASE_TTL)}"))

    # -- the daily quota the relay reported -------------------------------------------------------------------

    def mark_exhausted(self, relay: str, day: str, until: float) -> None:
        self._create(f"budget/{relay}/exhausted/{day}")
        with self._lock:
            self._exhausted.add((relay, day))

    def is_exhausted(self, relay: str, day: str) -> bool:
        with self._lock:
            if (relay, day) in self._exhausted:
                return True
        found = self._read(f"budget/{relay}/exhausted/{day}") is not None
        if found:
            with self._lock:
                self._exhausted.add((relay, day))
        return found
