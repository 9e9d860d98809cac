"""alerts/plan.py and alerts/view.py without any server: what a claimed digest reports (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow_secure_mail.alerts.claims import Claim
from airflow_secure_mail.alerts.digest import AlertDigest
from airflow_secure_mail.alerts.events import RUN, Event, Kind
from airflow_secure_mail.alerts.plan import decide
from airflow_secure_mail.alerts.silences import Matcher, Silence
from airflow_secure_mail.alerts.state import IndexEntry

START = datetime(2026, 11, 28, tzinfo=UTC)


def _event(task: str, kind: Kind = Kind.FAILURE, *, run: str = "r1", at: datetime = START) -> Event:
    run_level = kind in (Kind.RUN_FAILURE, Kind.RUN_SUCCESS)
    return Event("etl", run, RUN if run_level else task, -1, 1, kind, at, error=f"{task} broke", max_tries=1)


def _plan(digest: AlertDigest, events: list[Event], now: datetime, silences: list[Silence] = ()) -> Claim | None:
    by_id = {e.id: e for e in events}
    entries = sorted(IndexEntry.of(e) for e in events)
    return decide(digest, "g", {"dag_id": "etl"}, None, entries, list(silences), now, lambda x: by_id[x.event_id]).claim


def _failed_run_and_a_loose_failure() -> list[Event]:
    return [
        _event("extract"),
        _event("load"),
        _event("report"),
        _event("run", Kind.RUN_FAILURE, at=START + timedelta(seconds=5)),
        _event("load", run="r2"),
        _event("ping", Kind.RETRY, run="r2"),
    ]


def test_a_failed_run_folds_its_task_alerts_and_only_the_loose_alert_gets_a_row():
    claim = _plan(AlertDigest(state="file:///x"), _failed_run_and_a_loose_failure(), START + timedelta(minutes=1))
    assert claim is not None and claim.kind == "first"
    view = claim.view
    [run] = view["runs"]
    assert (run["run_id"], run["failed"]) == ("r1", 3)
    assert [t["task_id"] for t in run["tasks"]] == ["extract", "load", "report"]
    # both of load's failures (r1's, folded into its run, and r2's) are new to its alert: "x2", not "x2 (1 new)"
    assert [(r["task_id"], r["new"], r["count"]) for r in view["rows"]] == [("load", 2, 2)]
    # failures: distinct failed task instances; retries: retry events, counted even when they raise no alert
    assert (view["failures"], view["retries"], view["failed_runs"], view["firing"], view["more"]) == (4, 1, 1, 1, 0)
    assert view["other"] == {"successes": 0}
    assert view["since"] == START.isoformat()  # the row's first_seen: its alert also fired inside run r1


def test_max_items_caps_task_rows_first_and_counts_what_was_left_out():
    digest = AlertDigest(state="file:///x", max_items=2)
    view = _plan(digest, _failed_run_and_a_loose_failure(), START + timedelta(minutes=1)).view
    assert [t["task_id"] for t in view["runs"][0]["tasks"]] == ["extract", "load"]
    assert view["rows"] == []
    assert view["more"] == 2  # one task of the run and the loose alert row


def test_retries_alert_when_notify_on_retry_is_set():
    digest = AlertDigest(state="file:///x", notify_on_retry=True)
    view = _plan(digest, _failed_run_and_a_loose_failure(), START + timedelta(minutes=1)).view
    assert (view["failures"], view["retries"], view["firing"]) == (4, 1, 2)
    assert [r["task_id"] for r in view["rows"]] == ["load", "ping"]
    assert view["other"] == {"successes": 0}


def test_an_event_held_by_a_silence_that_has_ended_is_reported_with_the_silence():
    silence = Silence(
        "a1b2c3d4e5f6", (Matcher.parse("task_id=load"),), START, START + timedelta(minutes=30), "deploy", "ops"
    )
    held = _event("load", at=START + timedelta(minutes=1))
    digest = AlertDigest(state="file:///x")
    assert _plan(digest, [held], START + timedelta(minutes=20), [silence]) is None  # still silenced: no digest
    view = _plan(digest, [held], START + timedelta(minutes=40), [silence]).view
    assert view["held"] == [
        {
            "id": "a1b2c3d4e5f6",
            "matchers": ["task_id=load"],
            "reason": "deploy",
            "starts_at": START.isoformat(),
            "ends_at": (START + timedelta(minutes=30)).isoformat(),
            "created_by": "ops",
            "count": 1,
            "keys": {"etl.load": 1},
        }
    ]
    assert (view["failures"], [r["task_id"] for r in view["rows"]]) == (0, ["load"])
