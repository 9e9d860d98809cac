"""What a digest shows, computed once when it is claimed (so a takeover sends the very same mail).

Reads a claim (:mod:`.claims`), its events and the knobs; the plan calls it, it calls nothing above it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.alerts.claims import FIRING, AlertState, Claim
from airflow_secure_mail.alerts.events import RUN, Event, Kind, alerting_kinds

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.knobs import DigestKnobs
    from airflow_secure_mail.alerts.silences import Silence


def _item(e: Event) -> dict[str, Any]:
    return {
        "task_id": e.task_id,
        "map_index": e.map_index,
        "try_number": e.try_number,
        "max_tries": e.max_tries,
        "kind": e.kind.value,
        "error": e.error,
        "log_url": e.log_url,
        "at": e.at.isoformat(),
    }


def build_view(
    digest: DigestKnobs,
    claim: Claim,
    events: list[Event],
    held: list[tuple[Event, Silence]],
    resolved_now: list[str],
    added: Counter[str] | None = None,
) -> dict[str, Any]:
    """Failed runs with their task instances (inhibition), alert rows, resolved keys, held events; capped.

    Each count is defined once, over the events this digest reports (not those a silence held), and the
    subject, the summary line and the sections all render these numbers:

    * ``failures``: distinct task instances (dag, run, task, map index) with a failure event;
    * ``retries``: retry events (one per retried try);
    * ``failed_runs``: distinct DAG runs with a run-failure event;
    * a row's ``count`` ("xN"): the alert's events (failures and retries of its task) since it began firing,
      as the claim's alert state holds them, ``retries`` the retries among them, ``new`` those this digest added.
    """
    folded = _fold_runs(events, digest.notify_on_retry)
    loose = Counter(e.key_hash for e in folded.loose)
    new = added if added is not None else loose
    keys = _firing_keys(claim, folded, loose, new)
    runs, budget, hidden = _run_items(folded, digest.max_items)
    rows = [_row(claim.alerts[k], new[k]) for k in keys[: max(budget, 0)]]
    starts = [str(r["at"]) for r in runs] + [str(r["first_seen"]) for r in rows] + [e.at.isoformat() for e, _ in held]
    dags = {dag for dag, _ in folded.failed_runs} | {claim.alerts[k].dag_id for k in keys} | {e.dag_id for e, _ in held}
    return {
        "kind": claim.kind,
        "group": claim.group,
        "at": claim.at,
        "events": len(events) + len(held),
        "failures": len(_failed_instances(events)),
        "retries": sum(1 for e in events if e.kind is Kind.RETRY),
        "failed_runs": len(folded.failed_runs),
        "firing": len(keys),
        "dags": sorted(dags),
        "since": min(starts) if starts else claim.at,
        "runs": runs,
        "rows": rows,
        "resolved": _resolved(claim, resolved_now) if digest.send_resolved else [],
        "held": _held(held),
        "other": {"successes": sum(1 for e in events if e.kind.resolving)},
        "more": hidden + len(keys) - len(rows),
        "where": f"{digest.state.rstrip('/')}/events/{claim.gid}/",
    }


def _failed_instances(events: list[Event]) -> set[tuple[str, str, str, int]]:
    return {(e.dag_id, e.run_id, e.task_id, e.map_index) for e in events if e.kind is Kind.FAILURE}


def _order(e: Event) -> tuple[str, str, int, int, str]:
    """Task instances as a reader looks them up: by DAG, task, map index (then try and time)."""
    return (e.dag_id, e.task_id, e.map_index, e.try_number, e.at.isoformat())


@dataclass
class _Folded:
    """Alerting events split by inhibition: each failed run with its task alerts, and the rest (``loose``)."""

    failed_runs: dict[tuple[str, str], Event]
    run_tasks: dict[tuple[str, str], list[Event]]
    loose: list[Event]

    @property
    def in_runs(self) -> list[Event]:
        return [e for tasks in self.run_tasks.values() for e in tasks]

    @property
    def alerted(self) -> list[Event]:
        return self.in_runs + self.loose


def _fold_runs(events: list[Event], notify_on_retry: bool) -> _Folded:
    """A failed run folds the alerts of its own task instances (Alertmanager's inhibition)."""
    alerting = alerting_kinds(notify_on_retry) - {Kind.RUN_FAILURE}  # the runs themselves are the folders
    failed_runs = {(e.dag_id, e.run_id): e for e in sorted(events, key=lambda e: e.at) if e.kind is Kind.RUN_FAILURE}
    folded = _Folded(failed_runs, {key: [] for key in failed_runs}, [])
    for e in sorted(events, key=_order):
        if e.kind in alerting:
            run_key = (e.dag_id, e.run_id)
            (folded.run_tasks[run_key] if run_key in failed_runs else folded.loose).append(e)
    return folded


def _firing_keys(claim: Claim, folded: _Folded, loose: Counter[str], new: Counter[str]) -> list[str]:
    """Firing alert keys, less those a failed run folds (unless they fired outside it too); busiest first."""
    inhibited = {e.key_hash for e in folded.failed_runs.values()} | {e.key_hash for e in folded.in_runs}
    keys = [k for k, a in claim.alerts.items() if a.status == FIRING and (k in loose or k not in inhibited)]
    return sorted(keys, key=lambda k: (-new[k], claim.alerts[k].dag_id, claim.alerts[k].task_id))


def _run_items(folded: _Folded, budget: int) -> tuple[list[dict[str, Any]], int, int]:
    """Each failed run with as many task rows as ``budget`` allows: (items, budget left, task rows not shown).

    A run without task alerts costs one item of the budget itself.
    """
    items: list[dict[str, Any]] = []
    hidden = 0
    for run_key, run in folded.failed_runs.items():
        tasks = folded.run_tasks[run_key]
        shown = tasks[: max(budget, 0)]
        budget -= len(shown) if tasks else 1
        hidden += len(tasks) - len(shown)
        items.append(
            {
                "dag_id": run.dag_id,
                "run_id": run.run_id,
                "at": run.at.isoformat(),
                "error": run.error,
                "failed": len(_failed_instances(tasks)),
                "retries": sum(1 for t in tasks if t.kind is Kind.RETRY),
                "tasks": [_item(t) for t in shown],
            }
        )
    return items, budget, hidden


def _row(alert: AlertState, new: int) -> dict[str, Any]:
    return {
        "dag_id": alert.dag_id,
        "task_id": alert.task_id if alert.task_id != RUN else "(DAG run)",
        "new": new,
        "count": alert.count,
        "retries": alert.retries,
        "first_seen": alert.first_seen,
        "last_seen": alert.last_seen,
        "last_error": alert.last_error,
        "log_url": alert.log_url,
    }


def _resolved(claim: Claim, resolved_now: list[str]) -> list[dict[str, Any]]:
    alerts = [claim.alerts[k] for k in dict.fromkeys(resolved_now)]
    return [{"dag_id": a.dag_id, "task_id": a.task_id, "at": a.resolved_at} for a in alerts]


def _held(held: list[tuple[Event, Silence]]) -> list[dict[str, Any]]:
    """Events a silence held, by silence: what it is, how many, and which task keys (most frequent first)."""
    by_silence: dict[str, dict[str, Any]] = {}
    for e, s in held:
        entry = by_silence.setdefault(s.id, {**s.describe(), "count": 0, "keys": Counter()})
        entry["count"] += 1
        entry["keys"][f"{e.dag_id}.{e.task_id}"] += 1
    return [dict(h, keys=dict(h["keys"].most_common())) for h in by_silence.values()]
