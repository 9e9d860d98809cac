"""Issue 21 items 8 and 15: a digest's subject, body and state count the same events; logs say where alerts went.

The counts: failures = distinct task instances that failed; retries = retry events; "xN" on an alert row = its
events (failures and retries) since it began firing, as the claim's alert state holds them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import runpy
from datetime import timedelta

from airflow_secure_mail.alerts.digest import AlertDigest
from airflow_secure_mail.alerts.events import Kind
from airflow_secure_mail.alerts.state import group_id
from tests.conftest import DAGS
from tests.integration.alerts.test_digest import START, _event, _parsed, _text
from tests.integration.notifications.test_dag_run_alert import assert_subject

STORM = """
from datetime import datetime, timedelta, timezone
from airflow.sdk import DAG, task
from airflow_secure_mail import AlertDigest, SecureEmailNotifier

START = datetime(2026, 11, 28, tzinfo=timezone.utc)
digest = AlertDigest(state={state!r}, group_wait="10m", clock=lambda: START)
alert = SecureEmailNotifier(to="oncall@example.com", digest=digest)

with DAG("alert_storm_counts", start_date=datetime(2026, 1, 1), schedule=None, on_failure_callback=alert) as dag:
    @task(retries=1, retry_delay=timedelta(seconds=0), on_failure_callback=alert, on_retry_callback=alert)
    def load_partition(partition: int) -> None:
        raise ConnectionError(f"warehouse unreachable while loading partition {{partition}}")

    load_partition.expand(partition=list(range(20)))
"""


def _claims(state) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((state / "claims").rglob("*.json")) if p.name.count(".") == 1]


def test_the_alert_storm_example_counts_alike_in_subject_body_and_state(mail_env, airflow_db, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="airflow_secure_mail")
    path = DAGS / "alert_storm_counts.py"
    path.write_text(STORM.format(state=f"file://{tmp_path}/state"))
    ns = runpy.run_path(str(path))
    run = ns["dag"].test()
    assert run.state == "failed"
    assert mail_env.smtp.messages == []
    gid = group_id({"dag_id": "alert_storm_counts"})
    logged = [r.getMessage() for r in caplog.records]
    for i in range(20):
        assert (
            f"alert for alert_storm_counts.load_partition[{i}] try 2 folded into digest {gid} "
            "(next send after 2026-11-28 00:10:00 UTC, its group_wait)"
        ) in logged
    assert any(m.startswith("retry of alert_storm_counts.load_partition[7] try 1 ") and gid in m for m in logged)

    later = START + timedelta(minutes=11)
    dataclasses.replace(ns["digest"], clock=lambda: later).flush(ns["alert"])
    [received] = mail_env.smtp.messages
    assert_subject(received.data, "[Airflow] 20 failures, 20 retries in 1 DAG since 00:00 UTC (alert_storm_counts)")
    lines = _text(received).splitlines()
    expected = [
        "[Airflow] 20 failures, 20 retries in 1 DAG since 00:00 UTC (alert_storm_counts)",
        "This digest: 20 failures (task instances that failed), 20 retries (retried tries), 1 failed DAG run.",
        "",
        f"DAG run failed: alert_storm_counts / {run.run_id} at 00:00 UTC",
        "  Reason: a task failed, so the run cannot succeed",
        "  20 failed task instances:",
    ]
    assert lines[: len(expected)] == expected
    tasks = [line for line in lines if line.startswith("  - ")]
    assert tasks == [
        f"  - load_partition[{i}], try 2 of 2: ConnectionError: warehouse unreachable while loading partition {i}"
        for i in range(20)
    ]  # sorted by map index, not by when each callback ran
    [claim] = _claims(tmp_path / "state")
    states = {(a["task_id"], a["count"], a["retries"]) for a in claim["alerts"].values()}
    assert states == {("load_partition", 40, 20), ("(run)", 1, 0)}  # 20 failures + 20 retries: the same events
    assert (claim["view"]["failures"], claim["view"]["retries"], claim["view"]["failed_runs"]) == (20, 20, 1)


def test_a_run_failure_after_the_first_digest_keeps_the_counts(mail_env, notifier_for, clock, tmp_path):
    """The first digest went out while the run was still failing; the next one reports only the run's end."""
    digest = AlertDigest(state=f"file://{tmp_path}/state", group_wait="1m", group_interval="15m", clock=clock)
    notifier = notifier_for(digest)
    for i in reversed(range(20)):  # callbacks arrive in any order
        digest.record(_event(START, dag="storm", task="load_partition", run="r1", map_index=i, kind=Kind.RETRY))
    for i in reversed(range(20)):
        digest.record(_event(START, dag="storm", task="load_partition", run="r1", map_index=i, try_number=2))
    clock.now = START + timedelta(minutes=1)
    digest.flush(notifier)
    clock.now = START + timedelta(minutes=2)
    digest.record(_event(clock.now, dag="storm", task="(run)", run="r1", kind=Kind.RUN_FAILURE, error="a task failed"))
    clock.now = START + timedelta(minutes=16)
    digest.flush(notifier)
    first, second = mail_env.smtp.messages
    assert_subject(first.data, "[Airflow] 20 failures, 20 retries in 1 DAG since 00:00 UTC (storm)")
    lines = _text(first).splitlines()
    assert "This digest: 20 failures (task instances that failed), 20 retries (retried tries)." in lines
    assert "- storm.load_partition  x40 since 00:00, last 00:00, 20 retries" in lines
    assert_subject(second.data, "[Airflow] 1 failed DAG run in 1 DAG since 00:00 UTC (storm)")
    lines = _text(second).splitlines()
    assert "This digest: 1 failed DAG run." in lines
    assert "DAG run failed: storm / r1 at 00:02 UTC" in lines
    assert "  Reason: a task failed" in lines
    assert "- storm.load_partition  x40 since 00:00, last 00:00, 20 retries" in lines  # still firing, nothing new
    counts = [
        {a["task_id"]: (a["count"], a["retries"]) for a in c["alerts"].values()} for c in _claims(tmp_path / "state")
    ]
    assert counts == [{"load_partition": (40, 20)}, {"load_partition": (40, 20), "(run)": (1, 0)}]


def test_the_flush_says_how_many_events_a_silence_holds_and_how_many_wait(
    mail_env, notifier_for, clock, tmp_path, caplog
):
    from airflow_secure_mail.alerts.silences import add_silence

    digest = AlertDigest(state=f"file://{tmp_path}/state", group_wait="10m", clock=clock)
    silence = add_silence(
        digest.store(), ["dag_id=storm"], until=START + timedelta(hours=2), reason="warehouse upgrade", now=START
    )
    for i in range(20):
        digest.record(_event(START, dag="storm", task="load_partition", map_index=i, kind=Kind.RETRY))
        digest.record(_event(START, dag="storm", task="load_partition", map_index=i, try_number=2))
    clock.now = START + timedelta(minutes=5)
    digest.record(_event(clock.now, dag="billing", task="invoice"))
    caplog.set_level(logging.INFO, logger="airflow_secure_mail")
    from airflow_secure_mail import AlertDigestFlushOperator

    flush = AlertDigestFlushOperator(task_id="flush", digest=digest, notifier=notifier_for(digest))
    assert flush.execute({}) == {"message_ids": [], "pruned": 0}
    logged = [r.getMessage() for r in caplog.records]
    assert "alert digests sent: 0 (0 event(s)); held by silences: 40 event(s); waiting: 1 event(s)" in logged
    assert f"40 event(s) held by silence {silence.id} (warehouse upgrade) until 2026-11-28 02:00 UTC" in logged
    billing = group_id({"dag_id": "billing"})
    assert f"digest {billing}: 1 event(s) wait for its group_wait (next send after 2026-11-28 00:15:00 UTC)" in logged

    caplog.clear()
    clock.now = START + timedelta(minutes=16)
    [_] = digest.flush(notifier_for(digest))
    logged = [r.getMessage() for r in caplog.records]
    assert "alert digests sent: 1 (1 event(s)); held by silences: 40 event(s); waiting: 0 event(s)" in logged
    assert _parsed(mail_env.smtp.messages[0].data)["Subject"] == (
        "[Airflow] 1 failure in 1 DAG since 00:05 UTC (billing)"
    )
