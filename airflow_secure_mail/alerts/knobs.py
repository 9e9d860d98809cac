"""The digest's knobs: Alertmanager's group_by, group_wait, group_interval, repeat_interval ... validated once.

Why a module of its own: state, plan, view, flush and the callback all read the knobs, and
:class:`~airflow_secure_mail.alerts.digest.AlertDigest` (the public class, the top of the alerts wing) adds
the methods that record and flush. Keeping the fields and their validation down here, with no behaviour that
needs state or sending, lets every module below ``digest`` take a :class:`DigestKnobs` as a plain parameter
while ``digest`` imports them, never the other way round (no import circle, not even inside a function).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from airflow_secure_mail.alerts.events import LABELS
from airflow_secure_mail.errors import ConfigurationError

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.events import Event

Duration = str | int | float | timedelta
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


STATE_SCHEMES = ("file", "s3")
"""Where digest state may live (the README documents these): anything else is refused before it is opened."""


def check_state_location(location: str) -> None:
    """Refuse a state URL without a scheme or with one we do not document (``http://``, ``ftp://``...).

    The one check of a state URL: :class:`DigestKnobs` runs it when built, :class:`DigestState` (the CLI's way
    in) before it builds its store, so nothing connects to the host such a URL names.
    """
    scheme, sep, _ = str(location).partition("://")
    if not sep or not scheme:
        raise ConfigurationError("digest state needs a scheme: file:///path or s3://bucket/prefix.")
    scheme = scheme.lower()
    if scheme not in STATE_SCHEMES:
        shown = f"{scheme}://" if re.fullmatch(r"[a-z][a-z0-9+.-]{0,30}", scheme) else "of this URL"
        raise ConfigurationError(
            f"digest state: scheme {shown} is not supported; use file:///path or s3://bucket/prefix."
        )


def parse_duration(value: Duration, what: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"4h"``, ``"2d"`` (Alertmanager/Prometheus style), seconds, or timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and value.strip() and _PART.sub("", value.strip()) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value.strip()))
    else:
        raise ConfigurationError(f"AlertDigest.{what}={value!r}: give a duration like '30s', '15m', '4h' or '1h30m'.")
    if seconds < 0:
        raise ConfigurationError(f"AlertDigest.{what} must not be negative, got {value!r}.")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class DigestKnobs:
    """The fields of :class:`~airflow_secure_mail.alerts.digest.AlertDigest`, validated when built.

    ``group_by=()`` puts every alert in one group (as an empty ``group_by`` does in Alertmanager).
    ``state`` is an ObjectStoragePath location (``s3://bucket/prefix`` with ``state_conn_id``, or ``file:///path``;
    no other scheme)
    shared by every worker. ``clock`` (tests) replaces the wall clock; it must return aware datetimes.
    """

    state: str
    state_conn_id: str | None = None
    group_by: Sequence[str] = ("dag_id",)
    group_wait: Duration = "0s"
    group_interval: Duration = "15m"
    repeat_interval: Duration = "4h"
    notify_on_retry: bool = False
    send_resolved: bool = False
    max_items: int = 50
    lease: Duration = "5m"
    resolve_timeout: Duration = "24h"
    retention: Duration = "14d"
    clock: Callable[[], datetime] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_state_location(self.state)  # when the DAG is parsed: a bad URL fails there, not at the first alert
        object.__setattr__(self, "group_by", tuple(self.group_by))
        unknown = [label for label in self.group_by if label not in LABELS]
        if unknown:
            raise ConfigurationError(f"AlertDigest.group_by={self.group_by!r}: choose labels from {', '.join(LABELS)}.")
        if not isinstance(self.max_items, int) or self.max_items < 1:
            raise ConfigurationError(f"AlertDigest.max_items={self.max_items!r}: give a positive integer.")
        for name in ("group_wait", "group_interval", "repeat_interval", "lease", "resolve_timeout", "retention"):
            parse_duration(getattr(self, name), name)
        if self.interval("group_interval") <= timedelta(0):
            raise ConfigurationError("AlertDigest.group_interval must be longer than zero.")

    def interval(self, name: str) -> timedelta:
        return parse_duration(getattr(self, name), name)

    def now(self) -> datetime:
        now = self.clock() if self.clock is not None else datetime.now(UTC)
        if now.tzinfo is None:
            raise ConfigurationError("AlertDigest.clock must return timezone-aware datetimes.")
        return now.astimezone(UTC)

    def group_of(self, event: Event) -> dict[str, str]:
        return {label: event.labels[label] for label in self.group_by}
