"""Digest state on object storage: write-once objects only, so any number of workers can share it.

Layout under the state location::

    groups/<gid>.json                                  the group's labels (written by its first event)
    events/<gid>/<event id>.json                       one event; its id makes a second recording a no-op
    index/<gid>/<YYYYMMDD>/<HHMMSS>-<kind>-<key>-<id>  the event's place in time (listing alone drives decisions)
    claims/<gid>/<n>.json                              digest n of the group: what it reports (the claim)
    claims/<gid>/<n>.lease-<k>.json                    a takeover of claim n after its lease ran out
    claims/<gid>/<n>.sent.json                         claim n was delivered
    silences/<id>.json, silences/<id>.expired.json     silences and their early ends

Below silences, plan and flush; above the knobs (it checks the state URL with them) and the events.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_secure_mail.alerts.events import Event, Kind
from airflow_secure_mail.alerts.knobs import DigestKnobs, check_state_location
from airflow_secure_mail.archive.objects import ObjectStore
from airflow_secure_mail.errors import ArchiveError, ArchiveIntegrityError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_STAMP = "%Y%m%d%H%M%S"


def group_id(labels: Mapping[str, str]) -> str:
    """A readable, path-safe name for a group: its label values, then a hash that makes it unique."""
    values = "_".join(labels[k] for k in sorted(labels))
    digest = hashlib.sha256(json.dumps(dict(sorted(labels.items()))).encode()).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', values)[:60].strip('._') or 'group'}-{digest}"


@dataclass(frozen=True, order=True)
class IndexEntry:
    """One event as its index name tells it: enough to decide whether a digest is due without reading it."""

    stamp: str
    kind: Kind
    key_hash: str
    event_id: str

    @property
    def name(self) -> str:
        return f"{self.stamp[:8]}/{self.stamp[8:]}-{self.kind.value}-{self.key_hash}-{self.event_id}"

    @property
    def at(self) -> datetime:
        return datetime.strptime(self.stamp, _STAMP).replace(tzinfo=UTC)

    @classmethod
    def of(cls, event: Event) -> IndexEntry:
        return cls(event.at.astimezone(UTC).strftime(_STAMP), event.kind, event.key_hash, event.id)

    @classmethod
    def parse(cls, day: str, name: str) -> IndexEntry | None:
        parts = name.split("-")
        if len(parts) != 4 or len(parts[0]) != 6:
            return None
        try:
            return cls(day + parts[0], Kind(parts[1]), parts[2], parts[3])
        except ValueError:
            return None


def _event_from(name: str, raw: bytes) -> Event:
    """Parse a stored event; garbage is our ArchiveIntegrityError naming the object, never a JSONDecodeError."""
    try:
        return Event.from_json(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        problem = type(exc).__name__
    raise ArchiveIntegrityError(f"digest state object {name} is not a readable event ({problem}).", key=name)


def stamp_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime(_STAMP)


def claim_name(gid: str, n: int, suffix: str = "") -> str:
    """``claims/<gid>/<n>.json``, or ``<n>.<suffix>.json`` for what is written next to claim n (lease-k, sent)."""
    return f"claims/{gid}/{n:08d}{'.' + suffix if suffix else ''}.json"


class DigestState:
    """The digest's objects under one location; reuses the archive's write-once primitive."""

    def __init__(self, location: str, conn_id: str | None = None) -> None:
        check_state_location(location)
        self.objects = ObjectStore(location, conn_id)

    @classmethod
    def of(cls, knobs: DigestKnobs) -> DigestState:
        """The state a digest's ``state`` and ``state_conn_id`` name."""
        return cls(knobs.state, knobs.state_conn_id)

    @property
    def location(self) -> str:
        return self.objects.location

    def create(self, name: str, data: bytes) -> bool:
        """Write ``name`` once: True if this call created it, False if it already existed."""
        try:
            self.objects.write_once(name, data)
            return True
        except ArchiveError:
            if self.objects.read(name) is not None:
                return False
            raise

    def create_json(self, name: str, data: Mapping[str, Any]) -> bool:
        return self.create(name, json.dumps(data, sort_keys=True, default=str).encode())

    def read_json(self, name: str) -> dict[str, Any] | None:
        return self.objects.read_json(name)

    def names(self, prefix: str) -> list[str]:
        """Names directly under ``prefix``, fresh: fsspec caches listings, but other workers write here too.

        Plain ``fs.ls`` names rather than ``iterdir``: a path object per entry costs more than the listing.
        """
        path = self.objects.base / prefix
        try:
            listed = path.fs.ls(path.path, detail=False, refresh=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in listed)

    # -- events --------------------------------------------------------------------------------
    def record_event(self, group: Mapping[str, str], event: Event) -> bool:
        """The event object (idempotent by id), then its index entry from the stored time (so also idempotent)."""
        gid = group_id(group)
        name = f"events/{gid}/{event.id}.json"
        created = self.create(name, event.to_json())
        stored = event if created else _event_from(name, self.objects.read(name) or b"")
        if self.objects.read(f"groups/{gid}.json") is None:
            self.create_json(f"groups/{gid}.json", dict(group))
        self.create(f"index/{gid}/{IndexEntry.of(stored).name}", b"")
        return created

    def read_event(self, gid: str, event_id: str) -> Event | None:
        """The stored event, None if there is none; ArchiveIntegrityError (naming it) if it is not one."""
        name = f"events/{gid}/{event_id}.json"
        raw = self.objects.read(name)
        return _event_from(name, raw) if raw is not None else None

    def index(self, gid: str, after: str) -> list[IndexEntry]:
        """Index entries of ``gid`` stamped after ``after`` (YYYYMMDDHHMMSS; "" for all), oldest first."""
        entries: list[IndexEntry] = []
        for day in self.names(f"index/{gid}"):
            if day < after[:8]:
                continue
            for name in self.names(f"index/{gid}/{day}"):
                entry = IndexEntry.parse(day, name)
                if entry is not None and entry.stamp > after:
                    entries.append(entry)
        return sorted(entries)

    def group_ids(self) -> list[str]:
        """Every group's id, from the listing alone (reading a group's labels may fail for that group only)."""
        return [name[: -len(".json")] for name in self.names("groups") if name.endswith(".json")]

    def labels(self, gid: str) -> dict[str, str]:
        """The labels of ``gid``, as its first event stored them; ArchiveIntegrityError if they are garbage."""
        name = f"groups/{gid}.json"
        data = self.read_json(name) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ArchiveIntegrityError(f"digest state object {name} is not a group's labels.", key=name)
        return dict(data)

    def groups(self) -> dict[str, dict[str, str]]:
        return {gid: self.labels(gid) for gid in self.group_ids()}

    def claims(self, gid: str) -> dict[int, list[str]]:
        """Claim numbers of a group, each with the suffixes written next to it ("" for the claim itself)."""
        found: dict[int, list[str]] = {}
        for name in self.names(f"claims/{gid}"):
            number, _, rest = name.partition(".")
            if number.isdigit():
                found.setdefault(int(number), []).append(rest.removesuffix("json").rstrip("."))
        return found

    def prune(self, gid: str, before: str, keep_claim: int) -> int:
        """Delete index days, events and claims wholly before ``before`` (a stamp every claim has closed);
        the latest claim ``keep_claim`` stays, so the chain goes on. Returns how many objects went."""
        return self._prune_events(gid, before) + self._prune_claims(gid, before, keep_claim)

    def _prune_events(self, gid: str, before: str) -> int:
        removed = 0
        for day in self.names(f"index/{gid}"):
            if f"{day}235959" >= before:
                continue
            for name in self.names(f"index/{gid}/{day}"):
                entry = IndexEntry.parse(day, name)
                if entry is not None:
                    self.objects.delete(f"events/{gid}/{entry.event_id}.json")
                self.objects.delete(f"index/{gid}/{day}/{name}")
                removed += 1
        return removed

    def _prune_claims(self, gid: str, before: str, keep_claim: int) -> int:
        cutoff = datetime.strptime(before, _STAMP).replace(tzinfo=UTC)
        removed = 0
        for n, suffixes in sorted(self.claims(gid).items()):
            if n >= keep_claim:
                continue
            claim = self.read_json(claim_name(gid, n)) or {}
            if "at" in claim and datetime.fromisoformat(claim["at"]) < cutoff:
                for suffix in suffixes:
                    self.objects.delete(claim_name(gid, n, suffix))
                    removed += 1
        return removed
