"""Deciding whether a group's next digest is due, and what it reports: pure, no I/O beyond ``load``.

The next claim (:mod:`.claims`) is built from the previous one plus the events recorded since, so every
event lands in exactly one digest; its view (:mod:`.view`) is computed here, once. Flush calls this with
the digest's knobs (:class:`~airflow_secure_mail.alerts.knobs.DigestKnobs`), never the other way round.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from airflow_secure_mail.alerts.claims import FIRING, RESOLVED, AlertState, Claim
from airflow_secure_mail.alerts.events import RUN, Event, Kind, alerting_kinds
from airflow_secure_mail.alerts.state import IndexEntry, stamp_of
from airflow_secure_mail.alerts.view import build_view

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.knobs import DigestKnobs
    from airflow_secure_mail.alerts.silences import Silence

_SETTLE = timedelta(minutes=10)
"""Beyond the lease, how long a late writer may take between reading the clock and storing its event."""


def _mark(entry: IndexEntry) -> str:
    return f"{entry.stamp}-{entry.event_id}"


def unreported(prev: Claim | None, entries: list[IndexEntry], now: datetime) -> list[IndexEntry]:
    """Index entries no earlier claim reported (and not from the future of ``now``)."""
    seen = set(prev.reported) if prev else set()
    cutoff = stamp_of(now)
    return [e for e in entries if e.stamp <= cutoff and _mark(e) not in seen]


def _firing(prev: Claim | None, now: datetime, resolve_timeout: timedelta) -> set[str]:
    if prev is None:
        return set()
    return {
        k
        for k, a in prev.alerts.items()
        if a.status == FIRING and datetime.fromisoformat(a.last_seen) + resolve_timeout > now
    }


def _silence_of(event: Event, silences: list[Silence]) -> Silence | None:
    return next((s for s in silences if s.active(event.at) and s.matches(event.labels)), None)


@dataclass
class _Batch:
    normal: list[IndexEntry]
    held_active: list[tuple[IndexEntry, Silence]]
    held_ended: list[tuple[IndexEntry, Silence]]


@dataclass
class Decision:
    """What a flush found for a group: the claim to send now, or why its unreported events wait.

    ``due`` is when the next digest may go out and ``due_kind`` the Alertmanager knob that set it (``first``:
    group_wait, ``update``: group_interval, ``repeat``: repeat_interval); ``waiting`` are the unreported events
    no silence holds, ``held`` those an active silence holds (with it). With a claim, nothing waits.
    """

    claim: Claim | None
    due: datetime | None = None
    due_kind: str = ""
    waiting: list[IndexEntry] = field(default_factory=list)
    held: list[tuple[IndexEntry, Silence]] = field(default_factory=list)

    @property
    def knob(self) -> str:
        return {"first": "group_wait", "update": "group_interval", "repeat": "repeat_interval"}.get(self.due_kind, "")


def _split(
    entries: list[IndexEntry], silences: list[Silence], now: datetime, load: Callable[[IndexEntry], Event]
) -> _Batch:
    if not entries:
        return _Batch([], [], [])
    first, last = entries[0].at, entries[-1].at
    relevant = [s for s in silences if s.starts_at <= last and s.end > first]
    if not relevant:
        return _Batch(list(entries), [], [])
    batch = _Batch([], [], [])
    for entry in entries:
        silence = _silence_of(load(entry), relevant)
        if silence is None:
            batch.normal.append(entry)
        elif silence.active(now):
            batch.held_active.append((entry, silence))
        else:
            batch.held_ended.append((entry, silence))
    return batch


def decide(
    digest: DigestKnobs,
    gid: str,
    group: dict[str, str],
    prev: Claim | None,
    entries: list[IndexEntry],
    silences: list[Silence],
    now: datetime,
    load: Callable[[IndexEntry], Event],
) -> Decision:
    """The next claim if a digest is due at ``now`` (Alertmanager's group_wait/interval/repeat), when the next
    one is due, and which events wait or are held."""
    batch = _split(entries, silences, now, load)
    firing = _firing(prev, now, digest.interval("resolve_timeout"))
    triggers = alerting_kinds(digest.notify_on_retry)
    last_bad: dict[str, str] = {}
    last_ok: dict[str, str] = {}
    for e in batch.normal:
        if e.kind in triggers:
            last_bad[e.key_hash] = e.stamp
        elif e.kind.resolving:
            last_ok[e.key_hash] = e.stamp
    new_keys = set(last_bad) - firing
    resolved = {k for k in firing if last_ok.get(k, "") > last_bad.get(k, "")}
    still = (firing - resolved) | {k for k, s in last_bad.items() if s > last_ok.get(k, "")}
    if prev is not None:
        still = {k for k in still if k not in prev.alerts or not _silenced_now(prev.alerts[k], silences, now)}
    changed = bool(new_keys) or (digest.send_resolved and bool(resolved)) or bool(batch.held_ended)
    if changed and (prev is None or (new_keys and not firing - resolved)):
        starts = [e.at for e in batch.normal if e.kind in triggers] + [e.at for e, _ in batch.held_ended]
        due, kind = min(starts, default=now) + digest.interval("group_wait"), "first"
    elif changed:
        assert prev is not None
        due, kind = prev.time + digest.interval("group_interval"), "update"
    elif still and prev is not None:
        due, kind = prev.time + digest.interval("repeat_interval"), "repeat"
    else:
        return Decision(None, waiting=list(batch.normal), held=list(batch.held_active))
    if now < due:
        return Decision(None, due, kind, list(batch.normal), list(batch.held_active))
    claim = _build(digest, gid, group, prev, batch, silences, now, load, kind)
    return Decision(claim, due, kind, held=list(batch.held_active))


def _silenced_now(alert: AlertState, silences: list[Silence], now: datetime) -> bool:
    labels = {"dag_id": alert.dag_id, "task_id": alert.task_id}
    return any(s.active(now) and all(m.label in labels and m.matches(labels) for m in s.matchers) for s in silences)


def _build(
    digest: DigestKnobs,
    gid: str,
    group: dict[str, str],
    prev: Claim | None,
    batch: _Batch,
    silences: list[Silence],
    now: datetime,
    load: Callable[[IndexEntry], Event],
    kind: str,
) -> Claim:
    alerts = _carried_over(prev, now, digest.interval("resolve_timeout"))
    events = [load(e) for e in batch.normal]
    held = [(load(e), s) for e, s in batch.held_ended]
    resolved_now, added = _fold(alerts, [*events, *(e for e, _ in held)], digest.notify_on_retry)
    closed = _closed_through(batch, now - digest.interval("lease") - _SETTLE)
    marks = [*(_mark(e) for e in batch.normal), *(_mark(e) for e, _ in batch.held_ended)]
    claim = Claim(
        n=(prev.n if prev else 0) + 1,
        gid=gid,
        group=dict(group),
        at=now.isoformat(),
        kind=kind,
        closed_through=closed,
        reported=_still_open(prev, marks, closed),
        alerts=alerts,
    )
    claim.view = build_view(digest, claim, events, held, resolved_now, added)
    return claim


def _carried_over(prev: Claim | None, now: datetime, resolve_timeout: timedelta) -> dict[str, AlertState]:
    """The previous claim's alert states, copied; a firing alert unseen for ``resolve_timeout`` resolves."""
    alerts = {k: AlertState(**asdict(a)) for k, a in (prev.alerts if prev else {}).items()}
    for a in alerts.values():
        if a.status == FIRING and datetime.fromisoformat(a.last_seen) + resolve_timeout <= now:
            a.status, a.resolved_at = RESOLVED, (datetime.fromisoformat(a.last_seen) + resolve_timeout).isoformat()
    return alerts


def _closed_through(batch: _Batch, settled: datetime) -> str:
    """The stamp up to which no later event can arrive unseen: settled time, or before a still-held event."""
    return min([stamp_of(settled), *(_before(e.stamp) for e, _ in batch.held_active)])


def _still_open(prev: Claim | None, marks: list[str], closed: str) -> list[str]:
    """Reported marks (old and new) stamped after ``closed``: the only ones a later index read can meet again."""
    return sorted(m for m in {*(prev.reported if prev else []), *marks} if m.split("-", 1)[0] > closed)


def _before(stamp: str) -> str:
    return stamp_of(IndexEntry(stamp, Kind.FAILURE, "", "").at - timedelta(seconds=1))


def _fold(alerts: dict[str, AlertState], events: list[Event], notify_on_retry: bool) -> tuple[list[str], Counter[str]]:
    """Apply events in time order to the alert states: the keys this batch resolved, and per key how many
    events it added to the alert's count.

    An alert's count (the digest's "xN") is its events: each failure and each retry of its task since the
    alert began firing, retries included; ``retries`` counts the retries among them. A retry that comes
    before its task's first failure in the same batch (try 1 retried, try 2 failed) belongs to the alert
    that failure starts, so the state, the row and the digest's totals count the same events.
    """
    resolved: list[str] = []
    added: Counter[str] = Counter()
    pending: Counter[str] = Counter()  # retries of a key that is not firing yet in this batch
    fires = alerting_kinds(notify_on_retry)
    for ev in sorted(events, key=lambda e: (e.at, e.kind.resolving)):
        at = ev.at.isoformat()
        key = ev.key_hash
        state = alerts.get(key)
        firing = state is not None and state.status == FIRING
        if ev.kind in fires and not firing:
            state = alerts[key] = AlertState(ev.dag_id, ev.task_id, FIRING, at, at)
            state.count, state.retries, added[key] = pending[key], pending[key], added[key] + pending[key]
            pending[key] = 0
            firing = True
        if state is not None and firing and (ev.kind in fires or ev.kind is Kind.RETRY):
            state.count += 1
            added[key] += 1
            state.retries += ev.kind is Kind.RETRY
            if ev.kind in fires:
                state.last_seen = at
                state.last_error = ev.error or state.last_error
                state.log_url = ev.log_url or state.log_url
        elif ev.kind is Kind.RETRY:
            pending[key] += 1
        elif ev.kind.resolving:
            pending[key] = 0
            if state is not None and firing:
                state.status, state.resolved_at = RESOLVED, at
                resolved.append(key)
    return resolved, added


__all__ = ["RUN", "AlertState", "Claim", "Decision", "decide", "unreported"]
