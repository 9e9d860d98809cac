"""What a digest shows, computed once when it is claimed (so a takeover sends the very same mail)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from airflow_secure_mail.alerts.events import RUN, Event, Kind

if TYPE_CHECKING:
    from airflow_secure_mail.alerts.digest import AlertDigest
    from airflow_secure_mail.alerts.plan import Claim
    from airflow_secure_mail.alerts.silences import Silence


def _item(e: Event) -> dict[str, Any]:
    return {
        "task_id": e.task_id,
        "map_index": e.map_index,
        "try_number": e.try_number,
        "max_tries": e.max_tries,
        "error": e.error,
        "log_url": e.log_url,
        "at": e.at.isoformat(),
    }


def build_view(
    digest: AlertDigest,
    claim: Claim,
    events: list[Event],
    held: list[tuple[Event, Silence]],
    resolved_now: list[str],
) -> dict[str, Any]:
    """Failed runs with their task instances (inhibition), alert rows, resolved keys, held events; capped."""
    alerting = {Kind.FAILURE} | ({Kind.RETRY} if digest.notify_on_retry else set())
    failed_runs = {(e.dag_id, e.run_id): e for e in sorted(events, key=lambda e: e.at) if e.kind is Kind.RUN_FAILURE}
    run_tasks: dict[tuple[str, str], list[Event]] = {key: [] for key in failed_runs}
    loose: list[Event] = []
    for e in sorted(events, key=lambda e: (e.at, e.task_id, e.map_index)):
        if e.kind in alerting:
            (run_tasks[(e.dag_id, e.run_id)] if (e.dag_id, e.run_id) in failed_runs else loose).append(e)
    new = Counter(e.key_hash for e in loose)
    inhibited = {e.key_hash for e in failed_runs.values()} | {e.key_hash for ts in run_tasks.values() for e in ts}
    keys = [k for k, a in claim.alerts.items() if a.status == "firing" and (k in new or k not in inhibited)]
    keys.sort(key=lambda k: (-new[k], claim.alerts[k].dag_id, claim.alerts[k].task_id))
    budget = digest.max_items
    runs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    total = shown_total = 0
    for run_key, run in failed_runs.items():
        tasks = run_tasks[run_key]
        total += len(tasks) or 1
        shown = tasks[: max(budget, 0)]
        budget -= len(shown) if tasks else 1
        shown_total += len(shown) if tasks else 1
        runs.append(
            {
                "dag_id": run.dag_id,
                "run_id": run.run_id,
                "at": run.at.isoformat(),
                "error": run.error,
                "failed": len(tasks),
                "tasks": [_item(t) for t in shown],
            }
        )
    for key in keys:
        total += 1
        if budget > 0:
            budget -= 1
            shown_total += 1
            a = claim.alerts[key]
            rows.append(
                {
                    "dag_id": a.dag_id,
                    "task_id": a.task_id if a.task_id != RUN else "(DAG run)",
                    "new": new[key],
                    "count": a.count,
                    "retries": a.retries,
                    "first_seen": a.first_seen,
                    "last_seen": a.last_seen,
                    "last_error": a.last_error,
                    "log_url": a.log_url,
                }
            )
    resolved = [
        {"dag_id": claim.alerts[k].dag_id, "task_id": claim.alerts[k].task_id, "at": claim.alerts[k].resolved_at}
        for k in dict.fromkeys(resolved_now)
        if digest.send_resolved
    ]
    held_by: dict[str, dict[str, Any]] = {}
    for e, s in held:
        entry = held_by.setdefault(s.id, {**s.describe(), "count": 0, "keys": Counter()})
        entry["count"] += 1
        entry["keys"][f"{e.dag_id}.{e.task_id}"] += 1
    alerted = [e for ts in run_tasks.values() for e in ts] + loose
    retries = sum(1 for e in alerted if e.kind is Kind.RETRY)
    failures = len(alerted) - retries + sum(1 for ts in run_tasks.values() if not ts)
    starts = [str(r["at"]) for r in runs] + [str(r["first_seen"]) for r in rows] + [e.at.isoformat() for e, _ in held]
    return {
        "kind": claim.kind,
        "group": claim.group,
        "at": claim.at,
        "failures": failures,
        "retries": retries,
        "firing": len(keys),
        "dags": sorted(
            {dag for dag, _ in failed_runs} | {claim.alerts[k].dag_id for k in keys} | {e.dag_id for e, _ in held}
        ),
        "since": min(starts) if starts else claim.at,
        "runs": runs,
        "rows": rows,
        "resolved": resolved,
        "held": [dict(h, keys=dict(h["keys"].most_common())) for h in held_by.values()],
        "other": {
            "retries": sum(1 for e in events if e.kind is Kind.RETRY and not digest.notify_on_retry),
            "successes": sum(1 for e in events if e.kind.resolving),
        },
        "more": total - shown_total,
        "where": f"{digest.state.rstrip('/')}/events/{claim.gid}/",
    }
