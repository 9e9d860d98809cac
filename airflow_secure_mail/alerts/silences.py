"""Silences: label matchers with a time window; a silenced event is recorded, held, and mentioned later."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.alerts.digest import LABELS
from airflow_secure_mail.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.state import DigestState

_MATCHER = re.compile(r"^\s*([a-z_]+)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Matcher:
    """``label=value``, ``label!=value``, ``label=~regex``, ``label!~regex`` (Alertmanager's four operators)."""

    label: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        found = _MATCHER.match(text)
        if not found or found.group(1) not in LABELS:
            raise ConfigurationError(
                f"silence matcher {text!r}: write LABEL=VALUE (or !=, =~, !~) with LABEL one of {', '.join(LABELS)}."
            )
        label, op, value = found.groups()
        if "~" in op:
            try:
                re.compile(value)
            except re.error as exc:
                raise ConfigurationError(f"silence matcher {text!r}: bad regular expression ({exc}).") from None
        return cls(label, op, value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value}"


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    expired_at: datetime | None = None

    @property
    def end(self) -> datetime:
        return min(self.ends_at, self.expired_at) if self.expired_at else self.ends_at

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.end

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "reason": self.reason,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.end.isoformat(),
            "created_by": self.created_by,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], expired: Mapping[str, Any] | None) -> Silence:
        return cls(
            id=str(data["id"]),
            matchers=tuple(Matcher.parse(m) for m in data["matchers"]),
            starts_at=datetime.fromisoformat(data["starts_at"]),
            ends_at=datetime.fromisoformat(data["ends_at"]),
            reason=str(data.get("reason", "")),
            created_by=str(data.get("created_by", "")),
            expired_at=datetime.fromisoformat(expired["expired_at"]) if expired else None,
        )


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise ConfigurationError(f"silence {what} {value.isoformat()} has no time zone: add Z or +HH:MM.")
    return value.astimezone(UTC)


def add_silence(
    state: DigestState,
    matchers: Sequence[str],
    *,
    until: datetime,
    reason: str,
    starts: datetime | None = None,
    created_by: str = "",
    now: datetime | None = None,
) -> Silence:
    """Write a new silence (write-once); refuses an empty matcher list, which would silence everything."""
    if not matchers:
        raise ConfigurationError("a silence needs at least one --match LABEL=VALUE (it would silence everything).")
    if not reason.strip():
        raise ConfigurationError("a silence needs a --reason, so whoever reads the held alerts knows why.")
    now = now or datetime.now(UTC)
    start = _aware(starts, "start") if starts else now
    end = _aware(until, "end")
    if end <= start:
        raise ConfigurationError(f"silence ends at {end.isoformat()}, not after its start {start.isoformat()}.")
    silence = Silence(
        id=secrets.token_hex(6),
        matchers=tuple(Matcher.parse(m) for m in matchers),
        starts_at=start,
        ends_at=end,
        reason=reason.strip(),
        created_by=created_by,
    )
    data = silence.describe() | {"ends_at": end.isoformat(), "created_at": now.isoformat()}
    state.create_json(f"silences/{silence.id}.json", data)
    return silence


def list_silences(state: DigestState) -> list[Silence]:
    found = []
    for name in state.names("silences"):
        if name.endswith(".json") and ".expired" not in name:
            sid = name[: -len(".json")]
            data = state.read_json(f"silences/{name}")
            if data is not None:
                found.append(Silence.from_json(data, state.read_json(f"silences/{sid}.expired.json")))
    return sorted(found, key=lambda s: (s.starts_at, s.id))


def expire_silence(state: DigestState, silence_id: str, *, now: datetime | None = None) -> Silence:
    """End a silence now (an ``.expired`` marker; the silence object itself is never rewritten)."""
    if not re.fullmatch(r"[0-9a-f]{12}", silence_id):
        raise ConfigurationError(f"silence id {silence_id!r} is not one: see `airflow-secure-mail silence list`.")
    data = state.read_json(f"silences/{silence_id}.json")
    if data is None:
        raise ConfigurationError(f"no silence {silence_id} at {state.location}: see `silence list`.")
    now = now or datetime.now(UTC)
    state.create_json(f"silences/{silence_id}.expired.json", {"expired_at": now.isoformat()})
    return Silence.from_json(data, state.read_json(f"silences/{silence_id}.expired.json"))
