"""Events: one per (dag, run, task, map index, try, kind), with the labels groups and silences match on.

Second from the bottom of the alerts wing: it reads a callback context through :mod:`.fields` and knows
nothing of digests, state or sending; the knobs (``group_by``) and silences validate against :data:`LABELS`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from airflow_secure_mail.alerts.fields import DAG_RUN, alert_fields, callback_scope, reason_text

LABELS = ("dag_id", "task_id", "run_id", "map_index", "try_number", "kind")
"""What an event is labelled with: what ``group_by`` groups on and silence matchers match."""

RUN = "(run)"
"""The task_id label of a DAG-run event."""


class Kind(StrEnum):
    FAILURE = "failure"
    RETRY = "retry"
    SUCCESS = "success"
    RUN_FAILURE = "run_failure"
    RUN_SUCCESS = "run_success"

    @property
    def resolving(self) -> bool:
        return self in (Kind.SUCCESS, Kind.RUN_SUCCESS)


def alerting_kinds(notify_on_retry: bool) -> frozenset[Kind]:
    """The kinds that fire an alert: failures, and retries when the digest notifies on them."""
    return frozenset({Kind.FAILURE, Kind.RUN_FAILURE} | ({Kind.RETRY} if notify_on_retry else set()))


@dataclass(frozen=True)
class Event:
    """One callback, as stored: identity, when, and what a reader needs (never a traceback)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    kind: Kind
    at: datetime
    error: str | None = None
    log_url: str | None = None
    max_tries: int | None = None

    @property
    def id(self) -> str:
        """Stable across recordings of the same callback: the object name that makes recording idempotent."""
        ident = "\x00".join(
            [self.dag_id, self.run_id, self.task_id, str(self.map_index), str(self.try_number), self.kind.value]
        )
        return hashlib.sha256(ident.encode()).hexdigest()[:32]

    @property
    def name(self) -> str:
        """How logs name it: ``dag.task[map] try N`` or ``DAG run dag run_id``."""
        if self.task_id == RUN:
            return f"DAG run {self.dag_id} {self.run_id}"
        index = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{index} try {self.try_number}"

    @property
    def alert_key(self) -> tuple[str, str]:
        return (self.dag_id, self.task_id)

    @property
    def key_hash(self) -> str:
        return key_hash(self.alert_key)

    @property
    def labels(self) -> dict[str, str]:
        return {
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "map_index": str(self.map_index),
            "try_number": str(self.try_number),
            "kind": self.kind.value,
        }

    def to_json(self) -> bytes:
        data = asdict(self)
        data.update(kind=self.kind.value, at=self.at.isoformat(), id=self.id)
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Event:
        data = json.loads(raw)
        data.pop("id", None)
        data["kind"] = Kind(data["kind"])
        data["at"] = datetime.fromisoformat(data["at"])
        return cls(**data)


def key_hash(key: tuple[str, str] | list[str]) -> str:
    return hashlib.sha256(json.dumps(list(key)).encode()).hexdigest()[:12]


def _kind(context: Mapping[str, Any], ti: Any) -> Kind:
    if ti is None:
        return Kind.RUN_SUCCESS if str(context.get("reason") or "") == "success" else Kind.RUN_FAILURE
    state = str(getattr(ti, "state", "") or "").rsplit(".", 1)[-1].lower()
    if state == "up_for_retry":
        return Kind.RETRY
    if state == "success" and context.get("exception") is None:
        return Kind.SUCCESS
    return Kind.FAILURE


def event_from_context(context: Mapping[str, Any], at: datetime) -> Event:
    """The event a task or DAG callback stands for; the error is the masked first line only (a run's: the
    reason in words)."""
    fields = alert_fields(context)
    is_run = callback_scope(context) == DAG_RUN
    ti = None if is_run else context.get("ti") or context.get("task_instance")
    map_index = getattr(ti, "map_index", -1)
    try_number = getattr(ti, "try_number", 0)
    max_tries = getattr(ti, "max_tries", None)
    return Event(
        dag_id=str(fields["dag_id"]),
        run_id=str(fields["run_id"]),
        task_id=RUN if is_run else str(fields["task_id"]),
        map_index=int(map_index if map_index is not None else -1),
        try_number=int(try_number or 0),
        kind=_kind(context, ti),
        at=at,
        error=reason_text(context.get("reason")) if is_run else fields["error"],
        log_url=None if is_run else fields["log_url"],
        max_tries=int(max_tries) + 1 if isinstance(max_tries, int) else None,
    )
