"""Claims: digest ``n`` of a group as written once before it is sent, with the alert states it carries.

A group's digests form a chain of claims 1, 2, 3, ... Each claim carries the group's alert state (which
alert keys fire, since when, how often) and which recent events it reported. Plain data, no imports of the
alerts wing: the view reads a claim, the plan builds the next one, flush stores and sends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

FIRING, RESOLVED = "firing", "resolved"


@dataclass
class AlertState:
    """One alert key (dag_id, task_id) across digests: Alertmanager's alert, with a count of its events."""

    dag_id: str
    task_id: str
    status: str
    first_seen: str
    last_seen: str
    count: int = 0
    retries: int = 0
    last_error: str | None = None
    log_url: str | None = None
    resolved_at: str | None = None


@dataclass
class Claim:
    """Digest ``n`` of a group: written once before sending; whoever writes it sends it."""

    n: int
    gid: str
    group: dict[str, str]
    at: str
    kind: str
    closed_through: str
    reported: list[str]
    alerts: dict[str, AlertState]
    view: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.at)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Claim:
        values = dict(data)
        values["alerts"] = {k: AlertState(**v) for k, v in data["alerts"].items()}
        return cls(**values)
