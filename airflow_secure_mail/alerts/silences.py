"""Silences: label matchers with a time window; a silenced event is recorded, held, and mentioned later.

Above the state (where silences are stored) and the events (whose labels matchers name); plan, view, flush
and the ``silence`` CLI read them.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.alerts.events import LABELS
from airflow_secure_mail.errors import ArchiveIntegrityError, ConfigurationError

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.state import DigestState

log = logging.getLogger(__name__)

_MATCHER = re.compile(r"^\s*([a-z_]+)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Bidirectional overrides and isolates: they reorder what a terminal shows (Trojan Source)."""


def _unsafe(char: str) -> bool:
    """C0/C1 controls and DEL, line and paragraph separators, bidi overrides: they forge or hide list rows."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI


def refuse_control_characters(text: str, what: str) -> None:
    """Silences are listed one per line: free text with a line break or control character could forge a row."""
    bad = next((c for c in text if _unsafe(c)), None)
    if bad is not None:
        raise ConfigurationError(
            f"silence {what} contains a control or line-break character (U+{ord(bad):04X}): write it on one line."
        )


def printable(text: str) -> str:
    """``text`` with every unsafe character escaped (``\\n``, ``\\x00``, ``\\u2028``): stored silences printed as is."""
    return "".join(c.encode("unicode_escape").decode("ascii") if _unsafe(c) else c for c in text)


@functools.lru_cache(maxsize=256)
def _re2(pattern: str) -> Any:
    """The pattern compiled by RE2 (linear time, as Alertmanager's Go regexp); raises ``re2.error``."""
    import re2

    options = re2.Options()
    options.log_errors = False  # our error says what is wrong; RE2 would also print it to stderr
    return re2.compile(pattern, options=options)


def _compile_matcher(text: str, pattern: str) -> None:
    """Refuse a pattern RE2 cannot run (backreferences, lookaround) or that is no regular expression at all."""
    import re2

    try:
        _re2(pattern)
        return
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigurationError(f"silence matcher {text!r}: bad regular expression ({exc}).") from None
    raise ConfigurationError(
        f"silence matcher {text!r}: not a linear-time (RE2) regular expression ({reason}); "
        "as in Alertmanager, backreferences and lookaround are not supported."
    )


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
            _compile_matcher(text, value)
        return cls(label, op, value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = _re2(self.value).fullmatch(actual) is not None  # anchored at both ends, as Alertmanager
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
    refuse_control_characters(reason, "--reason")
    refuse_control_characters(created_by, "creator name")
    for matcher in matchers:
        refuse_control_characters(matcher, "--match")
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
    """Every stored silence; one that cannot be read or run is skipped with a warning, never stopping a flush."""
    found = []
    for name in state.names("silences"):
        if name.endswith(".json") and ".expired" not in name:
            silence = _load(state, name)
            if silence is not None:
                found.append(silence)
    return sorted(found, key=lambda s: (s.starts_at, s.id))


def _load(state: DigestState, name: str) -> Silence | None:
    """One stored silence, or None (warned) when its object is garbage or a matcher RE2 cannot run.

    A skipped silence lets its alerts through: for alert mail, sending is the safe side of failing.
    Storage that cannot be reached is not skipped: it raises, and the flush retries later.
    """
    key = f"silences/{name}"
    try:
        data = state.read_json(key)
        if data is None:
            return None
        return Silence.from_json(data, state.read_json(f"silences/{name[: -len('.json')]}.expired.json"))
    except (ArchiveIntegrityError, ConfigurationError, KeyError, TypeError, ValueError, AttributeError) as exc:
        problem = str(exc) if isinstance(exc, ConfigurationError | ArchiveIntegrityError) else type(exc).__name__
    log.warning("silence %s skipped: %s", key, problem)
    return None


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
